"""``apply --tags``: a narrowed apply (harness.narrow), refused for a tag nobody uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import ansible, narrow, paths, proc
from harness.config import PlaybookStep
from harness.errors import BadInput, HarnessError
from harness.summary import record_step

ASKARI_STEPS = (PlaybookStep("site.yml"), PlaybookStep("offsite.yml"))


def test_the_vocabulary_is_the_repositorys_tag_list() -> None:
    known = narrow.vocabulary()
    assert {"base", "docker", "reverse_proxy", "caddy", "firewall"} <= set(known)
    assert all(text.strip() for text in known.values())


@pytest.mark.parametrize("text", ["tags: [1, 2]\n", "{not yaml", "other: {}\n"])
def test_an_unreadable_vocabulary_is_the_harness_broken(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tags.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HarnessError, match="tag vocabulary"):
        narrow.vocabulary(path)


def test_tags_are_split_on_commas_repeatable_and_kept_once_in_order() -> None:
    known = narrow.vocabulary()
    assert narrow.requested(["caddy,docker", "caddy", " base "], known) == ("caddy", "docker", "base")
    assert narrow.requested([], known) == ()


def test_a_misspelt_tag_is_refused_with_the_tags_there_are() -> None:
    with pytest.raises(BadInput) as refused:
        narrow.requested(["cady"], narrow.vocabulary())
    assert "unknown tag 'cady'" in refused.value.message
    assert "caddy" in refused.value.message and "always" not in refused.value.message


@pytest.mark.parametrize("value", ["always", "all", "caddy,"])
def test_a_tag_that_narrows_nothing_is_refused(value: str) -> None:
    with pytest.raises(BadInput):
        narrow.requested([value], narrow.vocabulary())


def test_no_tags_leave_the_steps_as_they_are() -> None:
    assert narrow.narrowed(ASKARI_STEPS, ()) == ASKARI_STEPS


def test_tags_select_in_every_step_and_stay_one_process() -> None:
    steps = narrow.narrowed(ASKARI_STEPS, ("caddy",))
    assert [s.tags for s in steps] == [("caddy",), ("caddy",)]
    [batch] = ansible.batches(steps, one_process=True)
    assert batch.playbooks == ("site.yml", "offsite.yml") and batch.tags == ("caddy",)


def test_a_step_with_tags_of_its_own_cannot_be_narrowed() -> None:
    steps = (PlaybookStep("site.yml"), PlaybookStep("workstation.yml", ("libvirt",)))
    with pytest.raises(BadInput, match=r"workstation\.yml \(--tags libvirt\)"):
        narrow.narrowed(steps, ("caddy",))


def test_a_narrowed_step_is_recorded_with_its_tags(tmp_path: Path) -> None:
    record_step(tmp_path, "apply", 21.04, "pass", tags=("caddy",))
    record_step(tmp_path, "apply", 40.0, "pass")
    narrowed, whole = (json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines())
    assert narrowed["tags"] == ["caddy"]
    assert "tags" not in whole


def test_caddy_selects_the_proxy_and_none_of_base_on_the_real_playbooks() -> None:
    """What Ansible itself lists for askari's narrowed apply: the reverse proxy's tasks, the
    always-tagged record of docker_host, and nothing of base or of Docker's installation."""
    listed = proc.run(
        [
            "ansible-playbook",
            "-i",
            str(paths.PRODUCTION_INVENTORY),
            "--limit",
            "askari",
            "--list-tasks",
            "--tags",
            "caddy",
            *(str(paths.PLAYBOOKS_DIR / step.playbook) for step in ASKARI_STEPS),
        ],
        env={"ANSIBLE_CONFIG": str(paths.REPO / "ansible.cfg")},
        quiet=True,
    ).stdout
    tasks = [line.strip().split("\t")[0] for line in listed.splitlines() if " : " in line]
    assert "reverse_proxy : Write the Caddyfile" in tasks
    assert not [t for t in tasks if t.startswith("base :")]
    assert [t for t in tasks if t.startswith("docker_host :")] == [
        "docker_host : Record that docker_host ran in this ansible-playbook run"
    ] * 2
