"""The bench's arithmetic and its picture (tests/bench/), without a VM."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.bench import bench
from tests.bench.chart import phase_order, stacked_bars

SVG = "{http://www.w3.org/2000/svg}"


def run(total: float, overhead: float, **phases: float) -> dict:
    return {"verdict": "pass", "total_s": total, "overhead_s": overhead, "phases": phases, "tasks": []}


def test_ratios_are_of_this_run_and_the_warm_loop_is_its_median() -> None:
    loops = [{"total_s": t, "phases": {}, "status": 0} for t in (150.0, 120.0, 400.0)]
    found = bench.ratios(run(1000, 10, apply=600), run(400, 12, apply=100), loops)
    assert found == {
        "fast_cold_over_baseline_cold": 0.4,
        "overhead_share_fast": 0.03,
        "overhead_share_baseline": 0.01,
        "warm_loop_over_baseline_cold": 0.15,
    }


def test_the_scoped_loop_is_its_own_median_beside_the_warm_loops() -> None:
    warm = [{"total_s": t, "phases": {}, "status": 0} for t in (150.0, 120.0, 400.0)]
    scoped = [{"total_s": t, "phases": {}, "status": 0, "tags": ["caddy"]} for t in (90.0, 100.0)]
    found = bench.ratios(run(1000, 10, apply=600), run(400, 12, apply=100), warm, scoped)
    assert found["warm_loop_over_baseline_cold"] == 0.15
    assert found["scoped_loop_over_baseline_cold"] == 0.095
    judged = bench.judged(found)["scoped_loop_over_baseline_cold"]
    assert judged == {"target": 0.15, "measured": 0.095, "met": True}


def test_targets_are_judged_not_asserted_and_a_missing_figure_is_unmet() -> None:
    judged = bench.judged({"fast_cold_over_baseline_cold": 0.6, "overhead_share_fast": 0.01})
    assert judged["fast_cold_over_baseline_cold"] == {"target": 0.5, "measured": 0.6, "met": False}
    assert judged["overhead_share_fast"]["met"] is True
    assert judged["warm_loop_over_baseline_cold"] == {"target": 0.15, "measured": None, "met": False}


def test_the_chart_draws_each_phase_in_proportion_and_names_it() -> None:
    rows = [
        ("baseline", {"boot": 100.0, "apply": 300.0}),
        ("fast", {"boot": 50.0, "apply": 50.0, "extra": 0}),
    ]
    root = ET.fromstring(stacked_bars(rows, "t"))
    rects = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    widths = {r.find(f"{SVG}title").text: float(r.get("width")) for r in rects}  # type: ignore[union-attr]
    assert set(widths) == {
        "boot: 100 s",
        "apply: 300 s",
        "boot: 50 s",
        "apply: 50 s",
    }  # a 0 s phase is not drawn
    assert abs(widths["apply: 300 s"] / widths["boot: 100 s"] - 3) < 0.01
    assert abs(widths["boot: 100 s"] / widths["boot: 50 s"] - 2) < 0.01
    legend = [t.text for t in root.iter(f"{SVG}text")]
    assert {"boot", "apply", "extra"} <= set(legend)


def test_phases_keep_the_cycles_order_then_the_rest_as_first_seen() -> None:
    rows = [("a", {"RED: apply": 1.0, "apply": 1.0, "boot": 1.0}), ("b", {"zzz": 1.0, "preflight": 1.0})]
    assert phase_order(rows) == ["preflight", "boot", "apply", "RED: apply", "zzz"]


def test_the_report_is_json_markdown_and_svg_and_never_overwrites(tmp_path: Path) -> None:
    data = {
        "day": "2026-12-03",
        "host": "askari",
        "revision": "0123456789abcdef",
        "command": "c",
        "controller": "n",
        "cpus": 2,
        "speed_index": {"boot_to_ssh_s": 50.0},
        "runs": {
            "baseline": run(1000, 10, apply=600),
            "fast": run(400, 12, apply=100),
            "warm": [{"total_s": 150, "phases": {"apply": 50, "reboot": 70, "verify": 30}, "status": 0}],
            "scoped": [{"total_s": 110, "phases": {"apply": 10, "reboot": 70, "verify": 30}, "status": 0}],
        },
    }
    data["targets"] = bench.judged(
        bench.ratios(*(data["runs"][name] for name in ("baseline", "fast", "warm", "scoped")))
    )
    first = bench.write_report(data, tmp_path)
    second = bench.write_report(data, tmp_path)
    assert [p.name for p in first] == ["2026-12-03-bench.json", "2026-12-03-bench.md", "2026-12-03-bench.svg"]
    assert second[0].name == "2026-12-03-bench-2.json"
    assert json.loads(first[0].read_text())["runs"]["fast"]["total_s"] == 400
    text = first[1].read_text()
    assert "![phases](2026-12-03-bench.svg)" in text
    assert "| fast_cold_over_baseline_cold ≤ 0.5 | 0.4 | yes |" in text
    assert "| warm inner loop 1 | pass | 150 s |" in text
    assert "| scoped loop (apply --tags caddy) 1 | pass | 110 s |" in text
    assert "| scoped_loop_over_baseline_cold ≤ 0.15 | 0.11 | yes |" in text
    ET.fromstring(first[2].read_text())


def test_the_run_id_is_found_in_what_up_and_cycle_print() -> None:
    up = "│ [    1.2s]   run afbec579: directory /var/lib/boma/runs/afbec579, artifacts /x\n"
    cycle = "[    0.0s] run 4f35180f: artifacts /work/main/artifacts/askari-internal-4f35180f\n"
    found = [bench.RUN_ID.search(text) for text in (up, cycle)]
    assert [m.group(1) for m in found if m] == ["afbec579", "4f35180f"]
