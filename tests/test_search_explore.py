"""A search refines only after its first ``search.explore`` evaluations: below that
budget it is, draw for draw, the search that never refines, and the search the release
before ``explore`` ran.

The runs are ``retune run`` on examples/01 with test_cli_run.py's small trace, at the
largest budget an end-to-end scene gives a search (24 evaluations), so what the operator
does in a retune is pinned here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from retune.search.config import EXPLORE
from retune.search.state import EngineState, decode_state
from retune.spec import SearchSpec
from tests.test_cli_run import RETUNE, target  # noqa: F401 (the small-trace target fixture)

RETUNE_BUDGET = 24
NEVER = "100000"  # an explore no budget here reaches: the search never refines
BEFORE_EXPLORE = "87d9757c68a40453"
"""The trajectory digest of the search below at RETUNE_BUDGET, as the release before
``search.explore`` ran it (its engine, this evaluator and trace). A deliberate change to
what a small search does changes it: then re-run the end-to-end scenes on a real node,
whose retunes depend on it, before updating it."""


def search(small_target: Path, output: Path, explore: str | None, evaluations: int) -> EngineState:
    """examples/01 searched with ``search.explore`` set to ``explore`` (None: the
    default), seed 3."""
    text = small_target.read_text()
    if explore is not None:
        text = text.replace(
            "    mutator: builtin\n", f"    mutator: builtin\n    explore: {explore}\n"
        )
        assert f"explore: {explore}" in text
    changed = output.parent / f"{output.name}.yaml"
    changed.write_text(text)
    arguments = ["--seed", "3", "--max-evaluations", str(evaluations), "--quiet"]
    completed = subprocess.run(
        [*RETUNE, "run", str(changed), *arguments, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return decode_state((output / "checkpoint.retune").read_bytes())


def digest(trajectory: list[object]) -> str:
    text = json.dumps(trajectory, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trajectory(state: EngineState) -> list[object]:
    """Everything a run did, in order: each applied candidate's outcome, every program
    evaluated (by hash, in the order it was first seen), the best program and the counts
    of evaluations."""
    points = [p.model_dump(exclude={"usd"}) for p in state.history]
    seen = sorted(state.seen.items(), key=lambda item: item[1])
    best = state.best.code if state.best else None
    ledger = state.ledger
    return [points, seen, best, ledger.evaluations, ledger.quick_evaluations]


def test_the_default_explore_is_above_every_retune_budget() -> None:
    assert SearchSpec().explore == EXPLORE > RETUNE_BUDGET


def test_a_search_within_explore_is_the_one_that_never_refines(
    target: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    gated = search(target, tmp_path / "gated", None, RETUNE_BUDGET)
    never = search(target, tmp_path / "never", NEVER, RETUNE_BUDGET)
    assert trajectory(gated) == trajectory(never)
    assert digest(trajectory(gated)) == BEFORE_EXPLORE, "a retune-sized search changed"
    assert gated.ledger.evaluations == RETUNE_BUDGET
    assert not [p for p in gated.history if p.failure == "no-op"]


@pytest.mark.parametrize("explore", [8])
def test_past_explore_the_search_refines(
    target: Path,  # noqa: F811
    tmp_path: Path,
    explore: int,
) -> None:
    refining = search(target, tmp_path / "refining", str(explore), 40)
    never = search(target, tmp_path / "never", NEVER, 40)
    assert refining.history[:explore] == never.history[:explore]
    assert trajectory(refining) != trajectory(never)
