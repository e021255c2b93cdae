"""The roles' templates and toggles, rendered with ansible-core's templating (no VM, no play)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from render import (
    PRODUCTION,
    REPO,
    group_vars,
    load_vars,
    render,
    role_defaults,
    role_template,
    role_vars,
)

GOLDEN_CADDYFILE = Path(__file__).parent / "golden" / "Caddyfile.production"
NFTABLES_CONF = role_template("base", "etc/nftables.conf.j2")
SSHD_DROPIN = role_template("base", "etc/ssh/sshd_config.d/10-boma.conf.j2")
DOCKER_FORWARD = role_template("docker_host", "etc/nftables.d/10-docker-forward.nft.j2")
CADDYFILE = role_template("reverse_proxy", "etc/caddy/Caddyfile.j2")
CADDY_ENV = role_template("reverse_proxy", "etc/caddy/caddy.env.j2")

# A recognisable token value: it must reach the env file and nothing else.
SENTINEL_TOKEN = "sentinel-gandi-token-3f9c"


def askari_vars(role: str, **overrides: Any) -> dict[str, Any]:
    """What a role sees on askari: its defaults, then group_vars all < docker_hosts < offsite_hosts,
    then its vars/main.yml (if it has one)."""
    files = [role_defaults(role)]
    for group in ("all", "docker_hosts", "offsite_hosts"):
        files += group_vars(PRODUCTION, group)
    if role_vars(role).is_file():
        files.append(role_vars(role))
    return load_vars(*files, overrides=overrides)


def code_lines(text: str) -> list[str]:
    """Lines without comments or blank lines, stripped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def chain(ruleset: str, name: str) -> list[str]:
    """The code lines of one chain of base's table."""
    match = re.search(rf"^\tchain {name} \{{\n(.*?)^\t\}}", ruleset, re.MULTILINE | re.DOTALL)
    assert match, f"no chain {name} in the ruleset"
    return code_lines(match.group(1))


def condition(expression: Any, variables: dict[str, Any]) -> bool:
    """Evaluate a `when:` value (a string or a list of them, ANDed) as Ansible would."""
    templar = Templar(loader=DataLoader(), variables=variables)
    items = expression if isinstance(expression, list) else [expression]
    return all(templar.evaluate_conditional(trust_as_template(str(item))) for item in items)


def tasks(role: str, file: str = "tasks/main.yml") -> list[dict[str, Any]]:
    """A role's task (or handler) list, blocks flattened."""
    data = yaml.load((REPO / "roles" / role / file).read_text(), Loader=_AnsibleTagsLoader)
    flat: list[dict[str, Any]] = []
    for task in data:
        flat += [task] + [t for key in ("block", "rescue", "always") for t in task.get(key, [])]
    return flat


class _AnsibleTagsLoader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's `!unsafe` strings as plain strings."""


_AnsibleTagsLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


# --- base: nftables ------------------------------------------------------------------------


def test_forward_chain_denies_by_default_with_no_accept_of_its_own() -> None:
    ruleset = render(NFTABLES_CONF, askari_vars("base"))
    forward = chain(ruleset, "forward")
    assert forward == ["type filter hook forward priority filter; policy drop;"]


def test_ruleset_replaces_only_its_own_table() -> None:
    lines = code_lines(render(NFTABLES_CONF, askari_vars("base")))
    assert "flush ruleset" not in lines
    assert lines[:3] == ["table inet filter", "delete table inet filter", "table inet filter {"]


def test_dropins_are_included_last() -> None:
    lines = code_lines(render(NFTABLES_CONF, askari_vars("base")))
    assert lines[-1] == 'include "/etc/nftables.d/*.nft"'
    custom = code_lines(render(NFTABLES_CONF, askari_vars("base", base__firewall_dropin_dir="/srv/nft.d")))
    assert custom[-1] == 'include "/srv/nft.d/*.nft"'


