"""What the reverse_proxy role does with the Caddy container it finds, and where it validates the
Caddyfile: the role's own expressions (tasks/container.yml's conditions, vars/main.yml), evaluated
with ansible-core's templar against what ``docker container inspect --format`` prints.

The inspect runs before the Caddyfile is written (tasks/config.yml), so that a container already
running the wanted image validates the file itself (``docker exec``, about 1.5 s under TCG) and a
new one is made only when there is no such container (``docker run --rm``, about 5 s)."""

from __future__ import annotations

from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from tests.unit.render import REPO

ROLE = REPO / "roles" / "reverse_proxy"
IMAGE = "sha256:" + "ab" * 32
OTHER_IMAGE = "sha256:" + "cd" * 32
EXEC = "sh -c 'exec docker exec --interactive"
RUN = "docker run --rm --network=none"


def load(path: str) -> Any:
    return DataLoader().load_from_file(str(ROLE / path), trusted_as_template=True)


def variables(inspected: dict[str, Any], *, caddyfile_changed: bool = True) -> dict[str, Any]:
    return {
        **load("defaults/main.yml"),
        **load("vars/main.yml"),
        "vault": {},
        "reverse_proxy__image_id": {"stdout": f'[{{"Id": "{IMAGE}"}}]'},
        "reverse_proxy__config_files": {"results": [{"stat": {"checksum": "e" * 64}}, {"stat": {}}]},
        "reverse_proxy__container": inspected,
        "reverse_proxy__caddyfile": {"changed": caddyfile_changed},
    }


def evaluate(expression: str, given: dict[str, Any]) -> Any:
    return Templar(loader=DataLoader(), variables=given).template(trust_as_template(expression))


def config_hash() -> str:
    return str(evaluate("{{ reverse_proxy__config_hash }}", variables({"rc": 1, "stdout": ""})))


def container(label: str, running: bool, image: str) -> dict[str, Any]:
    """What the role's inspect prints for a container (docker's exit status 0)."""
    return {"rc": 0, "stdout": f"{label}|{'true' if running else 'false'}|{image}"}


NONE = {"rc": 1, "stdout": ""}  # docker: no such container


def what_runs(inspected: dict[str, Any], *, caddyfile_changed: bool = True) -> tuple[str, list[str]]:
    """Where the Caddyfile is validated, and container.yml's tasks that run, in order."""
    given = variables(inspected, caddyfile_changed=caddyfile_changed)
    validate = str(evaluate("{{ reverse_proxy__validate_command }}", given))
    ran = []
    for task in load("tasks/container.yml"):
        if "when" not in task or "inspect" in str(task.get("ansible.builtin.command", "")):
            continue
        conditions = task["when"] if isinstance(task["when"], list) else [task["when"]]
        if all(evaluate("{{ " + str(c) + " }}", given) for c in conditions):
            ran.append(task["name"])
    return ("exec" if validate.startswith(EXEC) else "run" if validate.startswith(RUN) else validate), ran


CREATE = ["Start a Caddy container with the current configuration"]
RECREATE = ["Remove the outdated Caddy container", *CREATE]


@pytest.mark.parametrize(
    ("case", "inspected", "validated", "tasks"),
    [
        ("no container yet", "none", "run", CREATE),
        ("current and running: the Caddyfile is reloaded", "current-running", "exec",
         ["Reload Caddy's configuration"]),
        ("current but stopped: started as it is", "current-stopped", "run",
         ["Start the stopped Caddy container"]),
        ("outdated, running the wanted image", "stale-running", "exec", RECREATE),
        ("running another image", "stale-other-image", "run", RECREATE),
        ("a container without the role's label", "unlabelled", "exec", RECREATE),
    ],
)
def test_the_container_found_decides_the_validation_and_the_tasks(
    case: str, inspected: str, validated: str, tasks: list[str]
) -> None:
    found = {
        "none": NONE,
        "current-running": container(config_hash(), True, IMAGE),
        "current-stopped": container(config_hash(), False, IMAGE),
        "stale-running": container("0" * 64, True, IMAGE),
        "stale-other-image": container("0" * 64, True, OTHER_IMAGE),
        "unlabelled": container("", True, IMAGE),
    }[inspected]
    assert what_runs(found) == (validated, tasks), case


def test_an_unchanged_caddyfile_is_not_reloaded() -> None:
    assert what_runs(container(config_hash(), True, IMAGE), caddyfile_changed=False) == ("exec", [])


def test_the_running_container_validates_the_candidate_file_on_stdin() -> None:
    """The %s Ansible puts there is the candidate file; the container's own Caddyfile is the
    mounted old one, so the candidate goes in on stdin."""
    command = str(evaluate("{{ reverse_proxy__validate_command }}", variables(container("x", True, IMAGE))))
    assert command == (
        "sh -c 'exec docker exec --interactive \"$1\" caddy adapt --config /dev/stdin --adapter caddyfile"
        " < \"$2\"' validate caddy %s"
    )


def test_the_caddyfile_has_only_runtime_placeholders() -> None:
    """adapt substitutes {$VAR} from its own environment, which differs between the running
    container (the env file's token) and a new one (none): with {env.VAR} only, which adapt leaves
    as it is, both validations see the same file, and no token can reach adapt's error message."""
    template = (ROLE / "templates" / "etc" / "caddy" / "Caddyfile.j2").read_text(encoding="utf-8")
    assert "{$" not in template
    assert "{env.GANDI_BEARER_TOKEN}" in template
