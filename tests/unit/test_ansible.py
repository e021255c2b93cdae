"""The exact ansible-playbook command of one step: the rendered inventory, the VM only, overlays
in order with the connection file last."""

from __future__ import annotations

import configparser
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ansible, paths, proc, transient
from harness.config import PlaybookStep
from harness.errors import ExitCode, HarnessError
from harness.inventory import RenderedInventory
from harness.liveness import EmulatorFault, GuestDead, Watch
from harness.transient import Kind

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


# -- judging a step: a failed task, an unreachable host, or Ansible unable to run ------------

RECORDED = Path(__file__).parent / "data" / "transients" / "ansible"


@pytest.fixture
def step_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "logfile": tmp_path / "ansible.log",
        "fact_cache": tmp_path / "facts",
        "task_sink": tmp_path / "t.jsonl",
    }


@pytest.fixture(autouse=True)
def no_retries_yet() -> Iterator[None]:
    transient.reset_retries()
    yield
    transient.reset_retries()


def replay(monkeypatch: pytest.MonkeyPatch, *cases: str) -> list[str]:
    """Make each ansible-playbook run append the recorded output of ``cases`` in turn."""
    ran: list[str] = []

    def fake_stream(_argv: list[str], *, logfile: Path, **_kwargs: object) -> int:
        case = cases[min(len(ran), len(cases) - 1)]
        ran.append(case)
        with logfile.open("a", encoding="utf-8") as sink:
            sink.write((RECORDED / f"{case}.log").read_text(encoding="utf-8"))
        return int((RECORDED / f"{case}.exit").read_text())

    monkeypatch.setattr(ansible.proc, "stream", fake_stream)
    monkeypatch.setattr(ansible, "ANSIBLE_RETRY_INTERVAL", 0.0)
    return ran


def test_an_unreachable_host_is_retried(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = replay(monkeypatch, "unreachable-connect-refused", "unreachable-mid-play", "ok")
    ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)
    assert ran == ["unreachable-connect-refused", "unreachable-mid-play", "ok"]
    assert [r.kind for r in transient.recorded_retries()] == [Kind.UNREACHABLE, Kind.UNREACHABLE]
    assert transient.recorded_retries()[0].what == "playbook site.yml"


def test_an_unreachable_host_gives_up_at_the_bound(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = replay(monkeypatch, "unreachable-connect-refused")
    with pytest.raises(transient.TransientPersisted) as caught:
        ansible.run_step_checked(rendered, PlaybookStep("site.yml", ("base",)), [], **step_files)
    assert len(ran) == ansible.ANSIBLE_RETRIES + 1
    assert caught.value.exit_code == ExitCode.HARNESS_BROKE
    assert (
        "playbook site.yml --tags base: could not connect to the guest, 3 times in a row"
        in caught.value.message
    )
    assert "ssh: connect to host 127.0.0.1 port 40022: Connection refused" in caught.value.message


def test_a_failed_task_is_the_roles_fault_and_is_not_retried(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = replay(monkeypatch, "task-failed")
    with pytest.raises(ansible.ApplyFailed) as caught:
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)
    assert ran == ["task-failed"]
    assert caught.value.exit_code == ExitCode.SUT_FAILED
    assert caught.value.label == "FAILED (playbook apply)"
    assert "task [Validate the container forward rules]: non-zero return code" in caught.value.message
    assert "(exit status 2)" in caught.value.message
    assert transient.retry_count() == 0


def test_a_task_failed_on_the_apt_lock_says_so(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    replay(monkeypatch, "task-failed-apt-lock")
    with pytest.raises(ansible.ApplyFailed, match="held the apt/dpkg lock"):
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("parse-error-module", "exit status 4, a parse error): [ERROR]: couldn't resolve module/action"),
        ("parse-error-yaml", "Origin: /work/main/playbooks/yaml.yml:8:8"),
        ("bad-config-value", "exit status 5, a bad or incomplete option"),
        ("unexpected-exception", "exit status 250, an unexpected exception in Ansible"),
        ("usage-error", "unrecognized arguments: --tagz"),
        ("missing-overlay", "Could not find or access '/var/lib/boma/runs/0badf00d/absent.yml'"),
    ],
)
def test_ansible_unable_to_run_is_a_harness_error(
    case: str,
    says: str,
    rendered: RenderedInventory,
    step_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = replay(monkeypatch, case)
    with pytest.raises(HarnessError) as caught:
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)
    assert not isinstance(caught.value, ansible.ApplyFailed)
    assert caught.value.exit_code == ExitCode.HARNESS_BROKE
    assert says in caught.value.message
    assert ran == [case]


