"""The CLI: a bad request exits 2 with one 'bad input' line and creates nothing; list and prune
work from libvirt's metadata; the parser refuses contradictions."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import libvirt
import pytest

from harness import cli, log, owner, paths, preflight, virt
from harness.accel import Accel
from harness.errors import ExitCode
from harness.state import MachineState, RunState, Status

TEST_URI = "test:///default"  # libvirt's in-process fake driver: nothing boots


class GotTooFar(Exception):
    """Raised if a bad request reaches preflight: it should have been refused before."""


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    made = {}
    for name in ("BOMA_RUNS_DIR", "BOMA_ARTIFACTS_DIR", "BOMA_CACHE_DIR"):
        folder = tmp_path / name.lower()
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
        made[name] = folder
    monkeypatch.delenv("BOMA_ACCEL", raising=False)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise GotTooFar("a bad request reached preflight")

    monkeypatch.setattr(preflight, "check_tools", refuse)
    return made


def bad_input(argv: list[str], dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; assert exit 2, a one-line message (plus an optional hint), nothing created."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith("bad input: ")
    assert all(line.startswith("  hint: ") for line in lines[1:]), err
    assert "Traceback" not in err
    for name, folder in dirs.items():
        assert list(folder.iterdir()) == [], f"{name} was written to"
    return lines[0]


@pytest.mark.parametrize("command", ["cycle", "up"])
def test_unknown_host(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str) -> None:
    line = bad_input([command, "--host", "nosuchhost", "--uri", TEST_URI], dirs, capsys)
    assert "unknown host profile 'nosuchhost'" in line


def test_a_cycle_names_its_run_and_its_artifacts_first(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    console = io.StringIO()
    monkeypatch.setattr(log, "_stream", console)
    assert cli.main(["cycle", "--host", "nosuchhost", "--uri", TEST_URI]) == 2
    first = console.getvalue().splitlines()[0]
    folder = re.escape(str(dirs["BOMA_ARTIFACTS_DIR"] / "nosuchhost-internal-"))
    assert re.fullmatch(rf"\[ *[\d.]+s\] run ([0-9a-f]{{8}}): artifacts {folder}\1", first), first
    assert list(dirs["BOMA_ARTIFACTS_DIR"].iterdir()) == []  # named, not made: bad input makes nothing


@pytest.mark.parametrize("command", ["cycle", "up"])
def test_unknown_tier(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str) -> None:
    line = bad_input([command, "--host", "askari", "--certs", "le-nope", "--uri", TEST_URI], dirs, capsys)
    assert "unknown cert tier 'le-nope'" in line


def test_tier_the_host_does_not_take(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "certs"
    shutil.copytree(paths.CERTS_DIR, certs)
    (certs / "lab-only.yml").write_text(
        "boma_tier:\n  description: lab\n  needs: []\nreverse_proxy__tls_internal: true\n", encoding="utf-8")
    monkeypatch.setattr(paths, "CERTS_DIR", certs)
    line = bad_input(["cycle", "--host", "askari", "--certs", "lab-only", "--uri", TEST_URI], dirs, capsys)
    assert "host 'askari' does not take cert tier 'lab-only'" in line


def test_missing_override_file(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-overlay.yml"
    line = bad_input(["cycle", "--host", "askari", "--override", str(missing), "--uri", TEST_URI],
                     dirs, capsys)
    assert f"override file {missing} not found" in line


def test_bad_accelerator_from_the_environment(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOMA_ACCEL", "hvf")
    line = bad_input(["cycle", "--host", "askari", "--uri", TEST_URI], dirs, capsys)
    assert "unknown accelerator 'hvf'" in line


def test_kernel_arguments_no_kernel_would_get(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    line = bad_input(["cycle", "--host", "askari", "--boot", "firmware", "--kernel-append", "quiet",
                      "--uri", TEST_URI], dirs, capsys)
    assert "--kernel-append needs the direct kernel boot" in line


def test_console_without_runs(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert "no kept run" in bad_input(["console"], dirs, capsys)


def test_a_good_request_does_reach_preflight(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The guard above is live: a valid request gets past validation to preflight. And an
    exception nobody foresaw is a harness error (exit 3), never "the system under test"."""
    code = cli.main(["cycle", "--host", "askari", "--certs", "internal", "--accel", "tcg", "--uri", TEST_URI])
    assert code == 3
    last = capsys.readouterr().err.strip().splitlines()
    assert last[-2] == "harness error: unexpected GotTooFar: a bad request reached preflight"


@pytest.mark.parametrize(
    "argv",
    [["cycle", "--host", "askari", "--keep", "--no-keep"],
     ["cycle", "--host", "askari", "--accel", "hvf"],
     ["cycle", "--certs", "internal"],
     ["frobnicate"]],
)
def test_parser_refuses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_keep_and_no_keep_are_mutually_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["cycle", "--host", "askari", "--keep", "--no-keep"])
    assert "not allowed with argument" in capsys.readouterr().err


# -- list and prune, against libvirt's fake driver ----------------------------------------------




def start_vm(conn: libvirt.virConnect, run_id: str) -> str:
    name = f"boma-it-askari-{run_id}"
    virt.define_and_start(conn, virt.DomainSpec(
        name=name, memory_mib=512, vcpus=1, accel=Accel.TCG, disk=Path("/nonexistent/overlay.qcow2"),
        seed=Path("/nonexistent/seed.iso"), console_log=Path("/nonexistent/console.log"), forwards=(),
        metadata=(("run", run_id), ("host", "askari"), ("tier", "internal")),
    ))
    return name


