"""tests/check_tags.py: unknown tags are reported with file:line and fail the check."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

CHECK_TAGS = Path(__file__).resolve().parents[1] / "check_tags.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_tags", CHECK_TAGS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses (as patched by ansible-core) look the module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_tags = _load()

VOCABULARY = """\
---
tags:
  base: baseline
  firewall: nftables
  always: special
"""


def make_tree(root: Path, files: dict[str, str]) -> Path:
    (root / "tests").mkdir()
    (root / "tests" / "tags.yml").write_text(VOCABULARY)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run(root: Path) -> int:
    return int(check_tags.main(["--root", str(root)]))


def test_known_tags_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(
        tmp_path,
        {
            "playbooks/site.yml": """\
            ---
            - name: Play
              hosts: all
              tags: base
              roles:
                - role: base
                  tags: [base, firewall]
            """,
            "roles/base/tasks/main.yml": """\
            ---
            - name: Block
              tags: "firewall, always"
              block:
                - name: Inner
                  ansible.builtin.debug:
                  tags:
                    - base
            """,
        },
    )
    assert run(root) == 0
    assert "every tag is in tags.yml" in capsys.readouterr().out


def test_unknown_tag_is_reported_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_tree(
        tmp_path,
        {
            "roles/base/tasks/main.yml": """\
            ---
            - name: Outer
              block:
                - name: Nested task with a typo
                  ansible.builtin.debug:
                  tags: [base, firewal]
            """,
            "roles/other/handlers/main.yml": """\
            ---
            - name: Handler
              ansible.builtin.debug:
              tags: bogus
            """,
        },
    )
    assert run(root) == 1
    err = capsys.readouterr().err
    assert "roles/base/tasks/main.yml:6: tag 'firewal' is not in tags.yml" in err
    assert "roles/other/handlers/main.yml:4: tag 'bogus' is not in tags.yml" in err
    assert "'base'" not in err


def test_module_arguments_named_tags_are_not_ansible_tags(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path,
        {
            "roles/cloud/tasks/main.yml": """\
            ---
            - name: Resource with its own tags
              some.collection.resource:
                tags:
                  Name: anything
            - name: Include with applied tags
              ansible.builtin.include_role:
                name: cloud
                apply:
                  tags: [nonsense]
            """,
        },
    )
    assert run(root) == 1  # `apply: tags:` are real tags; the resource's are not


def test_invalid_yaml_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_tree(tmp_path, {"playbooks/broken.yml": "- name: [unclosed\n"})
    assert run(root) == 1
    assert "invalid YAML" in capsys.readouterr().err


def test_missing_vocabulary_is_an_environment_error(tmp_path: Path) -> None:
    assert check_tags.main(["--root", str(tmp_path)]) == 2


def test_the_repository_uses_only_known_tags() -> None:
    assert check_tags.main([]) == 0
