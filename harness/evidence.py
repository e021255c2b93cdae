"""The evidence bundle, collected from the guest and the controller before teardown."""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import log, ssh
from harness.errors import HarnessError
from harness.secrets import scrub_tree

EVIDENCE_COMMAND_TIMEOUT = 90.0
# file name → command run in the guest (as root through sudo).
GUEST_COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nft-ruleset.txt", ("nft", "list", "ruleset")),
    ("systemctl-failed.txt", ("systemctl", "--failed", "--no-pager")),
    ("docker-ps.txt", ("docker", "ps", "-a")),
    ("ss-tlnp.txt", ("ss", "-tlnp")),
    ("critical-chain.txt", ("systemd-analyze", "critical-chain", "--no-pager")),
    ("journal-current-boot.txt", ("journalctl", "-b", "0", "--no-pager")),
    ("journal-previous-boot.txt", ("journalctl", "-b", "-1", "--no-pager")),
    ("cloud-init.log", ("cat", "/var/log/cloud-init.log")),
    ("cloud-init-output.log", ("cat", "/var/log/cloud-init-output.log")),
    ("boot-id.txt", ("cat", "/proc/sys/kernel/random/boot_id")),
)


def collect(endpoint: ssh.Endpoint | None, console_log: Path, bundle: Path, reason: str) -> Path:
    """Write every piece of evidence it can into ``bundle``; a piece that cannot be had says
    why in its own file rather than aborting the rest."""
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "README.txt").write_text(
        f"Why this bundle exists:\n{reason}\n\n"
        "Start with: the failing checks in ../verify.log (or ../ansible.log for an apply failure),\n"
        "then nft-ruleset.txt, docker-ps.txt, systemctl-failed.txt and console.log.\n",
        encoding="utf-8",
    )
    if console_log.is_file():
        shutil.copyfile(console_log, bundle / "console.log")
    if endpoint is not None:
        for name, command in GUEST_COMMANDS:
            target = bundle / name
            try:
                result = ssh.run(
                    endpoint, ["sudo", *command], check=False, timeout=EVIDENCE_COMMAND_TIMEOUT, quiet=True
                )
                text = result.stdout
                if result.returncode != 0:
                    text += f"\n[exit status {result.returncode}]\n{result.stderr}"
            except HarnessError as exc:
                text = f"[could not collect: {exc.message}]\n"
            target.write_text(text, encoding="utf-8")
    scrub_tree(bundle)
    log.info(f"evidence bundle: {bundle}")
    return bundle


def forward_chain_is_pure_drop(ruleset: str) -> bool:
    """True when ``table inet filter``'s forward chain has policy drop and no accept rule:
    the state of the 2026-06-17 incident."""
    chain = _chain_body(ruleset, "inet", "filter", "forward")
    if chain is None:
        return False
    return "policy drop" in chain and " accept" not in chain.replace("policy accept", "")


def _chain_body(ruleset: str, family: str, table: str, chain: str) -> str | None:
    lines = ruleset.splitlines()
    in_table = False
    body: list[str] | None = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("table "):
            in_table = stripped.rstrip(" {") == f"table {family} {table}"
            continue
        if in_table and stripped.startswith(f"chain {chain} "):
            body = []
            continue
        if body is not None:
            if stripped == "}":
                return "\n".join(body)
            body.append(stripped)
    return None
