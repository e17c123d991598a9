"""The report's charts, as plotly figures: score against evaluations and against USD,
subscores of the winner and the seed, the archive map, and spend per model tier.

Scores below the axis (under the 5th percentile of the run's scores and every reference
line) are drawn as triangles on the axis floor, their true score in the hover text, and
failed evaluations as crosses there: neither is ever drawn as a score of zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import plotly.graph_objects as go

from retune.local.references import ReferenceLine
from retune.search.archive import Archive, Elite
from retune.search.ledger import ModelUsage
from retune.search.state import HistoryPoint

# Skipped candidates (never evaluated) and the cascade's early stops are not failures.
_NOT_FAILURES = ("cascade", "no-op", "duplicate", "mutation failed")
CANDIDATE = "#8da0b6"
BEST = "#d62728"
SEED = "#2c7a2c"
BASELINE_DASHES = ("dot", "dashdot", "longdash", "longdashdot", "dash")


def _layout(
    figure: go.Figure, title: str, x_title: str, y_title: str, *, legend_right: bool = False
) -> go.Figure:
    legend = (
        {"orientation": "v", "y": 1, "x": 1.01}
        if legend_right
        else {"orientation": "h", "y": -0.2, "x": 0}
    )
    figure.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        height=420,
        margin={"l": 70, "r": 20, "t": 50, "b": 60},
        legend=legend,
        hovermode="closest",
    )
    figure.update_xaxes(title_text=x_title, showline=True, linecolor="#999", ticks="outside")
    figure.update_yaxes(title_text=y_title, showline=True, linecolor="#999", ticks="outside")
    return figure


def score_range(scores: Sequence[float], references: Sequence[float]) -> tuple[float, float]:
    """The score axis: from the 5th percentile of ``scores`` (or the lowest reference line)
    to the highest of either, padded."""
    low = min([float(np.percentile(scores, 5)), *references])
    high = max([*scores, *references])
    pad = 0.06 * (high - low) or 0.05 * abs(high) or 0.05
    return low - pad, high + pad


def _failed(point: HistoryPoint) -> bool:
    return point.score is None and not (point.failure or "").startswith(_NOT_FAILURES)


def score_figure(
    history: Sequence[HistoryPoint],
    x_of: Callable[[HistoryPoint], float],
    x_title: str,
    seed: ReferenceLine | None,
    baselines: Sequence[ReferenceLine],
    *,
    x_prefix: str = "",
) -> go.Figure:
    """Every scored candidate and the best so far against ``x_of`` (evaluations or USD),
    with the seed and the baselines as horizontal reference lines."""
    figure = go.Figure()
    scored = [p for p in history if p.score is not None]
    references = [*([seed] if seed else []), *baselines]
    low, high = score_range(
        [p.score for p in scored if p.score is not None] or [0.0], [r.score for r in references]
    )
    xs = [x_of(p) for p in history] or [0.0]
    x_low, x_high = min(0.0, *xs), max(xs)  # both axes start at nothing spent
    for n, line in enumerate(references):
        is_seed = line is seed
        figure.add_trace(
            go.Scatter(
                x=[x_low, x_high],
                y=[line.score, line.score],
                mode="lines",
                name=f"{line.label}: {line.score:.4f}",
                line={
                    "color": SEED if is_seed else "#555",
                    "dash": "dash" if is_seed else BASELINE_DASHES[n % len(BASELINE_DASHES)],
                    "width": 2 if is_seed else 1.5,
                },
                hoverinfo="name",
            )
        )
    shown = [p for p in scored if p.score is not None and p.score >= low]
    below = [p for p in scored if p.score is not None and p.score < low]
    failed = [p for p in history if _failed(p)]
    figure.add_trace(
        go.Scatter(
            x=[x_of(p) for p in shown],
            y=[p.score for p in shown],
            mode="markers",
            name=f"candidate ({len(shown)})",
            marker={"color": CANDIDATE, "size": 6, "opacity": 0.8},
            customdata=[p.index for p in shown],
            hovertemplate="candidate %{customdata}<br>score %{y:.4f}<br>"
            + x_title
            + " %{x}<extra></extra>",
        )
    )
    floor = low + 0.01 * (high - low)
    for points, symbol, name, text in (
        (below, "triangle-down", "below the axis", lambda p: f"score {p.score:.4f}"),
        (failed, "x", "failed evaluation", lambda p: (p.failure or "")[:120]),
    ):
        if not points:
            continue
        figure.add_trace(
            go.Scatter(
                x=[x_of(p) for p in points],
                y=[floor] * len(points),
                mode="markers",
                name=f"{name} ({len(points)})",
                marker={"color": "#777", "size": 8, "symbol": symbol},
                customdata=[[p.index, text(p)] for p in points],
                hovertemplate="candidate %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
            )
        )
    bests = [p for p in history if p.best is not None]
    figure.add_trace(
        go.Scatter(
            x=[x_of(p) for p in bests],
            y=[p.best for p in bests],
            mode="lines",
            line={"color": BEST, "width": 2.5, "shape": "hv"},
            name="best so far",
            hovertemplate="best %{y:.4f}<extra></extra>",
        )
    )
    figure.update_yaxes(range=[low, high])
    figure.update_xaxes(rangemode="tozero", tickprefix=x_prefix)
    return _layout(figure, f"Score against {x_title}", x_title, "score", legend_right=True)


def subscore_figure(winner: Elite, seed: Elite) -> go.Figure | None:
    """Grouped bars of each subscore both programs reported, winner beside seed."""
    names = sorted(set(winner.subscores) & set(seed.subscores))
    if not names:
        return None
    figure = go.Figure()
    for label, elite, colour in (
        (f"seed (candidate {seed.index})", seed, SEED),
        (f"winner (candidate {winner.index})", winner, BEST),
    ):
        values = [elite.subscores[name] for name in names]
        figure.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=label,
                marker_color=colour,
                text=[f"{v:.4f}" for v in values],
                textposition="outside",
                hovertemplate="%{x}: %{y:.4f}<extra>" + label + "</extra>",
            )
        )
    top = max(max(winner.subscores[n], seed.subscores[n]) for n in names)
    bottom = min(0.0, *(min(winner.subscores[n], seed.subscores[n]) for n in names))
    figure.update_layout(barmode="group")
    figure.update_yaxes(range=[bottom, top * 1.12 if top > 0 else 1.0])
    return _layout(figure, "Subscores: winner against seed", "subscore", "value")


def archive_figure(archive: Archive, winner: Elite | None, seed: Elite | None) -> go.Figure | None:
    """Every archive cell's centroid projected onto the two principal axes of the
    descriptor space; filled cells coloured by their elite's score, empty ones hollow."""
    cells = archive.cell_map()
    if not cells:
        return None
    names = archive.state.structural + archive.state.behavioural
    centroids = np.array([c for c, _ in cells])
    centred = centroids - centroids.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    axes = min(2, vt.shape[0])
    projected = np.zeros((len(centred), 2))
    projected[:, :axes] = centred @ vt[:axes].T
    variance = singular**2 / max(float((singular**2).sum()), 1e-12)
    titles = [_axis_title(k, vt, variance, names) if k < axes else "" for k in range(2)]
    elites = archive.state.cells
    filled = [i for i in range(len(cells)) if i in elites]
    empty = [i for i in range(len(cells)) if i not in elites]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=projected[empty, 0],
            y=projected[empty, 1],
            mode="markers",
            name=f"empty cell ({len(empty)})",
            marker={"size": 11, "color": "rgba(0,0,0,0)", "line": {"color": "#bbb", "width": 1}},
            customdata=empty,
            hovertemplate="cell %{customdata}: empty<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=projected[filled, 0],
            y=projected[filled, 1],
            mode="markers",
            name=f"elite ({len(filled)})",
            marker={
                "size": 14,
                "color": [elites[i].score for i in filled],
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": "score"}},
                "line": {"color": "#333", "width": 0.5},
            },
            customdata=[[i, elites[i].index, elites[i].score] for i in filled],
            hovertemplate="cell %{customdata[0]}<br>candidate %{customdata[1]}"
            "<br>score %{customdata[2]:.4f}<extra></extra>",
        )
    )
    for elite, label, symbol in ((winner, "winner", "star"), (seed, "seed", "diamond")):
        cell = next((i for i in filled if elite and elites[i].index == elite.index), None)
        if cell is None:
            continue
        figure.add_trace(
            go.Scatter(
                x=[projected[cell, 0]],
                y=[projected[cell, 1]],
                mode="markers",
                name=f"{label} (cell {cell})",
                marker={"size": 22, "symbol": symbol, "color": "rgba(0,0,0,0)",
                        "line": {"color": BEST if label == "winner" else SEED, "width": 2.5}},
                hoverinfo="name",
            )
        )  # fmt: skip
    coverage = f"{archive.coverage:.0%}"
    return _layout(
        figure, f"Archive: {len(filled)} of {len(cells)} cells filled ({coverage})", *titles
    )


