"""libvirt in one module: the domain XML, and define/find/remove against libvirt's fake driver."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from harness import virt
from harness.accel import Accel
from harness.errors import HarnessError

TEST_URI = "test:///default"  # libvirt's in-process fake driver: nothing boots
HOSTFWD = re.compile(r"hostfwd=tcp:(?P<host>[^:]*):(?P<hport>\d+)-(?P<guest>[^:]*):(?P<gport>\d+)")
FORWARDS = (virt.Forward(40022, 22), virt.Forward(40443, 443), virt.Forward(40080, 80))


def spec(name: str = "boma-it-askari-0001", accel: Accel = Accel.TCG,
         direct_boot: virt.DirectBoot | None = None, passt_socket: Path | None = None) -> virt.DomainSpec:
    return virt.DomainSpec(
        name=name, memory_mib=1024, vcpus=2, accel=accel,
        disk=Path("/runs/0001/overlay.qcow2"), seed=Path("/runs/0001/seed.iso"),
        console_log=Path("/runs/0001/console.log"), forwards=FORWARDS,
        metadata=(("run", "0001"), ("host", "askari"), ("tier", "internal"), ("run_dir", "/runs/0001")),
        direct_boot=direct_boot, passt_socket=passt_socket,
    )


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def qemu_args(root: ET.Element) -> list[str]:
    return [arg.attrib["value"] for arg in root.iter(f"{{{virt.QEMU_NS}}}arg")]




# -- domain XML --------------------------------------------------------------------------------


@pytest.mark.parametrize(("chosen", "domain_type"), [(Accel.TCG, "qemu"), (Accel.KVM, "kvm")])
def test_domain_type_follows_the_accelerator(chosen: Accel, domain_type: str) -> None:
    assert parse(virt.domain_xml(spec(accel=chosen))).attrib["type"] == domain_type


def test_tcg_uses_the_qemu64_cpu() -> None:
    cpu = parse(virt.domain_xml(spec(accel=Accel.TCG))).find("cpu")
    assert cpu is not None
    assert cpu.findtext("model") == "qemu64"
    assert cpu.attrib.get("mode") != "host-passthrough"


def test_kvm_passes_the_host_cpu_through() -> None:
    cpu = parse(virt.domain_xml(spec(accel=Accel.KVM))).find("cpu")
    assert cpu is not None
    assert cpu.attrib == {"mode": "host-passthrough"}
    assert cpu.find("model") is None


def netdev_of(args: list[str]) -> str:
    return args[args.index("-netdev") + 1]


def test_every_forward_binds_loopback_only() -> None:
    netdev = netdev_of(virt.netdev_args(FORWARDS))
    found = [m.groupdict() for m in HOSTFWD.finditer(netdev)]
    assert netdev.count("hostfwd=") == len(found) == len(FORWARDS)
    assert {(int(f["hport"]), int(f["gport"])) for f in found} == {
        (f.host_port, f.guest_port) for f in FORWARDS}
    assert {f["host"] for f in found} == {"127.0.0.1"}
    assert {f["guest"] for f in found} == {""}


def test_the_domain_passes_that_netdev_and_no_libvirt_interface() -> None:
    root = parse(virt.domain_xml(spec()))
    args = qemu_args(root)
    netdev = netdev_of(args)
    assert netdev == netdev_of(virt.netdev_args(FORWARDS))
    assert [f["host"] for f in (m.groupdict() for m in HOSTFWD.finditer(netdev))] == ["127.0.0.1"] * 3
    device = args[args.index("-device") + 1]
    assert f"netdev={virt.NETDEV_ID}" in device
    devices = root.find("devices")
    assert devices is not None
    assert devices.find("interface") is None


def test_no_address_but_loopback_appears_anywhere() -> None:
    xml = virt.domain_xml(spec())
    addresses = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", xml))
    assert addresses == {"127.0.0.1"}


def test_the_hermetic_domain_has_only_a_stream_to_passt() -> None:
    """No user-mode network, so no forward and no NAT in QEMU: the relay holds the forwards."""
    root = parse(virt.domain_xml(spec(passt_socket=Path("/runs/0001/askari/net/passt.socket"))))
    args = qemu_args(root)
    assert args.count("-netdev") == 1
    assert netdev_of(args) == (
        f"stream,id={virt.NETDEV_ID},server=off,addr.type=unix,addr.path=/runs/0001/askari/net/passt.socket"
    )
    assert "hostfwd" not in virt.domain_xml(spec(passt_socket=Path("/s")))
    assert not re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", virt.domain_xml(spec(passt_socket=Path("/s"))))


def test_serial_console_goes_to_the_run_file() -> None:
    [serial] = parse(virt.domain_xml(spec())).iterfind("devices/serial")
    assert serial.attrib["type"] == "file"
    source = serial.find("source")
    assert source is not None
    assert source.attrib == {"path": "/runs/0001/console.log", "append": "on"}


def test_disks_are_the_overlay_and_the_seed() -> None:
    root = parse(virt.domain_xml(spec()))
    sources = {d.attrib["device"]: d.find("source").attrib["file"]  # type: ignore[union-attr]
               for d in root.iterfind("devices/disk")}
    assert sources == {"disk": "/runs/0001/overlay.qcow2", "cdrom": "/runs/0001/seed.iso"}


def test_direct_boot_elements_when_given() -> None:
    boot = virt.DirectBoot(Path("/cache/vmlinuz"), Path("/cache/initrd.img"), "root=/dev/vda1 console=ttyS0")
    os_el = parse(virt.domain_xml(spec(direct_boot=boot))).find("os")
    assert os_el is not None
    assert os_el.findtext("kernel") == "/cache/vmlinuz"
    assert os_el.findtext("initrd") == "/cache/initrd.img"
    assert os_el.findtext("cmdline") == "root=/dev/vda1 console=ttyS0"
    assert os_el.find("boot") is None


def test_firmware_boot_has_no_kernel() -> None:
    os_el = parse(virt.domain_xml(spec())).find("os")
    assert os_el is not None
    assert os_el.find("kernel") is None
    assert os_el.find("boot") is not None


def test_metadata_carries_the_run_identity() -> None:
    run = parse(virt.domain_xml(spec())).find(f"metadata/{{{virt.NS}}}run")
    assert run is not None
    assert run.attrib == {"run": "0001", "host": "askari", "tier": "internal", "run_dir": "/runs/0001"}


# -- against libvirt's fake driver ------------------------------------------------------------


def test_define_and_start_then_list_runs_finds_it_by_metadata(conn: libvirt.virConnect) -> None:
    dom = virt.define_and_start(conn, spec())
    assert dom.isActive()
    assert virt.list_runs(conn) == [
        ("boma-it-askari-0001", True,
         {"run": "0001", "host": "askari", "tier": "internal", "run_dir": "/runs/0001"}),
    ]
    assert conn.lookupByName("boma-it-askari-0001").info()[1] == 1024 * 1024  # max memory, KiB


def test_a_stopped_run_is_listed_as_stopped(conn: libvirt.virConnect) -> None:
    virt.define_and_start(conn, spec()).destroy()
    assert virt.list_runs(conn) == [("boma-it-askari-0001", False, dict(spec().metadata))]


def test_domains_without_boma_metadata_are_not_listed(conn: libvirt.virConnect) -> None:
    plain = ET.fromstring(virt.domain_xml(spec("boma-it-notours")))
    plain.remove(plain.find("metadata"))  # type: ignore[arg-type]
    conn.defineXML(ET.tostring(plain, encoding="unicode")).create()
    virt.define_and_start(conn, spec("someone-elses-vm"))  # our metadata, not our name
    names = {dom.name() for dom in conn.listAllDomains()}
    assert {"boma-it-notours", "someone-elses-vm", "test"} <= names
    assert virt.list_runs(conn) == []


def test_undefine_removes_it_and_is_false_the_second_time(conn: libvirt.virConnect) -> None:
    virt.define_and_start(conn, spec())
    assert virt.undefine(conn, "boma-it-askari-0001") is True
    assert virt.list_runs(conn) == []
    assert "boma-it-askari-0001" not in {d.name() for d in conn.listAllDomains()}
    assert virt.undefine(conn, "boma-it-askari-0001") is False


def test_undefine_a_stopped_domain(conn: libvirt.virConnect) -> None:
    virt.define_and_start(conn, spec()).destroy()
    assert virt.undefine(conn, "boma-it-askari-0001") is True
    assert "boma-it-askari-0001" not in {dom.name() for dom in conn.listAllDomains()}


def test_define_failure_is_a_harness_error(conn: libvirt.virConnect) -> None:
    virt.define_and_start(conn, spec())
    with pytest.raises(HarnessError, match="libvirt: define boma-it-askari-0001"):
        virt.define_and_start(conn, spec())  # the same name again
    assert [name for name, _, _ in virt.list_runs(conn)] == ["boma-it-askari-0001"]


def test_connect_failure_is_a_harness_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(HarnessError) as caught, virt.connect(f"test://{tmp_path}/missing.xml"):
        pass
    assert "cannot connect to libvirt" in caught.value.message
    assert caught.value.hint
