"""Everything libvirt, in one module: domain XML, define/start, find, destroy, undefine.

Run identity lives in libvirt metadata (namespace :data:`NS`), so leftovers are found from
libvirt itself even if the run's state directory is gone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import libvirt

from harness.accel import Accel
from harness.errors import HarnessError
from harness.image.recipe import UPLINK_PCI_SLOT

DEFAULT_URI = "qemu:///system"
NS = "https://boma.invalid/harness/run/1"
NS_PREFIX = "boma"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NAME_PREFIX = "boma-it-"
NETDEV_ID = "bomanet"

# libvirt prints every error to stderr by itself; the harness reports them as exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass(frozen=True)
class Forward:
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class LanPort:
    """A NIC on a scenario's private network: its MAC, and the hub socket QEMU connects to."""

    socket: Path
    mac: str


@dataclass(frozen=True)
class DirectBoot:
    kernel: Path
    initrd: Path
    cmdline: str


@dataclass(frozen=True)
class DomainSpec:
    """Everything needed to define one test VM."""

    name: str
    memory_mib: int
    vcpus: int
    accel: Accel
    disk: Path
    seed: Path
    console_log: Path
    forwards: tuple[Forward, ...]
    metadata: tuple[tuple[str, str], ...]
    direct_boot: DirectBoot | None = None
    passt_socket: Path | None = None  # the hermetic network (harness.guestnet); None: user-mode
    # "unsafe": the guest's flushes of the throwaway overlay return at once (harness.speed);
    # "": QEMU's default (writeback, flushes honoured).
    disk_cache: str = ""
    lans: tuple[LanPort, ...] = ()  # the scenario's private networks (harness.lan), after the uplink


# The uplink is the first NIC (PCI slot 9, enp0s9, the one the image's DHCP matches); a
# scenario's networks follow it.
LAN_FIRST_SLOT = UPLINK_PCI_SLOT + 1


def lan_args(lans: tuple[LanPort, ...]) -> list[str]:
    """QEMU's ``-netdev``/``-device`` for each private network: a stream to its hub's socket."""
    args = []
    for index, lan in enumerate(lans):
        netdev = f"{NETDEV_ID}lan{index}"
        args += [
            "-netdev",
            f"stream,id={netdev},server=off,addr.type=unix,addr.path={lan.socket}",
            "-device",
            f"virtio-net-pci,netdev={netdev},mac={lan.mac},addr={LAN_FIRST_SLOT + index:#x},bus=pcie.0",
        ]
    return args


def netdev_args(forwards: tuple[Forward, ...], passt_socket: Path | None = None) -> list[str]:
    """QEMU's ``-netdev`` and ``-device`` for the machine's one NIC.

    With ``passt_socket`` (the hermetic network): a stream to passt's unix socket; the forwards
    are then the relay's, not QEMU's. Without: QEMU's user-mode network with every forward
    bound to loopback (the network rule).
    """
    if passt_socket is not None:
        netdev = f"stream,id={NETDEV_ID},server=off,addr.type=unix,addr.path={passt_socket}"
    else:
        fwds = "".join(f",hostfwd=tcp:127.0.0.1:{f.host_port}-:{f.guest_port}" for f in forwards)
        netdev = f"user,id={NETDEV_ID}{fwds}"
    slot = f"{UPLINK_PCI_SLOT:#x}"
    return ["-netdev", netdev, "-device", f"virtio-net-pci,netdev={NETDEV_ID},addr={slot},bus=pcie.0"]


