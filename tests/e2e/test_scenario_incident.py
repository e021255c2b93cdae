"""The 2026-06-17 incident as a client on askari's WAN sees it: RED then GREEN, one scenario run.

askari and the peer of ``scenarios/offsite-peer.yml`` boot once. RED: askari is applied with
the container-forward fix switched off and rebooted for real; from the peer, askari's 443 must
then be dead at askari's own address, and only the incident's checks may fail (the route, the
closed port and SSH still hold), with the forward chain pure drop in the evidence. GREEN: the
repository as it is, another real reboot, and every check of the peer's suite must pass.

On demand only (two VMs, 20–40 minutes under TCG): ``nox -s e2e_scenario``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import log, paths, report, scenario_run, signals
from harness.errors import VerificationFailed
from harness.evidence import forward_chain_is_pure_drop
from harness.run import Keep
from harness.state import new_run_id
from harness.summary import Summary

pytestmark = pytest.mark.scenario

RED_OVERLAY = paths.OVERRIDES_DIR / "askari-red.yml"
DEADLINE = 3600.0
PORT_CHECK = "test_https_answers_at_askaris_address"
# What the incident breaks from the peer, and the only checks it may break.
INCIDENT_CHECKS = {
    PORT_CHECK,
    "test_http_answers_at_askaris_address",
    "test_the_peer_is_served_the_tier_issuers_certificate",
}


def failed(junit: Path) -> dict[str, str]:
    """test function name → message of each failed or errored check."""
    _counts, checks = report.read_junit(junit)
    return {check.name.split("::")[-1].split("[")[0]: check.message for check in checks}


def test_the_peer_sees_the_incident_red_then_green() -> None:
    options = scenario_run.ScenarioOptions(
        name="offsite-peer", certs="internal", keep=Keep.NEVER, deadline=DEADLINE, idempotence=False
    )
    summary = Summary(run_id=new_run_id(), host="offsite-peer", tier="internal")
    out = paths.run_artifacts("offsite-peer", "internal", summary.run_id)
    try:
        with signals.cancellable(DEADLINE), scenario_run.booted(options, summary) as (run, scenario, vms):
            askari, suite = vms["askari"], scenario.suites[0]
            with summary.phase("RED: apply askari without the container-forward drop-in", sut=True):
                askari.apply((RED_OVERLAY,))
            with summary.phase("RED: reboot askari", sut=True):
                askari.reboot()
            with summary.phase("RED: peer suite must fail", sut=True), pytest.raises(VerificationFailed):
                scenario_run.run_cross_suite(run, scenario, suite, vms, "verify-red")
            found = failed(out / "scenario" / f"junit-verify-red-{suite.path.name}.xml")
            assert PORT_CHECK in found, f"RED failed, but not on the peer's probe of 443: {found}"
            assert "to answer from the peer" in found[PORT_CHECK], found[PORT_CHECK]
            assert "though it answers inside the guest" in found[PORT_CHECK], found[PORT_CHECK]
            assert set(found) <= INCIDENT_CHECKS, f"RED broke more than the incident: {found}"
            bundle = askari.collect_evidence(reason="RED half: failure expected", label="evidence-red")
            ruleset = (bundle / "nft-ruleset.txt").read_text(encoding="utf-8")
            assert forward_chain_is_pure_drop(ruleset), f"forward chain not pure drop:\n{ruleset}"
            assert "peer: connected" in (bundle / "lan-wan.log").read_text(encoding="utf-8")

            with summary.phase("GREEN: apply askari as the repository is", sut=True):
                askari.apply()
            with summary.phase("GREEN: reboot askari", sut=True):
                askari.reboot()
            with summary.phase("GREEN: the peer's suite (must pass)", sut=True):
                scenario_run.run_cross_suite(run, scenario, suite, vms, "verify-green")
        summary.finish("pass")
    except BaseException:
        summary.finish("fail")
        raise
    finally:
        log.info(f"summary:\n{summary.table()}\nsummary file: {summary.write(out)}")