def test_a_refused_key_is_not_retried(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = replay(monkeypatch, "unreachable-permission-denied")
    with pytest.raises(HarnessError, match=r"could not log in .*Permission denied \(publickey"):
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)
    assert ran == ["unreachable-permission-denied"]


def test_only_this_run_s_output_is_judged(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An earlier step's UNREACHABLE in the same log must not make this parse error a transient.
    step_files["logfile"].write_text((RECORDED / "unreachable-mid-play.log").read_text(encoding="utf-8"))
    ran = replay(monkeypatch, "parse-error-module")
    with pytest.raises(HarnessError, match="a parse error"):
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)
    assert ran == ["parse-error-module"]
    assert transient.retry_count() == 0


def test_a_step_that_applies_returns(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    replay(monkeypatch, "ok")
    ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], **step_files)
    assert transient.retry_count() == 0

def a_console(tmp_path: Path) -> Path:
    console = tmp_path / "console.log"
    console.write_text("[    3.1] systemd[1]: Started ssh.service\n", encoding="utf-8")
    return console


def test_an_unreachable_host_whose_kernel_panicked_is_a_dead_guest_at_once(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A panic printed while the step ran (shape of the 2026-12-02 e2e's: nf_conntrack, after
    # base loaded the ruleset under multi-threaded TCG) ends the step without a retry.
    console = a_console(tmp_path)
    verdict = "the guest died during playbook site.yml"
    watch = Watch(console, lambda: True, silence_limit=math.inf, verdict=verdict)
    with console.open("a", encoding="utf-8") as handle:
        handle.write(
            "[  106.6] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n"
            "[  106.7] Kernel panic - not syncing: Fatal exception in interrupt\n"
        )
    ran = replay(monkeypatch, "unreachable-mid-play", "ok")
    with pytest.raises(EmulatorFault, match=r"^the guest died during playbook site.yml: .*Kernel panic"):
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], alive=watch.check, **step_files)
    assert ran == ["unreachable-mid-play"]
    assert transient.recorded_retries() == ()


def test_an_unreachable_host_whose_domain_stopped_is_a_dead_guest(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    watch = Watch(a_console(tmp_path), lambda: False, silence_limit=math.inf)
    replay(monkeypatch, "unreachable-connect-refused")
    with pytest.raises(GuestDead, match="no longer running"):
        ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], alive=watch.check, **step_files)


def test_an_unreachable_host_with_a_live_quiet_guest_is_still_retried(
    rendered: RenderedInventory, step_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An up guest's console is quiet for minutes: that is no death (no silence limit here).
    clock = iter(range(0, 10_000, 500))
    watch = Watch(a_console(tmp_path), lambda: True, silence_limit=math.inf, clock=lambda: float(next(clock)))
    ran = replay(monkeypatch, "unreachable-connect-refused", "ok")
    ansible.run_step_checked(rendered, PlaybookStep("site.yml"), [], alive=watch.check, **step_files)
    assert ran == ["unreachable-connect-refused", "ok"]


def test_steps_run_one_process_each_unless_the_lever_batches_them() -> None:
    steps = [PlaybookStep("site.yml"), PlaybookStep("offsite.yml"), PlaybookStep("extra.yml", ("base",))]
    assert ansible.batches(steps, one_process=False) == [
        ansible.Batch(("site.yml",)),
        ansible.Batch(("offsite.yml",)),
        ansible.Batch(("extra.yml",), ("base",)),
    ]
    # One command line carries one --tags: only consecutive steps with equal tags share a process.
    assert ansible.batches(steps, one_process=True) == [
        ansible.Batch(("site.yml", "offsite.yml")),
        ansible.Batch(("extra.yml",), ("base",)),
    ]


def test_a_batch_is_one_command_with_its_playbooks_in_order(rendered: RenderedInventory) -> None:
    batch = ansible.Batch(("site.yml", "offsite.yml"), ("docker",))
    argv = ansible.playbook_argv(rendered, batch, [])
    assert argv[-2:] == [str(paths.PLAYBOOKS_DIR / "site.yml"), str(paths.PLAYBOOKS_DIR / "offsite.yml")]
    assert option_values(argv, "--tags") == ["docker"]
    assert batch.name == "site.yml + offsite.yml --tags docker"
    assert ansible.playbook_argv(rendered, PlaybookStep("site.yml"), []) == ansible.playbook_argv(
        rendered, ansible.Batch(("site.yml",)), []
    )
