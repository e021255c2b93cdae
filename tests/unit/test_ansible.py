"""The exact ansible-playbook command of one step: the rendered inventory, the VM only, overlays
in order with the connection file last."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

from harness import ansible, paths, proc
from harness.config import PlaybookStep
from harness.inventory import RenderedInventory

VM = "boma-it-askari-0badf00d"


@pytest.fixture
def rendered(tmp_path: Path) -> RenderedInventory:
    root = tmp_path / "run" / "inventory"
    return RenderedInventory(path=root, host=VM, connection_vars=root / "connection.yml")


def extra_files(tmp_path: Path) -> list[Path]:
    return [paths.OVERRIDES_DIR / "askari.yml", paths.CERTS_DIR / "internal.yml",
            tmp_path / "mine.yml", tmp_path / "run" / "harness-vars.yml"]


def option_values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == option]


def test_limit_and_inventory_name_only_the_vm(rendered: RenderedInventory, tmp_path: Path) -> None:
    argv = ansible.playbook_argv(rendered, PlaybookStep("site.yml"), extra_files(tmp_path))
    assert argv[0] == "ansible-playbook"
    assert option_values(argv, "--limit") == [VM]
    assert option_values(argv, "-i") == [str(rendered.path / "hosts.yml")]
    assert argv[-1] == str(paths.PLAYBOOKS_DIR / "site.yml")


def test_extra_vars_in_order_with_the_connection_file_last(
    rendered: RenderedInventory, tmp_path: Path
) -> None:
    files = extra_files(tmp_path)
    argv = ansible.playbook_argv(rendered, PlaybookStep("site.yml"), files)
    assert option_values(argv, "-e") == [f"@{f}" for f in files] + [f"@{rendered.connection_vars}"]
    assert argv.count("-e") == len(files) + 1


def test_connection_file_is_passed_even_without_overlays(rendered: RenderedInventory) -> None:
    argv = ansible.playbook_argv(rendered, PlaybookStep("offsite.yml"), [])
    assert option_values(argv, "-e") == [f"@{rendered.connection_vars}"]


def test_tags_only_when_the_step_has_them(rendered: RenderedInventory) -> None:
    untagged = ansible.playbook_argv(rendered, PlaybookStep("site.yml"), [])
    assert "--tags" not in untagged
    tagged = ansible.playbook_argv(rendered, PlaybookStep("site.yml", ("base", "docker")), [])
    assert option_values(tagged, "--tags") == ["base,docker"]


def test_the_production_inventory_is_never_named(rendered: RenderedInventory, tmp_path: Path) -> None:
    argv = ansible.playbook_argv(rendered, PlaybookStep("site.yml", ("base",)), extra_files(tmp_path))
    joined = " ".join(argv)
    assert str(paths.PRODUCTION_INVENTORY) not in joined
    assert "inventories/production" not in joined
    assert "inventories" not in joined


def test_ansible_cfg_names_no_inventory() -> None:
    """ANSIBLE_CONFIG points at the repo's ansible.cfg; a default inventory there would put
    production hosts in reach of any command that forgot ``-i``."""
    cfg_path = Path(ansible.ANSIBLE_ENV["ANSIBLE_CONFIG"])
    assert cfg_path == paths.REPO / "ansible.cfg"
    cfg = configparser.ConfigParser()
    cfg.read(cfg_path, encoding="utf-8")
    assert not cfg.has_option("defaults", "inventory")
    assert not cfg.has_option("defaults", "hostfile")


def test_run_step_streams_that_command_with_the_ansible_env(
    rendered: RenderedInventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_stream(argv: list[str], **kwargs: object) -> int:
        seen.update(kwargs, argv=argv)
        return 2

    monkeypatch.setattr(ansible.proc, "stream", fake_stream)
    log = tmp_path / "ansible.log"
    step = PlaybookStep("site.yml")
    facts = tmp_path / "facts"
    tasks = tmp_path / "ansible-tasks.jsonl"
    assert ansible.run_step(rendered, step, [], logfile=log, fact_cache=facts, task_sink=tasks) == 2
    assert seen["argv"] == ansible.playbook_argv(rendered, step, [])
    assert seen["logfile"] == log
    env = seen["env"]
    assert isinstance(env, dict)
    assert ansible.ANSIBLE_ENV.items() <= env.items()
    # facts are cached per apply, in the run's own directory
    assert env["ANSIBLE_GATHERING"] == "smart"
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(facts)
    assert env["BOMA_TASK_TIMES"] == str(tasks)
    assert seen["cwd"] == paths.REPO


PLAYBOOK = """\
- name: Timed play
  hosts: all
  gather_facts: false
  tasks:
    - name: Quick task
      ansible.builtin.command: "true"
      changed_when: false
    - name: Slow task
      ansible.builtin.command: sleep 1.5
      changed_when: true
      notify: A handler
  handlers:
    - name: A handler
      ansible.builtin.debug:
        msg: handled
"""


def test_the_timing_callback_records_every_task_with_its_wall_time(tmp_path: Path) -> None:
    playbook = tmp_path / "timed.yml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    sink = tmp_path / "tasks.jsonl"
    argv = ["ansible-playbook", "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]
    result = proc.run(argv, env={**ansible.ANSIBLE_ENV, **ansible.timing_env(sink)}, cwd=paths.REPO,
                      quiet=True)
    assert result.returncode == 0
    times = ansible.task_times(sink)
    assert times[0].task == "Slow task", times  # slowest first
    assert {t.task for t in times} == {"Quick task", "Slow task", "A handler"}
    assert all(t.play == "Timed play" for t in times)
    slow = times[0].seconds
    assert 1.5 <= slow < 30, slow


def test_no_recorded_tasks_is_an_empty_list(tmp_path: Path) -> None:
    assert ansible.task_times(tmp_path / "absent.jsonl") == []