def _axis_title(k: int, vt: np.ndarray, variance: np.ndarray, names: list[str]) -> str:
    """A principal axis named by its heaviest descriptors, with their signed weights."""
    order = np.argsort(-np.abs(vt[k]))[:2]
    terms = " ".join(f"{vt[k, j]:+.2f} {names[j] if j < len(names) else j}" for j in order)
    return f"axis {k + 1} ({variance[k]:.0%}): {terms}"


def spend_figure(models: dict[str, ModelUsage]) -> go.Figure | None:
    """USD per model tier, with its calls and tokens in the hover text."""
    tiers = sorted(models)
    if not tiers:
        return None
    usage = [models[t] for t in tiers]
    figure = go.Figure(
        go.Bar(
            x=tiers,
            y=[u.usd for u in usage],
            marker_color="#1f77b4",
            text=[f"${u.usd:.4f}" for u in usage],
            textposition="outside",
            customdata=[
                [u.calls, u.failed_calls, u.prompt_tokens, u.completion_tokens] for u in usage
            ],
            hovertemplate="%{x}: $%{y:.5f}<br>%{customdata[0]} calls (%{customdata[1]} failed)"
            "<br>%{customdata[2]} prompt + %{customdata[3]} completion tokens<extra></extra>",
        )
    )
    figure.update_yaxes(rangemode="tozero", tickprefix="$")
    figure.update_layout(showlegend=False)
    return _layout(figure, "Spend per model tier", "model tier", "USD")
