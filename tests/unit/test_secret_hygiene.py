"""The Gandi token never reaches what a run writes: a sentinel through the REAL reverse_proxy role.

One le-staging-shaped apply, without a VM: ansible-playbook runs the reverse_proxy role against
localhost (``-c local``, ``-vvv --diff``) through ``harness.proc.stream`` into ``artifacts/ansible.log``,
as ``TestVM.apply`` does. The token arrives the way a run gives it: ``GANDI_BEARER_TOKEN`` in the
environment and ``reverse_proxy__gandi_token`` in a 0600 ``secrets.yml``, after
``-e @certs/le-staging.yml``. Every path the role writes points into a tmp "guest" tree, and a
fake ``docker`` first on PATH records its argv and answers like the real CLI.

Then, as a failed run would: a check suite writes JUnit and verify.log, the evidence bundle takes
a console log in which the guest echoed the token, ``scrub_tree`` and ``Summary.write`` run in
``run_cycle``'s order. Asserted:

- the role reached the token's tasks: the guest's env file is 0600 and holds the token, the
  container was re-created with ``--env-file``;
- no_log holds by itself: ansible.log and the console (what Nox prints) never held the token,
  before any scrubbing, and each task near the token ran censored;
- the token is never on a docker command line (visible in ``ps`` and ``docker inspect``);
- after the scrub, no byte of any file under the artifacts directory holds it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from harness import ansible, evidence, log, paths, proc
from harness.secrets import REDACTED, scrub_tree
from harness.summary import Summary

SENTINEL = "boma-sentinel-token-5f3c9a1e"
STALE_HASH = "0" * 64  # the label of the "existing" container: never the role's hash
CONTAINER_ID = "c0ffee" * 10 + "beef"
IMAGE_ID = "sha256:" + "ab" * 32
ROLE_TIMEOUT = 120.0
# The role's tasks that see the token, its file or the container's environment: each result must
# be censored at run time (tests/unit/test_templates.py checks the same list statically).
NO_LOG_TASKS = (
    "Check that the Gandi token (vault.gandi.pat) is set",
    "Write Caddy's environment file",
    "Fingerprint the files the container reads",
    "Inspect the Caddy container",
    "Start a Caddy container with the current configuration",
)

FAKE_DOCKER = '''\
#!{python}
"""A stand-in for the docker CLI: records its argv, answers like docker, never reads a secret."""
import json
import sys

argv = sys.argv[1:]
with open({calls!r}, "a", encoding="utf-8") as calls:
    calls.write(json.dumps(argv) + "\\n")

def say(text):
    print(text)
    sys.exit(0)

if argv[:2] == ["image", "inspect"]:
    say(json.dumps([{{"Id": {image_id!r}, "RepoTags": [argv[-1]]}}]))
if argv[:2] == ["container", "inspect"] or argv[:1] == ["inspect"]:
    if "--format" in argv:  # the role reads only the label, the state and the image
        say({stale!r} + "|true|" + {image_id!r})
    say(json.dumps([{{"Id": {container_id!r}, "Config": {{"Labels": {{"boma.config-hash": {stale!r}}}}},
                      "State": {{"Running": True}}}}]))
if argv[:2] == ["network", "inspect"]:
    say(json.dumps([{{"Name": argv[-1], "Driver": "bridge"}}]))
if argv[:2] == ["network", "create"]:
    say("f00d" * 16)
if argv[:2] == ["exec", "--interactive"] and "adapt" in argv:  # the Caddyfile's validation in it
    sys.stdin.read()
    say(json.dumps({{"apps": {{"http": {{"servers": {{}}}}}}}}))
if argv[:2] == ["container", "rm"] or argv[:2] == ["container", "start"]:
    say(argv[-1])
if argv[:1] == ["run"]:
    if "adapt" in argv:  # the Caddyfile's validation: `caddy adapt` in the image
        say(json.dumps({{"apps": {{"http": {{"servers": {{}}}}}}}}))
    say({container_id!r})
print("fake docker: unexpected command: " + " ".join(argv), file=sys.stderr)
sys.exit(125)
'''

PLAYBOOK = """\
---
# offsite.yml applies the role with become: true; the test runs as root, so no become.
- name: Apply reverse_proxy to localhost (secret hygiene test)
  hosts: localhost
  gather_facts: false
  become: false
  roles:
    - role: reverse_proxy
