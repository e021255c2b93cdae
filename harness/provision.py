"""Making one machine of a run: its private files (key, seed, overlay, console, inventory) and
its libvirt domain.

The machine is recorded in the run's state *before* its domain is defined, so a crash at any
point leaves nothing the reaper cannot find. Every file is readable by its owner only: the
seed and overlay by the QEMU user that libvirt hands them to, the rest by the harness.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import config, guestnet, inventory, log, paths, proc, seed, speed, ssh, virt
from harness.accel import Accel
from harness.image.golden import GoldenImage
from harness.lan import mac_address
from harness.machine import Machine
from harness.ports import free_loopback_ports
from harness.private import hand_to_qemu, make_private_dir, private_file
from harness.state import MachineState, RunState, domain_name
from harness.virt import DirectBoot


@dataclass(frozen=True)
class LanAttachment:
    """The machine on one of a scenario's networks: its address there, and its hub's socket."""

    network: str
    address: str  # with its prefix: 10.90.0.10/24
    socket: Path


@dataclass(frozen=True)
class MachineRequest:
    """One machine to make: which profile, booted how, from which image."""

    name: str
    profile: config.Profile
    accel: Accel
    direct_boot: DirectBoot | None
    golden: GoldenImage
    vcpus: int | None = None  # None: the profile's
    network: guestnet.Plan = guestnet.OPEN_NETWORK
    lans: tuple[LanAttachment, ...] = ()
    own_artifacts: bool = False  # artifacts/<name>/ even for the first machine (a scenario's)


def provision(run: RunState, request: MachineRequest, qemu: tuple[int, int] | None) -> Machine:
    """Write the machine's files, record it in the run, then define and start its domain.

    ``qemu``: the uid and gid of libvirt's QEMU where it is not us; the overlay and seed are
    handed to it (mode 0600, its own), and it may traverse the machine's directory.
    """
    profile = request.profile
    machine_dir = run.machine_dir(request.name)
    make_private_dir(machine_dir, qemu)
    first = len(run.machines) == 0 and not request.own_artifacts
    artifacts = run.artifacts_dir if first else run.artifacts_dir / request.name
    artifacts.mkdir(parents=True, exist_ok=True, mode=0o700)
    ssh_port, *host_ports = free_loopback_ports(1 + len(profile.published_ports))
    ports = {str(p.guest): port for p, port in zip(profile.published_ports, host_ports, strict=True)}
    state = MachineState(
        name=request.name,
        host=profile.name,
        domain=domain_name(request.name, run.run_id),
        accel=request.accel.value,
        boot="direct" if request.direct_boot else "firmware",
        ssh_port=ssh_port,
        ports=ports,
        golden=str(request.golden.disk),
        artifacts=str(artifacts),
        network=request.network.mode,
        egress={e.name: e.port for e in request.network.egress},
        lans={lan.network: lan.address for lan in request.lans},
    )
    run.machines.append(state)
    run.save()
    machine = Machine(run, state)
    _write_files(machine, request, qemu)
    forwards = (virt.Forward(ssh_port, 22), *(virt.Forward(hp, int(gp)) for gp, hp in ports.items()))
    passt_socket = None
    if request.network.hermetic:
        relay = guestnet.start_relay(machine_dir / "net", forwards, request.network.egress, qemu)
        state.relay_pid = relay.pid
        run.save()
        passt_socket = relay.socket
    spec = virt.DomainSpec(
        name=state.domain,
        memory_mib=profile.memory_mib,
        vcpus=request.vcpus or profile.vcpus,
        accel=request.accel,
        disk=machine_dir / "overlay.qcow2",
        seed=machine_dir / "seed.iso",
        console_log=machine.console_log,
        forwards=forwards,
        metadata=(
            ("run", run.run_id),
            ("machine", request.name),
            ("host", profile.name),
            ("tier", run.tier),
            ("run_dir", str(run.dir)),
            ("owner_pid", str(run.owner["pid"])),
            ("owner_start", str(run.owner["start"])),
            ("owner_node", str(run.owner["node"])),
        ),
        direct_boot=request.direct_boot,
        passt_socket=passt_socket,
        disk_cache="unsafe" if speed.Levers.from_json(run.levers).disk_cache_unsafe else "",
        lans=tuple(
            virt.LanPort(lan.socket, mac_address(run.run_id, request.name, lan.network))
            for lan in request.lans
        ),
    )
    with virt.connect(run.uri) as conn:
        virt.define_and_start(conn, spec)
    shown = ", ".join(f"127.0.0.1:{f.host_port}→{f.guest_port}" for f in forwards)
    log.info(f"started {state.domain} ({state.accel}, {state.boot} boot; {shown})")
    log.info(request.network.describe())
    for lan in request.lans:
        log.info(f"network {lan.network}: {lan.address} (hub {lan.socket})")
    log.info(f"serial console: {machine.console_log}")
    return machine


def _write_files(machine: Machine, request: MachineRequest, qemu: tuple[int, int] | None) -> None:
    st, directory = machine.state, machine.dir
    public_key = ssh.keygen(machine.key, comment=f"boma-run-{machine.run.run_id}")
    iso = directory / "seed.iso"
    seed.write_seed(
        iso,
        instance_id=f"boma-{machine.run.run_id}-{st.name}",
        hostname=st.domain,
        public_key=public_key,
        apt_proxy=request.network.apt_proxy,
        lans=tuple(
            seed.LanAddress(lan.network, mac_address(machine.run.run_id, st.name, lan.network), lan.address)
            for lan in request.lans
        ),
    )
    overlay = directory / "overlay.qcow2"
    proc.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(request.golden.disk),
            str(overlay),
        ],
        quiet=True,
    )
    for handed in (iso, overlay):
        hand_to_qemu(handed, qemu)
    private_file(machine.console_log)
    (directory / "ssh_config").write_text(machine.endpoint.config_text(), encoding="utf-8")
    inventory.render(
        directory / "inventory",
        vm=st.domain,
        groups=request.profile.groups,
        inventory_host=request.profile.inventory_host,
        endpoint=machine.endpoint,
        real_inventory=paths.PRODUCTION_INVENTORY,
        ssh_compression=machine.levers.ssh_compression,
    )
