"""The HTML report of a local run: score against evaluations and cost, the archive as a
map, and the winning policy's diff against the seed. One self-contained file."""

from __future__ import annotations

import difflib
import html

import numpy as np

from retune.search.archive import Archive
from retune.search.state import EngineState


def render_report(state: EngineState, title: str, result: dict[str, object]) -> str:
    archive = Archive(state.archive)
    seed = state.seed_elite
    best = state.best
    diff = ""
    if seed and best:
        diff = _diff_html(seed.code, best.code)
    summary = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in result.items()
        if not isinstance(v, dict)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>retune report: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; }} th, td {{ padding: 2px 10px; text-align: left; }}
th {{ color: #555; font-weight: normal; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 13px; }}
.add {{ background: #e6ffed; }} .del {{ background: #ffeef0; }} .hunk {{ color: #6f42c1; }}
.charts {{ display: flex; gap: 2em; flex-wrap: wrap; }}
</style></head><body>
<h1>retune: {html.escape(title)}</h1>
<table>{summary}</table>
<div class="charts">
<div><h2>Score against evaluations</h2>{_score_chart(state)}</div>
<div><h2>Spend against evaluations</h2>{_cost_chart(state)}</div>
<div><h2>Archive</h2>{_archive_map(archive)}
<p>Each circle is a niche (a CVT cell, projected to 2-D); colour is the elite's score,
grey is empty. Coverage {archive.coverage:.0%}.</p></div>
</div>
<h2>Winning policy against the seed</h2>
<pre>{diff or "(the seed is still the best policy)"}</pre>
</body></html>
"""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _scale(
    values: list[float], low: float, high: float, out_low: float, out_high: float
) -> list[float]:
    span = (high - low) or 1.0
    return [out_low + (v - low) / span * (out_high - out_low) for v in values]


def _axes(
    width: int, height: int, pad: int, x_label: str, y_label: str, y_range: tuple[float, float]
) -> str:
    return (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - 10}" y2="{height - pad}" stroke="#999"/>'
        f'<line x1="{pad}" y1="10" x2="{pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="{width // 2}" y="{height - 8}" font-size="12" text-anchor="middle">{x_label}</text>'
        f'<text x="4" y="14" font-size="11">{y_range[1]:.4g}</text>'
        f'<text x="4" y="{height - pad}" font-size="11">{y_range[0]:.4g}</text>'
        f'<text x="{pad + 4}" y="24" font-size="12">{y_label}</text>'
    )


def _score_chart(state: EngineState, width: int = 480, height: int = 300, pad: int = 48) -> str:
    points = [(h.evaluations, h.score) for h in state.history if h.score is not None]
    bests = [(h.evaluations, h.best) for h in state.history if h.best is not None]
    if not points:
        return "<p>no scored candidates</p>"
    scores = [s for _, s in points]
    low, high = float(np.percentile(scores, 5)), max(scores)
    x_high = max(h.evaluations for h in state.history) or 1
    xs = _scale([float(e) for e, _ in points], 0, x_high, pad, width - 10)
    ys = _scale([max(low, s) for _, s in points], low, high, height - pad, 10)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#9ab"/>'
        for x, y in zip(xs, ys, strict=True)
    )
    bx = _scale([float(e) for e, _ in bests], 0, x_high, pad, width - 10)
    by = _scale([max(low, b) for _, b in bests], low, high, height - pad, 10)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(bx, by, strict=True))
    return (
        f'<svg width="{width}" height="{height}">{_axes(width, height, pad, "evaluations", "score", (low, high))}'
        f'{dots}<polyline points="{line}" fill="none" stroke="#d33" stroke-width="2"/></svg>'
    )


def _cost_chart(state: EngineState, width: int = 480, height: int = 300, pad: int = 48) -> str:
    if not state.history:
        return "<p>nothing evaluated</p>"
    x_high = max(h.evaluations for h in state.history) or 1
    high = max(h.usd for h in state.history) or 1e-9
    xs = _scale([float(h.evaluations) for h in state.history], 0, x_high, pad, width - 10)
    ys = _scale([h.usd for h in state.history], 0, high, height - pad, 10)
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (
        f'<svg width="{width}" height="{height}">{_axes(width, height, pad, "evaluations", "USD", (0, high))}'
        f'<polyline points="{line}" fill="none" stroke="#36c" stroke-width="2"/></svg>'
    )


def _archive_map(archive: Archive, size: int = 320) -> str:
    cells = archive.cell_map()
    if not cells:
        return "<p>the archive was not formed yet</p>"
    centroids = np.array([c for c, _ in cells])
    centred = centroids - centroids.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = (
        centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred[:, 0], np.zeros(len(centred))]
    )
    scores = [s for _, s in cells if s is not None]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    xs = _scale(
        projected[:, 0].tolist(),
        float(projected[:, 0].min()),
        float(projected[:, 0].max()),
        16,
        size - 16,
    )
    ys = _scale(
        projected[:, 1].tolist(),
        float(projected[:, 1].min()),
        float(projected[:, 1].max()),
        size - 16,
        16,
    )
    circles = []
    for (x, y), (_, score) in zip(zip(xs, ys, strict=True), cells, strict=True):
        if score is None:
            fill = "#ddd"
        else:
            t = (score - low) / ((high - low) or 1.0)
            fill = f"rgb({int(255 * t)},{int(80 + 60 * (1 - t))},{int(255 * (1 - t))})"
        label = "empty" if score is None else f"{score:.4f}"
        circles.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="{fill}"><title>{label}</title></circle>'
        )
    return f'<svg width="{size}" height="{size}">{"".join(circles)}</svg>'


def _diff_html(seed: str, best: str) -> str:
    lines = difflib.unified_diff(
        seed.splitlines(), best.splitlines(), "seed_policy.py", "best_policy.py", lineterm=""
    )
    out = []
    for line in lines:
        escaped = html.escape(line)
        if line.startswith("+") and not line.startswith("+++"):
            out.append(f'<span class="add">{escaped}</span>')
        elif line.startswith("-") and not line.startswith("---"):
            out.append(f'<span class="del">{escaped}</span>')
        elif line.startswith("@@"):
            out.append(f'<span class="hunk">{escaped}</span>')
        else:
            out.append(escaped)
    return "\n".join(out)
