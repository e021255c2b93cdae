"""The speed levers of a run, and what each one trades (issue #10, docs/bench/README.md).

Under TCG a cycle's seconds go to three places: dpkg unpacking packages, one guest Python per
Ansible module, and the boot path. Each lever here takes seconds off one of them. The
levers that change *what is tested* are named in the run's summary with the risk they take
(:func:`notes`), and the test command keeps a path without each of them: its e2e's RED half
boots the plain image (no package layer) and applies with Ansible's own connection, one
``ansible-playbook`` per playbook, as a fresh real host gets it; its GREEN half applies the
fix to that machine under Mitogen in one process (:func:`for_apply`), as the warm loop does.

Three presets, chosen with ``--speed`` on ``cycle`` and ``up``:

- ``baseline``: the configuration the bench compares against: the plain golden image, Ansible's
  own connection (with its ``-C``), the disk's default cache, cloud-init at every boot.
- ``default``: what a plain ``cycle`` does: the levers that change nothing the roles can see.
- ``fast``: ``default`` plus Mitogen, which runs Ansible's modules differently, and the
  playbooks in one process (both named, below).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from harness.errors import BadInput
from harness.statediff import Expected


@dataclass(frozen=True)
class Levers:
    # The profile's package layer in its golden image (harness.packagelayer).
    package_layer: bool = True
    # Ansible's default ssh_args carry -C: compression costs the guest's CPU and saves nothing
    # on loopback.
    ssh_compression: bool = False
    # cache=unsafe on the throwaway overlay: the guest's flushes (dpkg makes thousands) return
    # at once. Only a crash of the controller itself could lose data, and the overlay is
    # thrown away then anyway.
    disk_cache_unsafe: bool = True
    # cloud-init runs at the first boot only (its seed is per instance); later boots start
    # without its four stages, as a host installed without cloud-init does.
    cloud_init_once: bool = True
    # Mitogen's strategy: one Python per host for the whole play instead of one per task.
    mitogen: bool = False
    # The profile's consecutive steps with the same tags in one ansible-playbook process: one
    # connection (and, under Mitogen, one guest interpreter) for all of them, not one per step.
    one_process: bool = False

    def as_json(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Levers:
        """Levers recorded in a run's state; a run recorded before levers existed had the baseline's."""
        if not data:
            return BASELINE
        known = {f.name for f in fields(cls)}
        return cls(**{k: bool(v) for k, v in data.items() if k in known})


BASELINE = Levers(
    package_layer=False,
    ssh_compression=True,
    disk_cache_unsafe=False,
    cloud_init_once=False,
    mitogen=False,
    one_process=False,
)
DEFAULT = Levers()
FAST = replace(DEFAULT, mitogen=True, one_process=True)
PRESETS: dict[str, Levers] = {"baseline": BASELINE, "default": DEFAULT, "fast": FAST}

# What a lever risks: a run that used it says so in its summary. Levers without an entry change
# nothing a role or a check can observe.
RISKS: dict[str, str] = {
    "package_layer": (
        "the profile's heaviest packages were in the image before the roles ran (a role that "
        "forgot one still fails the schema's check, not here)"
    ),
    "cloud_init_once": (
        "cloud-init ran at the first boot only; a role that relied on it at later boots would "
        "pass here only if the real host also runs it"
    ),
    "mitogen": (
        "Ansible's modules ran under Mitogen (one interpreter per host), not as Ansible runs them "
        "on the real hosts; the test command keeps a run without it"
    ),
    "one_process": (
        "the profile's playbooks ran in one ansible-playbook process: a variable one of them sets "
        "(set_fact, register) was still set in the next, which it is not when they run one by one"
    ),
}

# What a lever changes across the reboot by design, so that the state diff expects it rather
# than failing the cycle: with cloud-init off after the first boot, its targets, stages and
# hotplug socket are not there after the reboot.
REBOOT_CHANGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cloud_init_once": (
        "the harness turned cloud-init off after the first boot",
        ("units/cloud-init*", "units/cloud-config*", "units/cloud-final*"),
    ),
}


def reboot_changes(levers: Levers) -> tuple[Expected, ...]:
    """The state diff's rules for what ``levers`` change across the reboot."""
    return tuple(
        Expected(pattern, f"speed lever {name}: {reason}")
        for name, (reason, patterns) in REBOOT_CHANGES.items()
        if getattr(levers, name)
        for pattern in patterns
    )


# The levers one apply may choose (how Ansible runs its modules and its playbooks); the others
# are fixed when the machine is made: its image, its disk, its boots, and the compression its
# rendered inventory names for Mitogen's connection.
APPLY_LEVERS = ("mitogen", "one_process")


def for_apply(booted: Levers, wanted: Levers) -> Levers:
    """The machine's levers with ``wanted``'s apply levers: one apply may reach the guest
    another way than the machine's preset (the e2e's GREEN half runs under Mitogen on a
    machine booted like a fresh host), but what was fixed at boot stays what it was."""
    return replace(booted, **{name: getattr(wanted, name) for name in APPLY_LEVERS})


def preset(name: str) -> Levers:
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInput(f"unknown speed preset {name!r}", hint=f"one of: {', '.join(PRESETS)}") from None


def name_of(levers: Levers) -> str:
    """The preset ``levers`` is, or ``custom``."""
    return next((name for name, value in PRESETS.items() if value == levers), "custom")


def notes(levers: Levers) -> list[str]:
    """One line for the summary naming the preset and the levers on, then each fidelity risk."""
    on = [f.name for f in fields(levers) if getattr(levers, f.name) and f.name != "ssh_compression"]
    if not levers.ssh_compression:
        on.append("no ssh compression")
    lines = [f"speed: {name_of(levers)} ({', '.join(on) or 'no levers'})"]
    return lines + _risks(on)


def risks_added(booted: Levers, applied: Levers) -> list[str]:
    """The risk lines of the levers ``applied`` turns on that ``booted`` had off."""
    added = [f.name for f in fields(applied) if getattr(applied, f.name) and not getattr(booted, f.name)]
    return _risks(added)


def _risks(names: list[str]) -> list[str]:
    return [f"speed lever {name}: {RISKS[name]}" for name in names if name in RISKS]