def test_input_allows_ssh_and_the_declared_ports_only() -> None:
    variables = askari_vars("base", base__firewall_allowed_udp_ports=[51820])
    input_chain = chain(render(NFTABLES_CONF, variables), "input")
    assert input_chain[0] == "type filter hook input priority filter; policy drop;"
    ports = [line for line in input_chain if "dport" in line]
    assert ports == [
        "tcp dport 22 accept",
        "tcp dport 80 accept",
        "tcp dport 443 accept",
        "udp dport 51820 accept",
    ]
    assert "ct state established,related accept" in input_chain
    assert 'iifname "lo" accept' in input_chain


def test_default_input_opens_ssh_only() -> None:
    input_chain = chain(render(NFTABLES_CONF, load_vars(role_defaults("base"))), "input")
    assert [line for line in input_chain if "dport" in line] == ["tcp dport 22 accept"]


def test_output_accepts() -> None:
    output = chain(render(NFTABLES_CONF, askari_vars("base")), "output")
    assert output == ["type filter hook output priority filter; policy accept;"]


def _nft_check_usable() -> bool:
    """`nft -c` needs the binary and CAP_NET_ADMIN (it asks the kernel, without committing)."""
    nft = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if nft is None or os.geteuid() != 0:
        return False
    probe = subprocess.run([nft, "-c", "-f", "/dev/null"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _nft_check_usable(), reason="needs nft and root for `nft -c` (check only)")
@pytest.mark.parametrize("with_dropin", [True, False], ids=["with-docker-dropin", "without-dropin"])
def test_rendered_ruleset_passes_nft_check(tmp_path: Path, with_dropin: bool) -> None:
    dropins = tmp_path / "nftables.d"
    dropins.mkdir()
    conf = tmp_path / "nftables.conf"
    conf.write_text(render(NFTABLES_CONF, askari_vars("base", base__firewall_dropin_dir=str(dropins))))
    if with_dropin:
        (dropins / "10-docker-forward.nft").write_text(render(DOCKER_FORWARD, askari_vars("docker_host")))
    result = subprocess.run(["nft", "-c", "-f", str(conf)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --- base: sshd ----------------------------------------------------------------------------


def test_sshd_dropin_hardens_without_locking_anyone_out() -> None:
    lines = code_lines(render(SSHD_DROPIN, load_vars(role_defaults("base"))))
    for setting in (
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "X11Forwarding no",
    ):
        assert setting in lines
    assert not [line for line in lines if line.startswith(("AllowUsers", "AllowGroups", "ListenAddress"))]


@pytest.mark.parametrize(
    ("mesh_enabled", "mesh_only", "listens_on_mesh"),
    [(False, False, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_sshd_listens_on_the_mesh_only_when_both_toggles_are_on(
    mesh_enabled: bool, mesh_only: bool, listens_on_mesh: bool
) -> None:
    variables = load_vars(
        role_defaults("base"),
        overrides={
            "base__mesh_enabled": mesh_enabled,
            "base__ssh_listen_mesh_only": mesh_only,
            "base__mesh_address": "100.64.0.7",
        },
    )
    listen = [line for line in code_lines(render(SSHD_DROPIN, variables)) if line.startswith("ListenAddress")]
    assert listen == (["ListenAddress 100.64.0.7"] if listens_on_mesh else [])


def test_break_glass_defaults_are_safe() -> None:
    defaults = load_vars(role_defaults("base"))
    assert defaults["base__firewall_apply"] is False
    assert defaults["base__ssh_listen_mesh_only"] is False
    assert defaults["base__mesh_enabled"] is False
    assert defaults["base__firewall_dropin_dir"] == "/etc/nftables.d"
    askari = askari_vars("base")
    assert askari["base__firewall_apply"] is False
    assert askari["base__ssh_listen_mesh_only"] is False


# --- docker_host: the forward drop-in -----------------------------------------------------


def test_docker_dropin_adds_accepts_to_base_forward_chain() -> None:
    text = render(DOCKER_FORWARD, askari_vars("docker_host"))
    assert "2026-06-17" in text
    lines = code_lines(text)
    assert lines[:2] == ["table inet filter {", "chain forward {"]
    assert lines[2:7] == [
        "ct state established,related accept",
        'iifname "docker0" accept',
        'oifname "docker0" accept',
        'iifname "br-*" accept',
        'oifname "br-*" accept',
    ]
    # Adds rules only: redefining the hook or the policy would change base's chain.
    assert not [line for line in lines if "hook" in line or "policy" in line or "flush" in line]


def _dropin_tasks() -> tuple[dict[str, Any], dict[str, Any]]:
    """docker_host's task writing the drop-in and the one removing it."""
    dest = "{{ docker_host__nftables_dropin_dir }}/10-docker-forward.nft"
    write = [t for t in tasks("docker_host") if t.get("ansible.builtin.template", {}).get("dest") == dest]
    remove = [t for t in tasks("docker_host") if t.get("ansible.builtin.file", {}).get("path") == dest]
    assert len(write) == 1 and len(remove) == 1
    return write[0], remove[0]


@pytest.mark.parametrize("toggle", [True, False])
def test_dropin_is_present_exactly_when_the_toggle_is_on(toggle: bool) -> None:
    write, remove = _dropin_tasks()
    assert write["ansible.builtin.template"]["src"] == "etc/nftables.d/10-docker-forward.nft.j2"
    assert remove["ansible.builtin.file"]["state"] == "absent"
    variables = askari_vars("docker_host", docker_host__forward_dropin=toggle)
    assert condition(write["when"], variables) is toggle
    assert condition(remove["when"], variables) is not toggle


def test_dropin_toggle_defaults_on() -> None:
    assert load_vars(role_defaults("docker_host"))["docker_host__forward_dropin"] is True


@pytest.mark.parametrize("role", ["base", "docker_host"])
@pytest.mark.parametrize("apply", [True, False])
def test_nftables_is_validated_then_reloaded_only_when_applied(role: str, apply: bool) -> None:
    handlers = [h for h in tasks(role, "handlers/main.yml") if h.get("listen") == "boma nftables changed"]
    modules = [next(k for k in h if k.startswith("ansible.builtin.")) for h in handlers]
    assert modules == ["ansible.builtin.command", "ansible.builtin.systemd_service"]
    assert handlers[0]["ansible.builtin.command"]["argv"] == [
        "/usr/sbin/nft",
        "-c",
        "-f",
        "/etc/nftables.conf",
    ]
    # reloaded, never restarted: the unit's ExecStop flushes Docker's tables too.
    assert handlers[1]["ansible.builtin.systemd_service"]["state"] == "reloaded"
    for handler in handlers:
        assert condition(handler["when"], {"base__firewall_apply": apply}) is apply


def test_dropin_changes_notify_the_shared_nftables_topic() -> None:
    for task in _dropin_tasks():
        assert task["notify"] == "boma nftables changed"


# --- reverse_proxy: the Caddyfile ---------------------------------------------------------


def test_production_caddyfile_matches_the_golden_copy() -> None:
    rendered = render(CADDYFILE, askari_vars("reverse_proxy"))
    assert rendered.encode() == GOLDEN_CADDYFILE.read_bytes()


@pytest.mark.parametrize("tls_internal", [True, False])
def test_tls_internal_once_per_route_only_when_asked(tls_internal: bool) -> None:
    variables = askari_vars("reverse_proxy", reverse_proxy__tls_internal=tls_internal)
    lines = code_lines(render(CADDYFILE, variables))
    routes = variables["reverse_proxy__routes"]
    assert lines.count("tls internal") == (len(routes) if tls_internal else 0)
    if tls_internal:
        # First directive of every site block.
        for route in routes:
            assert lines[lines.index(f"{route['host']} {{") + 1] == "tls internal"


def test_acme_ca_and_root_only_when_set() -> None:
    plain = code_lines(render(CADDYFILE, askari_vars("reverse_proxy")))
    assert not [line for line in plain if line.startswith("acme_ca")]
    pebble = askari_vars(
        "reverse_proxy",
        reverse_proxy__acme_ca="https://10.0.2.2:14000/dir",
        reverse_proxy__acme_ca_root="/data/pebble.minica.pem",
    )
    lines = code_lines(render(CADDYFILE, pebble))
    assert "acme_ca https://10.0.2.2:14000/dir" in lines
    assert "acme_ca_root /data/pebble.minica.pem" in lines


@pytest.mark.parametrize("provider", ["gandi", ""])
def test_gandi_token_stays_out_of_the_caddyfile(provider: str) -> None:
    variables = askari_vars(
        "reverse_proxy",
        reverse_proxy__acme_dns_provider=provider,
        vault={"gandi": {"pat": SENTINEL_TOKEN}},
    )
    caddyfile = render(CADDYFILE, variables)
    env = render(CADDY_ENV, variables)
    assert SENTINEL_TOKEN not in caddyfile
    dns_line = "acme_dns gandi {env.GANDI_BEARER_TOKEN}"
    assert (dns_line in code_lines(caddyfile)) is (provider == "gandi")
    assert (f"GANDI_BEARER_TOKEN={SENTINEL_TOKEN}" in env.splitlines()) is (provider == "gandi")
    if provider != "gandi":
        assert SENTINEL_TOKEN not in env


def test_defaults_alone_give_no_test_knobs_and_no_global_block() -> None:
    variables = load_vars(
        role_defaults("reverse_proxy"),
        role_vars("reverse_proxy"),
        overrides={"reverse_proxy__routes": [{"host": "a.example", "upstream": "a:80"}]},
    )
    assert code_lines(render(CADDYFILE, variables)) == ["a.example {", "reverse_proxy a:80", "}"]


def test_a_pem_the_role_writes_is_the_caddyfiles_acme_ca_root() -> None:
    """Pebble's tier hands over only the PEM's text: the role writes it into the configuration
    directory, which the container sees at reverse_proxy__config_dir_in_container, and names
    that path in the Caddyfile. An operator's own path still wins."""
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    written = askari_vars("reverse_proxy", reverse_proxy__acme_ca="https://10.0.2.2:14000/dir",
                          reverse_proxy__acme_ca_root_pem=pem)
    assert "acme_ca_root /etc/caddy/acme-ca-root.pem" in code_lines(render(CADDYFILE, written))
    run_options = Templar(loader=DataLoader(), variables=written).template(
        trust_as_template("{{ reverse_proxy__run_options }}"))
    assert "--volume=/etc/caddy:/etc/caddy:ro" in run_options
    own = askari_vars("reverse_proxy", reverse_proxy__acme_ca_root="/data/own.pem",
                      reverse_proxy__acme_ca_root_pem=pem)
    assert "acme_ca_root /data/own.pem" in code_lines(render(CADDYFILE, own))


def _touches_the_token(task: dict[str, Any]) -> bool:
    """Reads the token, writes or stats the env file, or runs or inspects the container."""
    text = yaml.safe_dump(task)
    argv = task.get("ansible.builtin.command", {}).get("argv", [])
    inspects_container = isinstance(argv, list) and argv[:3] == ["docker", "container", "inspect"]
    return inspects_container or any(marker in text for marker in ("gandi_token", "caddy.env", "run_argv"))


def test_every_task_near_the_token_is_no_log() -> None:
    checked = []
    for file in sorted((REPO / "roles" / "reverse_proxy" / "tasks").glob("*.yml")):
        for task in tasks("reverse_proxy", f"tasks/{file.name}"):
            if _touches_the_token(task):
                checked.append(task["name"])
                assert task.get("no_log") is True, f"{file.name}: {task['name']!r} needs no_log: true"
    # The assert, the env file, its fingerprint, the inspect and the run.
    assert len(checked) == 5, checked


@pytest.mark.parametrize(
    ("volumes", "accepted"),
    [
        ([], True),
        (["/srv/certs:/srv/certs:ro", "caddy_config:/config"], True),
        (["/etc/caddyish:/etc/caddyish"], True),
        (["/root/ca.pem:/etc/caddy/ca.pem:ro"], False),
        (["named:/etc/caddy"], False),
        (["/etc/caddy/extra"], False),
    ],
)
def test_the_settings_check_refuses_extra_volumes_below_the_config_mount(
    volumes: list[str], accepted: bool
) -> None:
    """The configuration directory is mounted read-only at /etc/caddy: a volume below it would
    shadow the Caddyfile a reload reads, or fail to mount."""
    check = next(t for t in tasks("reverse_proxy") if t["name"] == "Check the reverse proxy settings")
    variables = askari_vars("reverse_proxy", reverse_proxy__extra_volumes=volumes)
    assert condition(check["ansible.builtin.assert"]["that"], variables) is accepted