def domain_xml(spec: DomainSpec) -> str:
    ET.register_namespace("qemu", QEMU_NS)
    ET.register_namespace(NS_PREFIX, NS)
    dom = ET.Element("domain", {"type": "kvm" if spec.accel is Accel.KVM else "qemu"})
    ET.SubElement(dom, "name").text = spec.name
    meta = ET.SubElement(ET.SubElement(dom, "metadata"), f"{{{NS}}}run")
    for key, value in spec.metadata:
        meta.set(key, value)
    ET.SubElement(dom, "memory", {"unit": "MiB"}).text = str(spec.memory_mib)
    ET.SubElement(dom, "vcpu").text = str(spec.vcpus)
    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", {"arch": "x86_64", "machine": "q35"}).text = "hvm"
    if spec.direct_boot:
        ET.SubElement(os_el, "kernel").text = str(spec.direct_boot.kernel)
        ET.SubElement(os_el, "initrd").text = str(spec.direct_boot.initrd)
        ET.SubElement(os_el, "cmdline").text = spec.direct_boot.cmdline
    else:
        ET.SubElement(os_el, "boot", {"dev": "hd"})
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    if spec.accel is Accel.KVM:
        ET.SubElement(dom, "cpu", {"mode": "host-passthrough"})
    else:
        # docs/platform.md: under TCG, qemu64; "host" aborts QEMU on these machines.
        cpu = ET.SubElement(dom, "cpu", {"mode": "custom", "match": "exact"})
        ET.SubElement(cpu, "model", {"fallback": "allow"}).text = "qemu64"
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"
    devices = ET.SubElement(dom, "devices")
    disk = ET.SubElement(devices, "disk", {"type": "file", "device": "disk"})
    driver = {"name": "qemu", "type": "qcow2", "discard": "unmap"}
    if spec.disk_cache:
        driver["cache"] = spec.disk_cache
    ET.SubElement(disk, "driver", driver)
    ET.SubElement(disk, "source", {"file": str(spec.disk)})
    ET.SubElement(disk, "target", {"dev": "vda", "bus": "virtio"})
    seed = ET.SubElement(devices, "disk", {"type": "file", "device": "cdrom"})
    ET.SubElement(seed, "driver", {"name": "qemu", "type": "raw"})
    ET.SubElement(seed, "source", {"file": str(spec.seed)})
    ET.SubElement(seed, "target", {"dev": "sda", "bus": "sata"})
    ET.SubElement(seed, "readonly")
    # The serial console goes to a file from the first byte: evidence even when SSH never came.
    serial = ET.SubElement(devices, "serial", {"type": "file"})
    ET.SubElement(serial, "source", {"path": str(spec.console_log), "append": "on"})
    ET.SubElement(serial, "target", {"port": "0"})
    rng = ET.SubElement(devices, "rng", {"model": "virtio"})
    ET.SubElement(rng, "backend", {"model": "random"}).text = "/dev/urandom"
    ET.SubElement(devices, "memballoon", {"model": "none"})
    # libvirt 9.0 rejects the passt backend (docs/platform.md); the network is passed to QEMU
    # directly, with no <interface>: passt's socket (hermetic) or user-mode with loopback forwards.
    cmdline = ET.SubElement(dom, f"{{{QEMU_NS}}}commandline")
    for arg in netdev_args(spec.forwards, spec.passt_socket) + lan_args(spec.lans):
        ET.SubElement(cmdline, f"{{{QEMU_NS}}}arg", {"value": arg})
    return ET.tostring(dom, encoding="unicode")


def _fail(action: str, exc: libvirt.libvirtError) -> HarnessError:
    return HarnessError(f"libvirt: {action}: {exc.get_error_message()}")


@contextmanager
def connect(uri: str = DEFAULT_URI) -> Iterator[libvirt.virConnect]:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise HarnessError(
            f"cannot connect to libvirt at {uri}: {exc.get_error_message()}",
            hint="start the daemon (make bootstrap; without systemd: virtlogd -d && libvirtd -d)",
        ) from exc
    try:
        yield conn
    finally:
        conn.close()


def define_and_start(conn: libvirt.virConnect, spec: DomainSpec) -> libvirt.virDomain:
    try:
        dom = conn.defineXML(domain_xml(spec))
    except libvirt.libvirtError as exc:
        raise _fail(f"define {spec.name}", exc) from exc
    try:
        dom.create()
    except libvirt.libvirtError as exc:
        undefine(conn, spec.name)
        raise _fail(f"start {spec.name}", exc) from exc
    return dom


def run_metadata(dom: libvirt.virDomain) -> dict[str, str] | None:
    """The run's metadata, or None for a domain the harness did not create."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
    except libvirt.libvirtError:
        return None
    return dict(ET.fromstring(text).attrib)  # noqa: S314  (our own metadata, from our libvirt)


def list_runs(conn: libvirt.virConnect) -> list[tuple[str, bool, dict[str, str]]]:
    """(name, active, metadata) of every domain this harness created, by its metadata."""
    found = []
    for dom in conn.listAllDomains():
        meta = run_metadata(dom)
        if meta is not None and dom.name().startswith(NAME_PREFIX):
            found.append((dom.name(), bool(dom.isActive()), meta))
    return sorted(found)


def is_active(conn: libvirt.virConnect, name: str) -> bool:
    """Whether domain ``name`` exists and runs."""
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def power_off(conn: libvirt.virConnect, name: str) -> None:
    """Stop ``name`` at once (a power cut), keeping its definition."""
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as exc:
        raise _fail(f"power off {name}", exc) from exc


def restart(conn: libvirt.virConnect, name: str) -> None:
    """Power ``name`` off if it runs, then start it again from its disk: a cold boot."""
    power_off(conn, name)
    try:
        conn.lookupByName(name).create()
    except libvirt.libvirtError as exc:
        raise _fail(f"start {name} again", exc) from exc


def undefine(conn: libvirt.virConnect, name: str) -> bool:
    """Destroy and undefine ``name`` if it exists; True if something was removed."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    try:
        if dom.isActive():
            dom.destroy()
        # Snapshots and a managed save would make a plain undefine fail: they go with it.
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )
    except libvirt.libvirtError as exc:
        raise _fail(f"remove {name}", exc) from exc
    return True
