"""The bench's picture: one horizontal bar per run, its phases stacked, as a plain SVG.

Hand-written SVG rather than matplotlib: a dozen rectangles do not justify a plotting stack in
the venv, and the file diffs as text.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

# Phases in the order a cycle runs them; anything else is drawn after, in the order first seen.
ORDER = (
    "preflight",
    "image",
    "boot",
    "apply",
    "verify-before-reboot",
    "state-before-reboot",
    "reboot",
    "verify",
    "state-diff",
    "idempotence",
)
COLOURS = (
    "#9e9e9e",
    "#bdbdbd",
    "#4e79a7",
    "#f28e2b",
    "#76b7b2",
    "#b07aa1",
    "#e15759",
    "#59a14f",
    "#edc948",
    "#ff9da7",
    "#9c755f",
    "#86bcb6",
)
LABEL_W, BAR_H, GAP, WIDTH, TOP = 190, 26, 12, 1000, 40


def phase_order(rows: list[tuple[str, dict[str, float]]]) -> list[str]:
    seen = [p for p in ORDER if any(p in phases for _, phases in rows)]
    for _, phases in rows:
        seen += [p for p in phases if p not in seen]
    return seen


def stacked_bars(rows: list[tuple[str, dict[str, float]]], title: str) -> str:
    """``rows``: (label, phase → seconds). Bars share one scale: the longest row fills the width."""
    names = phase_order(rows)
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
    longest = max((sum(p.values()) for _, p in rows), default=0.0) or 1.0
    scale = (WIDTH - LABEL_W - 80) / longest
    legend_y = TOP + len(rows) * (BAR_H + GAP) + 10
    height = legend_y + 20 * ((len(names) + 3) // 4) + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for row, (label, phases) in enumerate(rows):
        y, x = TOP + row * (BAR_H + GAP), float(LABEL_W)
        out.append(f'<text x="10" y="{y + BAR_H * 0.68:.0f}">{escape(label)}</text>')
        for name in names:
            seconds = phases.get(name, 0.0)
            if seconds <= 0:
                continue
            w = seconds * scale
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{colour[name]}">'
                f"<title>{escape(name)}: {seconds:.0f} s</title></rect>"
            )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + BAR_H * 0.68:.0f}">{sum(phases.values()):.0f} s</text>')
    for i, name in enumerate(names):
        lx, ly = 10 + (i % 4) * 245, legend_y + (i // 4) * 20
        out.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colour[name]}"/>')
        out.append(f'<text x="{lx + 18}" y="{ly + 11}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