def kept_run(runs: Path, run_id: str, step: str = "verify") -> RunState:
    (runs / run_id).mkdir()
    run = RunState(run_id=run_id, label="askari", tier="internal", uri=TEST_URI, run_dir=str(runs / run_id),
                   artifacts=str(runs / "artifacts"), owner=owner.current().to_json(),
                   status=Status.KEPT, step=step, outcome="fail",
                   machines=[MachineState(name="askari", host="askari", domain=f"boma-it-askari-{run_id}",
                                          accel="tcg", boot="direct", ssh_port=40022, ports={"443": 40443},
                                          golden="", artifacts="")])
    (runs / run_id / "askari").mkdir()
    run.save()
    return run


def test_list_shows_runs_their_state_and_stray_vms(
    fake_libvirt: libvirt.virConnect, dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    start_vm(fake_libvirt, "aaaa0001")
    kept_run(dirs["BOMA_RUNS_DIR"], "aaaa0001")
    start_vm(fake_libvirt, "cccc0003")
    assert cli.main(["list", "--uri", TEST_URI]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("aaaa0001  askari/internal  kept  step=verify")
    assert out[1].split() == [
        "boma-it-askari-aaaa0001", "running", "ssh", "127.0.0.1:40022", "443→127.0.0.1:40443", "network=open"]
    assert out[2].startswith("boma-it-askari-cccc0003  running  no run state")
    assert cli.main(["list", "--json", "--uri", TEST_URI]) == 0
    listed = json.loads(capsys.readouterr().out)
    [run] = listed["runs"]
    assert (run["run"], run["state"], run["outcome"]) == ("aaaa0001", "kept", "fail")
    assert run["machines"][0]["running"] is True
    assert (run["machines"][0]["network"], run["machines"][0]["egress"]) == ("open", {})
    assert [s["domain"] for s in listed["stray_domains"]] == ["boma-it-askari-cccc0003"]


def test_list_with_nothing(
    fake_libvirt: libvirt.virConnect, dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["list", "--uri", TEST_URI]) == 0
    assert capsys.readouterr().out == "no test VMs and no runs\n"


def test_prune_removes_test_vms_runs_and_half_built_images_only(
    fake_libvirt: libvirt.virConnect, dirs: dict[str, Path]
) -> None:
    start_vm(fake_libvirt, "aaaa0001")
    kept_run(dirs["BOMA_RUNS_DIR"], "aaaa0001")
    cache = dirs["BOMA_CACHE_DIR"]
    (cache / ".tmp-golden-123").mkdir()
    (cache / "golden-abcdef").mkdir()
    assert cli.main(["prune", "--uri", TEST_URI]) == 0
    assert virt.list_runs(fake_libvirt) == []
    assert "test" in {dom.name() for dom in fake_libvirt.listAllDomains()}  # not ours: untouched
    assert list(dirs["BOMA_RUNS_DIR"].iterdir()) == []
    assert [p.name for p in cache.iterdir()] == ["golden-abcdef"]


@pytest.mark.parametrize("command", ["list", "prune"])
def test_unreachable_libvirt_is_a_harness_error(
    command: str, dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([command, "--uri", f"test://{tmp_path}/gone.xml"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("harness error: cannot connect to libvirt")
    assert "hint: " in err


@pytest.mark.parametrize(
    ("certs", "env", "expected"),
    [
        ("le-staging", {}, "needs internet access"),
        ("le-staging", {"BOMA_HAS_INTERNET": "1"}, "GANDI_BEARER_TOKEN"),
        ("le-prod-wildcard", {"BOMA_HAS_INTERNET": "1", "GANDI_BEARER_TOKEN": "x" * 12}, "on demand only"),
    ],
)
def test_a_tier_this_controller_cannot_serve_is_bad_input(
    certs: str, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("BOMA_HAS_INTERNET", "GANDI_BEARER_TOKEN", "BOMA_ON_DEMAND_TIERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["cycle", "--host", "askari", "--certs", certs]) == 2
    assert expected in capsys.readouterr().err


def test_list_shows_a_scenarios_machines_as_one_run_with_their_addresses(
    fake_libvirt: libvirt.virConnect, dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = kept_run(dirs["BOMA_RUNS_DIR"], "dddd0004")
    run.label = "offsite-peer"
    run.machines[0].lans = {"wan": "10.90.0.10/24"}
    run.machines.append(MachineState(name="peer", host="peer", domain="boma-it-peer-dddd0004", accel="tcg",
                                     boot="direct", ssh_port=40023, ports={}, golden="", artifacts="",
                                     lans={"wan": "10.90.0.20/24"}))
    run.save()
    assert cli.main(["list", "--uri", TEST_URI]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dddd0004  offsite-peer/internal  kept")
    assert out[1].split()[-1] == "wan=10.90.0.10/24" and out[2].split()[-1] == "wan=10.90.0.20/24"
    assert len(out) == 3
    assert cli.main(["list", "--json", "--uri", TEST_URI]) == 0
    [listed] = json.loads(capsys.readouterr().out)["runs"]
    assert [m["lans"] for m in listed["machines"]] == [{"wan": "10.90.0.10/24"}, {"wan": "10.90.0.20/24"}]


def test_scenario_refuses_bad_input_before_anything_is_made(
    dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scenario", "--name", "nope"]) == ExitCode.BAD_INPUT
    assert "unknown scenario 'nope'" in capsys.readouterr().err
    assert cli.main(["scenario", "--name", "offsite-peer", "--certs", "le-staging"]) == ExitCode.BAD_INPUT
    assert "does not take cert tier 'le-staging'" in capsys.readouterr().err
    runs = dirs["BOMA_RUNS_DIR"]
    assert not runs.exists() or list(runs.iterdir()) == []
