"""How the side-by-side benchmark counts retune's failed evaluations from its history, and
what cost ratio it gives a score retune reached for free."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from retune.search.state import HistoryPoint
from tests.llm_server import REPO

sys.path.insert(0, str(REPO / "bench"))
from peer_runs import Run, failed_evaluations
from vs_peers import FULL, missing_sides, recorded_runs, report, summarize


def point(
    index: int, evaluations: int, failure: str | None, score: float | None = None
) -> HistoryPoint:
    return HistoryPoint(
        index=index, evaluations=evaluations, score=score, best=0.5, usd=0.0, failure=failure
    )


def test_only_evaluations_that_gave_no_score_are_failures() -> None:
    history = [
        point(0, 1, None, 0.5),  # the seed
        point(1, 2, "cascade"),  # scored at the quick stage, too low to go on
        point(2, 3, "no-op"),  # scored at the quick stage exactly as its parent
        point(3, 3, "duplicate"),  # never evaluated
        point(4, 4, "PolicyError: priority() raised ZeroDivisionError"),
        point(5, 5, "Timeout"),
        point(6, 5, "mutation failed: budget"),  # never evaluated
    ]
    assert failed_evaluations(history) == 2


def run(framework: str, seed: int, points: list[tuple[float, float]]) -> Run:
    return Run(
        framework=framework,
        problem="p",
        seed=seed,
        seed_score=0.5,
        best_score=max(score for _, score in points),
        usd=max(usd for usd, _ in points),
        own_usd=None,
        tokens={},
        calls=1,
        no_program_calls=0,
        no_program_usd=0.0,
        evaluations=len(points),
        failed_evaluations=0,
        wall_seconds=1.0,
        stop="evaluations",
        points=[(usd, usd, score) for usd, score in points],
    )


def ratios(retune: list[tuple[float, float]], peer: list[tuple[float, float]]) -> float | None:
    runs = [run("retune", 0, retune), run("openevolve", 0, peer)]
    _, comparisons = summarize("p", runs, ["openevolve"], ["retune"])
    return comparisons[0].cost_ratio


def test_a_score_reached_before_any_paid_call_is_an_infinite_ratio_not_a_free_draw() -> None:
    peer = [(0.0, 0.5), (0.004, 0.8)]
    assert ratios([(0.0, 0.5), (0.002, 0.8)], peer) == 2.0
    assert ratios([(0.0, 0.5), (0.0, 0.81), (0.01, 0.9)], peer) == math.inf
    assert ratios([(0.0, 0.5), (0.01, 0.7)], peer) == 0.0, "never reached"
    assert ratios([(0.0, 0.5)], [(0.0, 0.5)]) is None, "the seed scores it: free for both"


def test_recorded_runs_missing_a_side_on_a_problem_are_named_before_any_report() -> None:
    peers_only = [run("openevolve", 0, [(0.01, 0.6)]), run("levi", 0, [(0.02, 0.6)])]
    assert missing_sides(peers_only) == ["p has no retune run"]
    assert missing_sides([run("retune", 0, [(0.01, 0.6)])]) == ["p has no peer run"]
    assert missing_sides([]) == ["no runs"]
    both = [*peers_only, run("retune", 1, [(0.01, 0.7)])]
    assert missing_sides(both) == []


def test_recorded_runs_join_work_dirs_and_reports_and_refuse_a_run_recorded_twice(
    tmp_path: Path,
) -> None:
    peers = tmp_path / "runs.json"  # a --work-dir's: a list
    peers.write_text(json.dumps([asdict(run("openevolve", 0, [(0.01, 0.6)]))]))
    reported = tmp_path / "vs_peers.json"  # a report's: its runs
    reported.write_text(json.dumps({"runs": [asdict(run("retune", 0, [(0.002, 0.7)]))]}))
    joined = recorded_runs([peers, reported])
    assert [(r.framework, r.seed) for r in joined] == [("openevolve", 0), ("retune", 0)]
    assert joined[1].points == [(0.002, 0.002, 0.7)], "points are tuples again"
    assert missing_sides(joined) == []
    with pytest.raises(SystemExit, match="openevolve on p seed 0 is recorded in both"):
        recorded_runs([peers, reported, peers])
    stray = tmp_path / "stray.json"  # a record from something else is named, with its file
    stray.write_text(json.dumps([{"framework": "levi", "seed": 0}]))
    with pytest.raises(SystemExit, match=r"stray.json: record 0 is not a run record"):
        recorded_runs([stray])
    stray.write_text(json.dumps({"meta": {}}))
    with pytest.raises(SystemExit, match=r"stray.json: neither a runs.json list"):
        recorded_runs([stray])
    with pytest.raises(SystemExit, match="cannot read recorded runs"):
        recorded_runs([tmp_path / "absent.json"])


def test_a_peer_not_run_on_one_problem_is_named_and_left_out_of_that_problem_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on_p = [run("openevolve", 0, [(0.01, 0.6)]), run("retune", 0, [(0.002, 0.7)])]
    on_q = [replace(r, problem="q") for r in [*on_p, run("levi", 0, [(0.03, 0.65)])]]
    args = argparse.Namespace(results_dir=tmp_path, quick=False)
    report([*on_p, *on_q], FULL, ["openevolve", "levi"], ["retune"], args, wall_minutes=None)
    markdown = (tmp_path / "vs_peers.md").read_text()
    assert "Not run, so not compared (nor in the last line's minimum): LEVI on p." in markdown
    assert "| p | retune | 0.7000 | 0.0020 | 0.0020 | not run |" in markdown
    reported = json.loads((tmp_path / "vs_peers.json").read_text())
    # the peers first, retune after, whatever order the runs were recorded in
    assert [(f["problem"], f["framework"]) for f in reported["frameworks"]] == [
        ("p", "openevolve"),
        ("p", "retune"),
        ("q", "openevolve"),
        ("q", "levi"),
        ("q", "retune"),
    ]
    compared = reported["comparisons"]
    assert [(c["problem"], c["peer"]) for c in compared] == [
        ("p", "openevolve"),
        ("q", "openevolve"),
        ("q", "levi"),
    ]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        last == "min_cost_ratio_openevolve=5.000 min_cost_ratio_levi=15.000 min_score_delta=0.0500"
    )


def test_summarize_lists_the_peers_before_retune_whatever_order_it_is_given() -> None:
    runs = [
        run("retune", 0, [(0.01, 0.7)]),
        run("gepa", 0, [(0.02, 0.6)]),
        run("openevolve", 0, [(0.03, 0.6)]),
    ]
    frameworks, _ = summarize("p", runs, ["gepa", "openevolve"], ["retune"])
    assert [f.framework for f in frameworks] == ["openevolve", "gepa", "retune"]
