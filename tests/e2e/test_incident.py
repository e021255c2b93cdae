"""The 2026-06-17 incident, reproduced RED and fixed GREEN on a real VM.

One VM is taken through both halves: boot → apply RED (the repository before the fix) →
real reboot → verify must FAIL for the right reason → apply the repository as it is →
real reboot → verify must PASS. Why one VM and not two: a second boot plus a second cold
apply (Docker's packages under TCG) would add about seven minutes to every CI run, while the
incident lives entirely in what is loaded at boot: each half ends in its own real reboot,
proven by a changed boot_id, so the GREEN verdict is judged on a boot that started from the
fixed configuration on disk, exactly as a real host would after the fix was deployed.

The GREEN half applies the role as committed, not a toggle: if the fix is reverted in
roles/docker_host, the GREEN half fails.

The two halves also carry the test command's two fidelity paths (issue #10, harness.speed).
RED is a fresh host's cold apply as the real hosts get it: the plain golden image (no
package layer, so Docker comes from the archive through apt, maintainer scripts and all) and
Ansible's own connection, one ansible-playbook per playbook. GREEN is the developer's warm
loop on that machine: the fix applied under Mitogen, both playbooks in one process. So every
`make test` runs each lever's path without it (RED) and Mitogen's with it (GREEN), and the
fast half pays for most of the slow one (2026-12-07: RED's apply 209 → 371 s without the
layer, GREEN's 138 → 18 s under Mitogen; the e2e 657 → 691 s). The summary names the levers
of each half.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from harness import hoststate, log, paths, signals, speed
from harness.cycle import CycleOptions, booted
from harness.errors import VerificationFailed
from harness.evidence import forward_chain_is_pure_drop
from harness.run import Keep
from harness.state import new_run_id
from harness.summary import Summary

pytestmark = pytest.mark.e2e

RED_OVERLAY = paths.OVERRIDES_DIR / "askari-red.yml"
DEADLINE = 3000.0
# The checks the incident must break, and the only ones it may break.
PORT_CHECK = "test_https_answers_from_controller"
INCIDENT_CHECKS = {
    PORT_CHECK,
    "test_http_answers_from_controller",
    "test_served_certificate_comes_from_the_tier_issuer",
    "test_forward_chain_permits_container_traffic",
}
HTTPS_STATE = "ports/https (443)"
# RED: booted as a fresh host is (the plain image), applied as the real hosts are.
RED_LEVERS = replace(speed.DEFAULT, package_layer=False)
# GREEN: the warm loop's apply levers (Mitogen, one process) on the same machine.
GREEN_LEVERS = speed.FAST


def failed_checks(junit: Path) -> dict[str, str]:
    """name → failure message of every failed or errored test case in a JUnit file."""
    failed = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        for outcome in ("failure", "error"):
            node = case.find(outcome)
            if node is not None:
                failed[case.get("name", "?").split("[")[0]] = node.get("message", "")
    return failed


def test_incident_red_then_green() -> None:
    options = CycleOptions(
        host="askari", certs="internal", keep=Keep.NEVER, deadline=DEADLINE, levers=RED_LEVERS
    )
    summary = Summary(run_id=new_run_id(), host="askari", tier="internal")
    out = paths.run_artifacts("askari", "internal", summary.run_id)
    try:
        with signals.cancellable(DEADLINE), booted(options, summary) as (_run, vm):
            with summary.phase("RED: apply without the container-forward drop-in", sut=True):
                vm.apply((RED_OVERLAY,))
            # Recorded, not asserted: on a fresh VM the toggle never writes the drop-in, so
            # base's pure-drop forward chain is loaded before Docker publishes anything and the
            # port may be silent already (seen on every run so far). The incident's verdict is
            # what the host does after the reboot.
            with summary.phase("RED: state before the reboot", sut=True):
                red_before = vm.capture_state("red-before-reboot").state
            with summary.phase("RED: reboot", sut=True):
                vm.reboot()
            with (
                summary.phase("RED: verify (must fail)", sut=True),
                pytest.raises(VerificationFailed),
            ):
                vm.verify(label="verify-red")
            bundle = vm.collect_evidence(reason="RED half of the incident test: failure expected",
                                         label="evidence-red")

            failed = failed_checks(vm.artifacts / "junit-verify-red.xml")
            assert PORT_CHECK in failed, f"RED failed, but not on the published port: {failed}"
            # The incident's signature: Caddy serves the port inside the guest, the controller
            # gets nothing (base's forward chain drops what Docker's DNAT forwards).
            assert "to answer from the controller" in failed[PORT_CHECK], failed[PORT_CHECK]
            assert "though it answers inside the guest" in failed[PORT_CHECK], failed[PORT_CHECK]
            assert set(failed) <= INCIDENT_CHECKS, f"RED broke more than the incident: {failed}"
            ruleset = (bundle / "nft-ruleset.txt").read_text(encoding="utf-8")
            assert forward_chain_is_pure_drop(ruleset), f"forward chain not pure drop:\n{ruleset}"
            assert (bundle / "console.log").stat().st_size > 0, "no serial console in the bundle"
            # The generic check sees the incident without askari's own tests: a published port
            # that is silent after the reboot fails the cycle, whether or not it answered before.
            with summary.phase("RED: state diff (must name the port)", sut=True):
                red_after = vm.capture_state("red-after-reboot").state
                red_diff = hoststate.record(red_before, red_after, vm.profile.reboot_diff_allow,
                                            vm.artifacts / "state-red")
            assert red_after[HTTPS_STATE] == hoststate.SILENT, red_after[HTTPS_STATE]
            with pytest.raises(hoststate.StateChanged, match=re.escape(HTTPS_STATE)):
                hoststate.check(red_diff, vm.artifacts / "state-red", hoststate.silent_ports(red_after))

            green = speed.for_apply(vm.levers, GREEN_LEVERS)
            summary.notes += [f"GREEN's apply: {line}" for line in speed.risks_added(vm.levers, green)]
            with summary.phase("GREEN: apply the repository as it is (Mitogen, one process)", sut=True):
                vm.apply(levers=green)
            with summary.phase("GREEN: state before the reboot", sut=True):
                green_before = vm.capture_state("green-before-reboot").state
            with summary.phase("GREEN: reboot", sut=True):
                vm.reboot()
            with summary.phase("GREEN: verify (must pass)", sut=True):
                vm.verify(label="verify-green")
            # No false alarm: GREEN's reboot changes nothing the state diff would fail on.
            with summary.phase("GREEN: state diff (must be clean)", sut=True):
                green_after = vm.capture_state("green-after-reboot", expect=green_before).state
                green_diff = hoststate.record(green_before, green_after, vm.profile.reboot_diff_allow,
                                              vm.artifacts / "state")
                hoststate.check(green_diff, vm.artifacts / "state", hoststate.silent_ports(green_after))
        summary.finish("pass")
    except BaseException:
        summary.finish("fail")
        raise
    finally:
        log.info(f"summary:\n{summary.table()}\nsummary file: {summary.write(out)}")
