"""boma's integration harness: boot a throwaway Debian VM, apply the real playbooks, reboot, verify."""
