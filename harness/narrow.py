"""A narrowed apply: ``apply --tags`` runs only the tasks with those tags (Molecule's
``converge -- --tags``), for the inner loop on one role.

The tags are the repository's vocabulary (``tests/tags.yml``, which ``tests/check_tags.py``
holds every play, role and task to): Ansible runs nothing, and says nothing, for a tag no task
carries, so a misspelt tag is refused here instead of passing as an apply that did nothing.

A narrowed apply proves less than a full one: a change that breaks another role's tasks is not
seen until the profile is applied whole, as every ``cycle`` does. The step logs that it was
narrowed and records its tags in the run's ``steps.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from harness import paths
from harness.config import PlaybookStep
from harness.errors import BadInput, HarnessError

VOCABULARY = paths.REPO / "tests" / "tags.yml"
# Ansible's own: selecting them is not narrowing anything.
SPECIAL = frozenset({"always", "never", "all", "tagged", "untagged"})


def vocabulary(path: Path = VOCABULARY) -> dict[str, str]:
    """Every tag the repository uses, with what selecting it runs."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HarnessError(f"the tag vocabulary {path} cannot be read: {exc}") from exc
    tags = data.get("tags") if isinstance(data, dict) else None
    if not isinstance(tags, dict):
        raise HarnessError(f"the tag vocabulary {path} has no 'tags' mapping of tag: meaning")
    return {str(name): str(text) for name, text in tags.items()}


def requested(values: Sequence[str], known: dict[str, str]) -> tuple[str, ...]:
    """The tags of ``--tags`` (repeatable, each comma-separated), checked; in the order given."""
    tags: list[str] = []
    for value in values:
        for tag in (part.strip() for part in value.split(",")):
            if not tag:
                raise BadInput(f"--tags {value!r} names an empty tag")
            if tag in SPECIAL:
                raise BadInput(f"--tags {tag}: Ansible's special tag narrows nothing; name a role's tag")
            if tag not in known:
                choices = ", ".join(sorted(set(known) - SPECIAL))
                raise BadInput(f"unknown tag {tag!r}; the repository's tags (tests/tags.yml): {choices}")
            if tag not in tags:
                tags.append(tag)
    return tuple(tags)


def narrowed(steps: Sequence[PlaybookStep], tags: tuple[str, ...]) -> tuple[PlaybookStep, ...]:
    """The profile's steps with ``tags`` selected; unchanged when no tag is asked for.

    A step that already selects tags of its own is refused: ``ansible-playbook`` takes one
    ``--tags``, a union, so asking for more tags there would widen the step, not narrow it."""
    if not tags:
        return tuple(steps)
    own = [step for step in steps if step.tags]
    if own:
        named = ", ".join(f"{step.playbook} (--tags {','.join(step.tags)})" for step in own)
        raise BadInput(
            f"--tags cannot narrow a step that selects tags of its own: {named}",
            hint="apply without --tags, or change the profile's steps",
        )
    return tuple(PlaybookStep(step.playbook, tags) for step in steps)


def note(tags: tuple[str, ...]) -> str:
    """What a narrowed apply says of itself."""
    return (
        f"narrowed apply: only the tasks tagged {','.join(tags)} (and those tagged always) ran; "
        "the profile's whole apply is what a cycle proves"
    )
