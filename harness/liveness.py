"""Is the guest still alive? Told from the domain's state and the serial console, so a guest
that will never boot ends its wait within two minutes instead of at the boot timeout.

A guest is dead when its domain is no longer running (a `poweroff`, a crash), when the console
shows a kernel panic or an emergency or rescue shell, or when the console has been silent for
:data:`SILENCE_LIMIT` while SSH does not answer: a booting Debian prints a line for every unit
it starts, so that long a silence without SSH means it is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError

SILENCE_LIMIT = 100.0
TAIL_BYTES = 4096
CONSOLE_HINT = (
    "read the serial console: console.log in the evidence bundle, "
    "or `python -m harness console` for a kept VM"
)
FATAL_MARKERS = (
    "Kernel panic - not syncing",
    "end Kernel panic",
    "You are in emergency mode",
    "You are in rescue mode",
    "Entering emergency mode",
    "Give root password for maintenance",
    "Cannot open access to console, the root account is locked",
    "reboot: Power down",
    "reboot: System halted",
)


# A kernel oops on a breakpoint trap while the kernel patches its own code (static keys):
# multi-threaded TCG can run a stale translation of the temporary int3 on another vCPU. Seen
# once in 40 boots of an untouched guest on 2026-12-02 (soak), in __netif_receive_skb_core
# as networkd came up; never under KVM, where the CPU itself keeps code coherent.
EMULATOR_FAULTS = ("Oops: int3",)


class GuestDead(HarnessError):
    """The guest will not come up: waiting longer cannot help, and keeping it blocks the next run."""


class EmulatorFault(GuestDead):
    """The guest's kernel died of a known fault of software emulation, not of its own code:
    the boot may be tried again (power off, start) under TCG."""


class Watch:
    """Watches one boot: what the console printed since :meth:`__init__`, and when it last did."""

    def __init__(
        self,
        console: Path,
        domain_active: Callable[[], bool],
        *,
        silence_limit: float = SILENCE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        verdict: str = "the guest cannot boot",
    ) -> None:
        """``silence_limit`` is :data:`SILENCE_LIMIT` for a boot and ``math.inf`` for a guest
        that is up (a console is quiet then); ``verdict`` starts the message of a death."""
        self.console = console
        self.verdict = verdict
        self.domain_active = domain_active
        self.silence_limit = silence_limit
        self.clock = clock
        self.offset = self._size()
        self.last_size = self.offset
        self.last_growth = clock()
        self.longest_silence = 0.0

    def _size(self) -> int:
        try:
            return self.console.stat().st_size
        except OSError:
            return 0

    def _new_text(self) -> str:
        try:
            with self.console.open("rb") as handle:
                handle.seek(self.offset)
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def last_line(self) -> str:
        """The console's last non-empty line, this boot's or an earlier one's."""
        try:
            with self.console.open("rb") as handle:
                handle.seek(max(0, self._size() - TAIL_BYTES))
                tail = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no console)"
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1][:160] if lines else "(nothing yet)"

    def check(self) -> None:
        """Raise :class:`GuestDead` if this boot cannot succeed any more."""
        if not self.domain_active():
            raise GuestDead(
                "the guest's domain is no longer running (it powered off or crashed)",
                hint=CONSOLE_HINT,
            )
        size, now = self._size(), self.clock()
        if size != self.last_size:
            self.longest_silence = max(self.longest_silence, now - self.last_growth)
            self.last_size, self.last_growth = size, now
        text = self._new_text()
        for line in text.splitlines():
            if any(marker in line for marker in FATAL_MARKERS):
                fault = next((m for m in EMULATOR_FAULTS if m in text), None)
                raise (EmulatorFault if fault else GuestDead)(
                    f"{self.verdict}: {line.strip()[:200]}" + (f" (after {fault!r})" if fault else ""),
                    hint=CONSOLE_HINT,
                )
        silent = now - self.last_growth
        if silent >= self.silence_limit:
            raise GuestDead(
                f"the serial console has been silent for {silent:.0f}s and SSH does not answer; "
                f"its last line: {self.last_line()}",
                hint=CONSOLE_HINT,
            )
