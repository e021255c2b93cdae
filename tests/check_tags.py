"""Check that every Ansible tag in the repository belongs to the vocabulary in tests/tags.yml.

Usage: ``python tests/check_tags.py [--root DIR] [--vocabulary FILE]``. Exits 0 when every tag
is known, 1 listing each unknown tag as ``file:line``, 2 when the vocabulary cannot be read.

Tags are read where Ansible reads them: on plays, role entries, blocks, tasks and handlers
(mappings that are items of a list) and in ``apply:`` of include_role/include_tasks. A ``tags``
key nested in module arguments (a mapping value, e.g. cloud resource tags) is not an Ansible
tag and is ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the vocabulary's reader is the harness's

from harness.errors import HarnessError  # noqa: E402
from harness.narrow import vocabulary as read_vocabulary  # noqa: E402

# Where tags live, relative to the repository root; roles written later are picked up as-is.
SEARCHED = (
    "roles/*/tasks/**/*.yml",
    "roles/*/tasks/**/*.yaml",
    "roles/*/handlers/**/*.yml",
    "roles/*/handlers/**/*.yaml",
    "playbooks/**/*.yml",
    "playbooks/**/*.yaml",
)


@dataclass(frozen=True)
class Tag:
    """One tag as written, with where it was found (line is 1-based)."""

    value: str
    file: Path
    line: int


def load_vocabulary(path: Path) -> frozenset[str]:
    """The allowed tags: the keys of the ``tags`` mapping in ``path``, read as the harness's
    ``apply --tags`` reads them (harness.narrow)."""
    return frozenset(read_vocabulary(path))


def _values(node: yaml.Node, file: Path) -> Iterator[Tag]:
    """The tags of one ``tags:`` value: a list, or a comma-separated string as Ansible allows."""
    if isinstance(node, yaml.ScalarNode):
        for part in str(node.value).split(","):
            if part.strip():
                yield Tag(part.strip(), file, node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            if isinstance(item, yaml.ScalarNode):
                yield Tag(str(item.value).strip(), file, item.start_mark.line + 1)
            else:
                yield Tag(f"<not a string: {item.tag}>", file, item.start_mark.line + 1)


def _walk(node: yaml.Node, file: Path, taggable: bool) -> Iterator[Tag]:
    """Every tag under ``node``; ``taggable`` says whether ``node`` is a play/role/block/task."""
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _walk(item, file, taggable=True)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name == "tags" and taggable and not isinstance(value, yaml.MappingNode):
                yield from _values(value, file)
            else:
                yield from _walk(value, file, taggable=name == "apply")


def tags_in(file: Path) -> Iterator[Tag]:
    """Every tag in one YAML file (all documents)."""
    with file.open(encoding="utf-8") as stream:
        for document in yaml.compose_all(stream, Loader=yaml.SafeLoader):
            if document is not None:
                yield from _walk(document, file, taggable=False)


def files_under(root: Path) -> list[Path]:
    """The task, handler and playbook files of the repository at ``root``, sorted, no duplicates."""
    return sorted({path for pattern in SEARCHED for path in root.glob(pattern) if path.is_file()})


def unknown_tags(root: Path, vocabulary: frozenset[str]) -> list[Tag]:
    """Tags under ``root`` that are not in ``vocabulary`` (templated tags cannot be checked).

    A file that is not valid YAML is reported as one unknown tag at the error's line, so it
    fails the check instead of being skipped.
    """
    unknown: list[Tag] = []
    for file in files_under(root):
        try:
            unknown += [tag for tag in tags_in(file) if tag.value not in vocabulary]
        except yaml.MarkedYAMLError as error:
            line = error.problem_mark.line + 1 if error.problem_mark else 0
            unknown.append(Tag(f"<invalid YAML: {error.problem}>", file, line))
    return unknown


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: %(default)s)")
    parser.add_argument("--vocabulary", type=Path, help="tag vocabulary (default: ROOT/tests/tags.yml)")
    args = parser.parse_args(argv)
    root: Path = args.root
    vocabulary_file: Path = args.vocabulary or root / "tests" / "tags.yml"

    try:
        known = load_vocabulary(vocabulary_file)
    except HarnessError as error:
        print(f"check_tags: {error.message}", file=sys.stderr)
        return 2

    unknown = unknown_tags(root, known)
    for tag in unknown:
        shown = tag.file.relative_to(root) if tag.file.is_relative_to(root) else tag.file
        print(f"{shown}:{tag.line}: tag {tag.value!r} is not in {vocabulary_file.name}", file=sys.stderr)
    if unknown:
        print(
            f"check_tags: {len(unknown)} unknown tag(s); add them to {vocabulary_file} "
            "with a one-line meaning, or use an existing tag",
            file=sys.stderr,
        )
        return 1
    print(f"check_tags: {len(files_under(root))} files, every tag is in {vocabulary_file.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
