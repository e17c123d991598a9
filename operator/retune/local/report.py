"""The HTML report of a local run, one self-contained file that works offline.

What it shows: score against evaluations and against USD (the seed, which is the stable
policy in a local run, and the example's baselines as reference lines), the winner's
subscores beside the seed's, the archive as a map, the validation verdict and its numbers,
spend per model tier, and the winning diff beside the winning program.

Why plotly: its Python package ships plotly.js itself, so the whole library is inlined
into the page (``get_plotlyjs``) and the report needs no network to open, unlike Vega-Lite
or Bokeh pages, which load their JavaScript from a CDN by default; the charts are
interactive (hover names the candidate behind every point, zoom into a crowded region),
and axes, ticks, legends and colour scales come from a library used across the field
rather than from hand-placed SVG. The price is size: plotly.js adds about 4.6 MiB to each
report.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Iterator

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from retune.local.references import ReferenceLine, References
from retune.local.report_figures import (
    archive_figure,
    score_figure,
    spend_figure,
    subscore_figure,
)
from retune.search.archive import Archive
from retune.search.state import EngineState
from retune.search.validation import ValidationReport

# No plotly logo link, and charts that follow the width of their box.
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.9em; min-width: 9em; }
.card b { display: block; font-size: 1.35em; }
.card span { color: #666; font-size: 0.85em; }
.pass { color: #1a7f37; } .fail { color: #c62828; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1em; }
.grid > div { border: 1px solid #eee; border-radius: 6px; padding: 0.3em; min-width: 0; }
.grid > .wide { grid-column: 1 / -1; }
.note { color: #666; font-size: 0.9em; margin: 0.4em 0.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 2px 12px 2px 0; text-align: left; vertical-align: top; }
th { color: #555; font-weight: normal; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
.code { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; }
.code > div { min-width: 0; }
pre { background: #f6f8fa; padding: 0.8em; font-size: 12.5px; line-height: 1.45;
      white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; border-radius: 6px; }
pre .l { display: block; }
pre .add { background: #e6ffed; } pre .del { background: #ffeef0; }
pre .add mark { background: #acf2bd; } pre .del mark { background: #fdb8c0; }
pre .hunk { color: #6f42c1; } pre .meta { color: #666; font-weight: bold; }
"""


def render_report(
    state: EngineState,
    title: str,
    result: dict[str, object],
    *,
    references: References | None = None,
    min_improvement: float | None = None,
) -> str:
    """The report page for a finished run: ``result`` is result.json's content,
    ``references`` the baselines to draw, ``min_improvement`` what validation required."""
    references = references or References()
    archive = Archive(state.archive)
    seed, best = state.seed_elite, state.best
    seed_line = ReferenceLine("seed (the stable policy)", seed.score) if seed else None
    validation = result.get("validation")
    report = ValidationReport.model_validate(validation) if validation else None
    figures = [
        _figure(
            "score-evaluations",
            score_figure(
                state.history, lambda p: p.evaluations, "evaluations", seed_line,
                references.baselines,
            ),
            wide=True,
        ),
        _usd_figure(state, seed_line, references),
        _figure("subscores", subscore_figure(best, seed) if best and seed else None,
                "no subscores reported by both the seed and the winner"),
        _figure("archive", archive_figure(archive, best, seed), "the archive was not formed yet"),
        _figure("spend", spend_figure(state.ledger.models),
                "no model calls: the built-in mutator made every edit, at no cost"),
    ]  # fmt: skip
    note = f'<p class="note">{html.escape(references.note)}</p>' if references.note else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>retune report: {html.escape(title)}</title>
<style>{_STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>retune: {html.escape(title)}</h1>
{_cards(result, report)}
<div class="grid">{"".join(figures)}</div>
{note}
<h2>Validation on held-out seeds</h2>
{_validation(report, min_improvement)}
<h2>Winning policy</h2>
{_code(seed.code if seed else "", best.code if best else "")}
<h2>Run details</h2>
<table>{_details(result)}</table>
</body></html>
"""


def _figure(name: str, figure: go.Figure | None, missing: str = "", *, wide: bool = False) -> str:
    """A chart's box in the grid (the whole row when ``wide``), or ``missing`` in its place."""
    css = ' class="wide"' if wide else ""
    if figure is None:
        return f'<div{css}><p class="note">{html.escape(missing)}</p></div>'
    div = figure.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"plot-{name}", config=_PLOT_CONFIG
    )
    return f"<div{css}>{div}</div>"


def _usd_figure(state: EngineState, seed_line: ReferenceLine | None, references: References) -> str:
    if not any(p.usd for p in state.history):
        return _figure(
            "score-usd",
            None,
            "score against USD: nothing was spent (the built-in mutator makes no model "
            "calls), so every candidate sits at $0",
            wide=True,
        )
    figure = score_figure(
        state.history, lambda p: p.usd, "USD", seed_line, references.baselines, x_prefix="$"
    )
    return _figure("score-usd", figure, wide=True)