"""

# A careless check, as a verify suite might have: its failure message quotes the guest's file.
CHECK_SUITE = '''\
from pathlib import Path


def test_env_file_has_no_token():
    content = Path({env_file!r}).read_text(encoding="utf-8")
    assert "GANDI_BEARER_TOKEN=" not in content, content
'''


@dataclass(frozen=True)
class Run:
    status: int
    seconds: float
    artifacts: Path
    guest: Path
    config_dir: Path
    docker_calls: list[list[str]]
    ansible_log_before_scrub: bytes
    console_before_scrub: str


def _write_fake_docker(bin_dir: Path, calls: Path) -> None:
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        FAKE_DOCKER.format(
            python=sys.executable, calls=str(calls), image_id=IMAGE_ID,
            container_id=CONTAINER_ID, stale=STALE_HASH,
        ),
        encoding="utf-8",
    )
    docker.chmod(0o755)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    if os.geteuid() != 0:
        pytest.skip("the reverse_proxy role chowns its files to root: run as root (the CI container is)")
    tmp = tmp_path_factory.mktemp("secret_hygiene")
    artifacts = tmp / "artifacts" / "offsite-le-staging-20260101T000000-5f3c"
    run_dir = tmp / "run"  # the harness's per-run state dir: not an artifact
    guest = tmp / "guest"
    config_dir, data_dir = guest / "etc" / "caddy", guest / "var" / "lib" / "caddy"
    for directory in (artifacts, run_dir, guest):
        directory.mkdir(parents=True)
    calls = tmp / "docker-calls.jsonl"
    _write_fake_docker(tmp / "bin", calls)

    # As TestVM._prepare_files writes it.
    secrets_file = run_dir / "secrets.yml"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(yaml.safe_dump({"reverse_proxy__gandi_token": SENTINEL}), encoding="utf-8")
    harness_vars = run_dir / "harness-vars.yml"
    harness_vars.write_text(
        "# Set by the test: every path the role writes is in tmp.\n"
        + yaml.safe_dump(
            {
                "reverse_proxy__config_dir": str(config_dir),
                "reverse_proxy__data_dir": str(data_dir),
                "reverse_proxy__image_archive_dest": str(guest / "var" / "tmp" / "caddy-rootfs.tar"),
                "reverse_proxy__network": "boma_proxy",
                "reverse_proxy__email": "ops@example.org",
                "reverse_proxy__routes": [{"host": "cloud.example.org", "upstream": "nextcloud:80"}],
            }
        ),
        encoding="utf-8",
    )
    playbook = tmp / "playbook.yml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")

    # --diff on top of the harness's command: an operator's `--diff` run must not leak either.
    argv = ["ansible-playbook", "-vvv", "--diff", "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={sys.executable}"]
    for file in (paths.CERTS_DIR / "le-staging.yml", harness_vars, secrets_file):
        argv += ["-e", f"@{file}"]
    argv.append(str(playbook))
    ansible_home = tmp / "ansible-home"
    env = {
        **ansible.ANSIBLE_ENV,
        "ANSIBLE_ROLES_PATH": str(paths.REPO / "roles"),
        "ANSIBLE_HOME": str(ansible_home),
        "ANSIBLE_LOCAL_TEMP": str(ansible_home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(ansible_home / "remote-tmp"),
        "PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    console = io.StringIO()  # what `nox -s integration(...)` shows: proc.stream's echo and the log
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GANDI_BEARER_TOKEN", SENTINEL)  # the harness's known_secrets() reads it
        mp.setattr(log, "_stream", console)
        with contextlib.redirect_stdout(console):
            began = time.monotonic()
            status = proc.stream(argv, logfile=artifacts / "ansible.log", env=env, cwd=paths.REPO,
                                 timeout=ROLE_TIMEOUT)
            seconds = time.monotonic() - began
            ansible_log_before_scrub = (artifacts / "ansible.log").read_bytes()

            # verify: a failing check writes JUnit and verify.log. Its output is not echoed: the
            # console is never scrubbed, and this check leaks on purpose (see the report below).
            suite = tmp / "checks" / "test_guest.py"
            suite.parent.mkdir()
            suite.write_text(CHECK_SUITE.format(env_file=str(config_dir / "caddy.env")), encoding="utf-8")
            proc.stream(
                [sys.executable, "-m", "pytest", str(suite), f"--junitxml={artifacts / 'junit-verify.xml'}",
                 "-p", "no:cacheprovider", "-rfEs", "-v", "-o", "junit_family=xunit2"],
                logfile=artifacts / "verify.log", env={"PYTHONDONTWRITEBYTECODE": "1"}, echo=False,
            )

            # evidence: the guest echoed the token on its serial console.
            console_log = run_dir / "console.log"
            console_log.write_text(
                f"[    1.2] Booting\ncloud-init[412]: GANDI_BEARER_TOKEN={SENTINEL}\nlogin:\n",
                encoding="utf-8",
            )
            evidence.collect(None, console_log, artifacts / "evidence",
                             reason=f"apply failed; the guest said: Bearer {SENTINEL}")

            # run_cycle's finally, in its order: scrub, then write the summary.
            summary = Summary(run_id=artifacts.name, host="offsite", tier="le-staging")
            summary.phases["apply"] = round(seconds, 1)
            summary.reason = "checks failed against the VM; see junit-verify.xml and verify.log"
            summary.finish("fail")
            scrub_tree(artifacts)
            summary.write(artifacts)

    docker_calls = [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()] \
        if calls.exists() else []
    return Run(status, seconds, artifacts, guest, config_dir, docker_calls,
               ansible_log_before_scrub, console.getvalue())


def _log_tail(run: Run) -> str:
    return "\n".join(run.ansible_log_before_scrub.decode(errors="replace").splitlines()[-60:])


def test_the_role_ran_and_wrote_the_token_to_the_guest_env_file_only(run: Run) -> None:
    assert run.status == 0, f"ansible-playbook exited {run.status}:\n{_log_tail(run)}"
    env_file = run.config_dir / "caddy.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert f"GANDI_BEARER_TOKEN={SENTINEL}" in env_file.read_text(encoding="utf-8").splitlines()
    caddyfile = (run.config_dir / "Caddyfile").read_text(encoding="utf-8")
    assert "acme_dns gandi {env.GANDI_BEARER_TOKEN}" in caddyfile
    assert SENTINEL not in caddyfile
    # Nothing else in the guest tree holds it (the role's files, the data dir).
    holders = [p for p in run.guest.rglob("*") if p.is_file() and SENTINEL.encode() in p.read_bytes()]
    assert holders == [env_file]


def test_the_container_was_recreated_with_the_env_file(run: Run) -> None:
    assert run.status == 0, _log_tail(run)
    assert ["container", "rm", "--force", "caddy"] in run.docker_calls
    started = [c for c in run.docker_calls if c[:2] == ["run", "--detach"]]
    assert len(started) == 1, run.docker_calls
    assert f"--env-file={run.config_dir / 'caddy.env'}" in started[0]
    # Validated in the container it found, which runs the image the role wants (stale in its
    # configuration only): `docker exec`, not a new container.
    assert ["exec", "--interactive", "caddy", "caddy", "adapt", "--config", "/dev/stdin",
            "--adapter", "caddyfile"] in run.docker_calls, "Caddyfile not validated"


def test_the_token_is_never_on_a_docker_command_line(run: Run) -> None:
    assert run.docker_calls, "the fake docker was never called: is a real docker first on PATH?"
    leaking = [c for c in run.docker_calls if any(SENTINEL in arg for arg in c)]
    assert leaking == []


def _task_output(log_text: str) -> dict[str, str]:
    """ansible.log split by task: name → everything printed until the next TASK header."""
    blocks: dict[str, str] = {}
    for chunk in log_text.split("\nTASK [")[1:]:
        header, _, body = chunk.partition("\n")
        name = header.split("]", 1)[0].removeprefix("reverse_proxy : ")
        blocks[name] = body
    return blocks


def test_no_log_keeps_the_token_out_of_ansible_log_before_any_scrub(run: Run) -> None:
    text = run.ansible_log_before_scrub.decode(errors="replace")
    leaking = [name for name, body in _task_output(text).items() if SENTINEL in body]
    assert leaking == [], f"the token is in ansible.log (-vvv --diff) before scrubbing, in: {leaking}"
    assert SENTINEL not in text


@pytest.mark.parametrize("task", NO_LOG_TASKS)
def test_each_task_near_the_token_ran_censored(run: Run, task: str) -> None:
    blocks = _task_output(run.ansible_log_before_scrub.decode(errors="replace"))
    assert task in blocks, f"{task!r} did not run"
    body = blocks[task]
    assert "'no_log: true' was specified for this result" in body or "censored due to no_log" in body, (
        f"{task!r} ran without no_log:\n{body[:2000]}"
    )


def test_the_console_nox_shows_never_holds_the_token(run: Run) -> None:
    assert "PLAY RECAP" in run.console_before_scrub  # the echo was captured
    assert SENTINEL not in run.console_before_scrub


def test_no_artifact_holds_the_token_after_the_scrub(run: Run) -> None:
    files = sorted(p for p in run.artifacts.rglob("*") if p.is_file())
    names = {p.relative_to(run.artifacts).as_posix() for p in files}
    assert {"ansible.log", "verify.log", "junit-verify.xml", "summary.json", "summary.md",
            "junit-verify.html", "evidence/README.txt", "evidence/console.log"} <= names
    assert [p for p in files if SENTINEL.encode() in p.read_bytes()] == []
    # The guest's echo and the careless check did carry it: the scrub, not luck, removed it.
    # The HTML report, written after the scrub, renders the scrubbed JUnit file.
    for planted in ("evidence/console.log", "evidence/README.txt", "junit-verify.xml", "verify.log",
                    "junit-verify.html"):
        assert REDACTED in (run.artifacts / planted).read_text(encoding="utf-8"), planted


def test_the_whole_run_is_fast(run: Run) -> None:
    assert run.seconds < 60, f"the role took {run.seconds:.1f}s"
