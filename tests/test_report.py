"""The report's pieces without a browser: baselines only where comparable, low scores
never drawn as zeros, the diff escaped and marked."""

from __future__ import annotations

import json
from pathlib import Path

from retune.evaluate.contract import EvaluationContext
from retune.local.references import read_baselines
from retune.local.report import _cards, _diff_lines
from retune.local.report_figures import score_figure, score_range
from retune.search.state import HistoryPoint
from retune.signals.hardware import FINGERPRINT_KEY

CONTEXT = EvaluationContext(
    workload={"zipf_alpha": 0.9}, hardware={"node.kubernetes.io/instance-type": "m6i.xlarge"}
)


def write_baselines(directory: Path, context: EvaluationContext) -> None:
    document = {"context": context.model_dump(), "baselines": [{"policy": "LFU", "score": 0.47}]}
    (directory / "baselines.json").write_text(json.dumps(document))


def test_baselines_are_drawn_only_for_a_run_in_their_context(tmp_path: Path) -> None:
    assert read_baselines(tmp_path, CONTEXT).baselines == ()
    write_baselines(tmp_path, CONTEXT)
    # the labels retune derives from the hardware do not make a context another one
    derived = CONTEXT.model_copy(update={"hardware": {**CONTEXT.hardware, FINGERPRINT_KEY: "x"}})
    drawn = read_baselines(tmp_path, derived)
    assert [(line.label, line.score) for line in drawn.baselines] == [("LFU (baseline)", 0.47)]
    other = CONTEXT.model_copy(
        update={"hardware": {"node.kubernetes.io/instance-type": "m6i.large"}}
    )
    skipped = read_baselines(tmp_path, other)
    assert skipped.baselines == () and skipped.note and "hardware" in skipped.note
    (tmp_path / "baselines.json").write_text("{")
    assert "could not be read" in (read_baselines(tmp_path, CONTEXT).note or "")


def test_a_score_below_the_axis_sits_on_its_floor_not_at_zero() -> None:
    history = [
        HistoryPoint(index=i, evaluations=i + 1, score=0.5 + 0.001 * i, best=0.5 + 0.001 * i, usd=0)
        for i in range(40)
    ]
    history.append(HistoryPoint(index=40, evaluations=41, score=0.01, best=0.539, usd=0))
    low, high = score_range([p.score for p in history if p.score is not None], [])
    assert 0.45 < low < 0.5 < 0.539 < high
    figure = score_figure(history, lambda p: p.evaluations, "evaluations", None, [])
    below = next(t for t in figure.data if t.name.startswith("below the axis"))
    assert below.name == "below the axis (1)"
    assert low <= below.y[0] < 0.5 and "0.0100" in below.customdata[0][1]
    candidates = next(t for t in figure.data if t.name.startswith("candidate"))
    assert min(candidates.y) >= low
    assert tuple(figure.layout.yaxis.range) == (low, high)


def test_the_diff_is_escaped_and_marks_the_changed_words() -> None:
    seed = "def f(x):\n    return x < 1\n"
    best = "def f(x):\n    return x < 2 and x > 0\n"
    lines = "".join(_diff_lines(seed, best))
    assert "x &lt; <mark>2 and x &gt; 0</mark>" in lines.replace("<mark>2</mark><mark>", "<mark>2")
    assert 'class="l del"' in lines and 'class="l add"' in lines and "<script" not in lines


def test_the_cards_count_a_free_start_beside_the_search() -> None:
    result: dict[str, object] = {"best_score": 0.54, "evaluations": 600}
    assert "<b>600</b><span>evaluations" in _cards(result, None)
    free = _cards(result | {"free_start_evaluations": 200, "best_from_free_start": True}, None)
    assert "<b>600 + 200 free</b><span>evaluations" in free
    assert "<span>best score (the free start's)</span>" in free