def _number(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _cards(result: dict[str, object], report: ValidationReport | None) -> str:
    """The headline numbers; the free start's evaluations (``spec.search.freeStart``),
    beside the search's, and whether the best is its."""
    improvement = result.get("improvement")
    verdict = (
        '<b class="pass">passed</b>'
        if report and report.passed
        else '<b class="fail">failed</b>'
        if report
        else "<b>not run</b>"
    )
    free = result.get("free_start_evaluations")
    evaluations = _number(result.get("evaluations"))
    if isinstance(free, int) and free:
        evaluations += f" + {free} free"
    found_free = result.get("best_from_free_start") is True
    cards = [
        (_number(result.get("seed_score")), "seed score"),
        (
            _number(result.get("best_score")),
            "best score (the free start's)" if found_free else "best score",
        ),
        (f"{improvement:+.1%}" if isinstance(improvement, float) else "-", "over the seed"),
        (evaluations, "evaluations"),
        (f"${result.get('cost_usd', 0.0):.4f}", "spent"),
        (_number(result.get("stop_reason")), "stopped because"),
    ]
    items = "".join(
        f'<div class="card"><b>{value}</b><span>{label}</span></div>' for value, label in cards
    )
    return (
        f'<div class="cards">{items}<div class="card">{verdict}<span>validation</span></div></div>'
    )


def _validation(report: ValidationReport | None, min_improvement: float | None) -> str:
    if report is None:
        return '<p class="note">not run: the seed is still the best policy.</p>'
    required = (
        f" (required: at least {min_improvement:+.1%})" if min_improvement is not None else ""
    )
    improvement = f"{report.improvement:+.2%}" if report.improvement is not None else "-"
    verdict = (
        '<b class="pass">passed</b>: the winner may become a revision'
        if report.passed
        else '<b class="fail">failed</b>: the stable policy stays'
    )
    rows = [
        ("winner", _number(report.candidate_score)),
        ("stable policy", _number(report.stable_score)),
        ("improvement", improvement + required),
    ]
    table = "".join(f'<tr><th>{k}</th><td class="num">{v}</td></tr>' for k, v in rows)
    subscores = "".join(
        f'<tr><th>{html.escape(name)}</th><td class="num">{ours:.4f}</td>'
        f'<td class="num">{theirs:.4f}</td><td class="num">{ours - theirs:+.4f}</td></tr>'
        for name, (ours, theirs) in report.subscores.items()
    )
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in report.reasons)
    return (
        f"<p>{verdict}.</p><table>{table}</table>"
        + (
            "<table><tr><th>subscore</th><th>winner</th><th>stable</th><th>difference</th></tr>"
            f"{subscores}</table>"
            if subscores
            else ""
        )
        + (f"<ul>{reasons}</ul>" if reasons else "")
    )


def _code(seed: str, best: str) -> str:
    if not best or best == seed:
        return '<p class="note">the seed is still the best policy.</p>'
    diff = "".join(_diff_lines(seed, best))
    program = "".join(_line(line, "", "") for line in best.splitlines())
    return (
        '<div class="code">'
        f"<div><h3>Diff against the seed</h3><pre>{diff}</pre></div>"
        f"<div><h3>best_policy.py</h3><pre>{program}</pre></div></div>"
    )


def _line(text: str, css: str, body: str) -> str:
    """One code line that wraps under itself: continuation rows indent past the line's own
    indentation, so a long wrapped expression still reads as one statement."""
    indent = len(text) - len(text.lstrip()) + 4
    style = f"padding-left:{indent}ch;text-indent:-{indent}ch"
    return f'<span class="l {css}" style="{style}">{body or html.escape(text) or " "}</span>'


def _diff_lines(seed: str, best: str) -> Iterator[str]:
    """A unified diff as HTML: removed and added lines coloured, and within a changed pair
    of lines the changed words marked."""
    lines = list(
        difflib.unified_diff(
            seed.splitlines(), best.splitlines(), "seed_policy.py", "best_policy.py", lineterm=""
        )
    )
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("---", "+++")):
            yield _line(line, "meta", "")
        elif line.startswith("@@"):
            yield _line(line, "hunk", "")
        elif line.startswith("-"):
            removed = [line]
            while i + 1 < len(lines) and lines[i + 1].startswith("-"):
                i += 1
                removed.append(lines[i])
            added = []
            while i + 1 < len(lines) and lines[i + 1].startswith("+"):
                i += 1
                added.append(lines[i])
            pairs = min(len(removed), len(added))
            for k, old in enumerate(removed):
                yield _line(old, "del", _marked(old, added[k], 0) if k < pairs else "")
            for k, new in enumerate(added):
                yield _line(new, "add", _marked(removed[k], new, 1) if k < pairs else "")
        elif line.startswith("+"):
            yield _line(line, "add", "")
        else:
            yield _line(line, "", "")
        i += 1


def _marked(old: str, new: str, side: int) -> str:
    """``old`` (side 0) or ``new`` (side 1) escaped, the words that differ in a <mark>."""
    a, b = _TOKEN.findall(old[1:]), _TOKEN.findall(new[1:])
    tokens = (a, b)[side]
    out = [html.escape((old, new)[side][0])]
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        start, end = (i1, i2) if side == 0 else (j1, j2)
        text = html.escape("".join(tokens[start:end]))
        out.append(text if tag == "equal" or not text else f"<mark>{text}</mark>")
    return "".join(out)


def _plain(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _details(result: dict[str, object]) -> str:
    return "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(_plain(value))}</td></tr>"
        for key, value in result.items()
        if not isinstance(value, dict)
    )
