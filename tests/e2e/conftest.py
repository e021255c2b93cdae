"""End-to-end tests boot real VMs: they run only when asked for (`-m e2e`, `make e2e`)."""
