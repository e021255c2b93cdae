"""Every repository path the README and docs/ name exists: a renamed file breaks this, not a reader.

A path is named in inline code (`` `harness/cycle.py` ``, also as one word of a command in
backticks) when it starts with one of the repository's top-level directories or is one of its
top-level files, and in a Markdown link to a relative file (``[x](../platform.md)``, resolved
from the document's own directory). Placeholders (``<host>``, ``*``, ``…``, ``{x}``) and what
only exists at run time (``artifacts/…``, ``/var/…``) are not paths of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP_DIRS = (
    "harness/",
    "profiles/",
    "certs/",
    "tests/",
    "roles/",
    "playbooks/",
    "inventories/",
    "docs/",
    ".github/",
    "scripts/",
)
TOP_FILES = (
    "noxfile.py",
    "Makefile",
    "README.md",
    "pyproject.toml",
    "ansible.cfg",
    "requirements.txt",
    "requirements-dev.txt",
)
PLACEHOLDER = ("<", ">", "*", "…", "{", "}", "$", "%")
FENCE = re.compile(r"^([ \t]*)(```|~~~).*?^\1\2[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?P<code>.+?)\1", re.S)
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A location inside a file (``x.py:42``, ``x.py::test_name``) names the file.
LOCATION = re.compile(r"(?::\d+(?:-\d+)?|::[\w\[\]-]+)$")


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def _candidate(word: str) -> str | None:
    """The repository path ``word`` names, or ``None`` if it names none."""
    word = word.strip("'\"()[],;")
    word = word.rsplit("=", 1)[-1].lstrip("@")  # --junitxml=PATH, -e @PATH
    word = LOCATION.sub("", word.rstrip(".,;:"))
    if not word or any(mark in word for mark in PLACEHOLDER):
        return None
    if word in TOP_FILES or word.startswith(TOP_DIRS):
        return word
    return None


def code_paths(text: str) -> list[str]:
    """The repository paths named in the inline code of ``text`` (fenced blocks are commands and
    file contents, read by other tests)."""
    prose = FENCE.sub("", text)
    found = []
    for span in INLINE_CODE.finditer(prose):
        for word in span["code"].split():
            if (path := _candidate(word)) is not None:
                found.append(path)
    return found


def link_targets(text: str) -> list[str]:
    """Relative file targets of the Markdown links in ``text`` (no scheme, no bare anchor)."""
    prose = FENCE.sub("", text)
    targets = []
    for link in LINK.finditer(prose):
        target = link["target"].split("#", 1)[0]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            continue
        if any(mark in target for mark in PLACEHOLDER):
            continue
        targets.append(target)
    return targets


def ignored_on_purpose() -> set[str]:
    """Paths ``.gitignore`` names one by one: never committed by design (the real vault)."""
    lines = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    named = {line.strip().strip("/") for line in lines if not line.startswith("#")}
    return {path for path in named if "/" in path and not any(mark in path for mark in PLACEHOLDER)}


def missing_paths(document: Path) -> list[str]:
    text = document.read_text(encoding="utf-8")
    name = document.relative_to(REPO).as_posix()
    absent = ignored_on_purpose()
    missing = [f"{name}: `{p}`" for p in code_paths(text) if p not in absent and not (REPO / p).exists()]
    missing += [f"{name}: link ({t})" for t in link_targets(text) if not (document.parent / t).exists()]
    return missing


def test_every_path_the_docs_name_exists() -> None:
    missing = [line for document in documents() for line in missing_paths(document)]
    assert missing == [], "paths named in the docs that the repository does not have:\n" + "\n".join(missing)


def test_no_doc_points_outside_the_repository() -> None:
    outside = ("FACTS.md", "DEVELOPERS.md", "../shared")
    hits = [
        f"{document.relative_to(REPO).as_posix()}: {needle}"
        for document in documents()
        for needle in outside
        if needle in document.read_text(encoding="utf-8")
    ]
    assert hits == []


def test_the_heuristics_find_paths_and_skip_placeholders() -> None:
    text = (
        "See `harness/cycle.py:42`, `tests/unit/test_poll.py::test_x`, `noxfile.py` and\n"
        "`.venv/bin/python tests/soak/soak.py --boots 20`; `-e @tests/integration/overrides/a.yml`.\n"
        "Not `profiles/<host>.yml`, `artifacts/x/summary.json`, `roles/*/tasks`, `harness.cycle`,\n"
        "`/var/cache/boma`, `docs/bench/{date}.md`.\n"
        "```sh\ncat harness/not-read-in-a-fence.py\n```\n"
        "[a](../platform.md) [b](https://example.org/x.md) [c](#anchor) [d](<x>.md)\n"
    )
    assert code_paths(text) == [
        "harness/cycle.py",
        "tests/unit/test_poll.py",
        "noxfile.py",
        "tests/soak/soak.py",
        "tests/integration/overrides/a.yml",
    ]
    assert link_targets(text) == ["../platform.md"]
