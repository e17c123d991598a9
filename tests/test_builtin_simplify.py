"""Neutral simplifications once a search refines: a no-op child smaller than its parent is
evaluated in full and, scoring the same, takes its parent's place; and the two refining
edits that make such steps (dropping a clause, answering another choice under a
threshold)."""

from __future__ import annotations

import ast
import random
from concurrent.futures import Future
from pathlib import Path

import pytest

from retune.evaluate.contract import (
    EvaluationOutcome,
    EvaluationResult,
    EvaluationTask,
)
from retune.search.archive import Archive, Elite
from retune.search.config import EngineConfig
from retune.search.edits import REFINE_EDITS, find_function, finish
from retune.search.engine import Engine
from retune.search.ledger import Budget
from retune.search.mutation import DuplicateCheck, MutationRequest, MutationResult
from retune.search.program import normalised_hash, program_size
from retune.search.state import EngineState
from retune.store.file import FileStore

SEED = "def f(x, y):\n    if x > 3:\n        return x - 1.5\n    return y + 0.5\n"
# The seed's child, with a clause that never decides (``x`` is never None) ...
PARENT = SEED.replace("x > 3:", "x > 3 or x is None:").replace("1.5", "6.5")
# ... the same child without it, and with one more such clause.
SMALLER = PARENT.replace(" or x is None", "")
LARGER = PARENT.replace(" or x is None", " or x is None or y is None")


class ConstantsOnly:
    """Scores a program by its numeric constants alone (their closeness to 7), so
    clauses without numbers change nothing; reads the code, never runs it."""

    def __init__(self) -> None:
        self.full: list[str] = []

    def submit(self, task: EvaluationTask) -> Future[EvaluationOutcome]:
        if task.stage == "full":
            self.full.append(task.policy_code)
        constants = [
            float(n.value)
            for n in ast.walk(ast.parse(task.policy_code))
            if isinstance(n, ast.Constant) and type(n.value) in (int, float)
        ]
        score = -sum(abs(c - 7.0) for c in constants) / len(constants)
        future: Future[EvaluationOutcome] = Future()
        future.set_result(
            EvaluationOutcome(result=EvaluationResult(score=score, subscores={"a": score}))
        )
        return future


class Children:
    """PARENT from the seed; from PARENT, LARGER then SMALLER (both decide as it does).
    Other requests fail, which spends no evaluation."""

    concurrency = 1

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        order = {SEED: [PARENT], PARENT: [LARGER, SMALLER]}.get(request.parent_code, [])
        for code in order:
            if not is_duplicate(code):
                return MutationResult(code=code)
        return MutationResult(failure="nothing new")


def run(tmp_path: Path, explore: int | None) -> tuple[EngineState, ConstantsOnly]:
    executor = ConstantsOnly()
    config = EngineConfig(
        seed=1,
        budget=Budget(max_evaluations=4),
        cells=4,
        initial_population=2,
        window=1,
        explore=explore,
    )
    engine = Engine(
        config,
        seed_code=SEED,
        mutator=Children(),
        executor=executor,
        store=FileStore(tmp_path / "ck"),
    )
    return engine.run(), executor


def test_a_smaller_no_op_is_scored_in_full_and_becomes_the_best(tmp_path: Path) -> None:
    state, executor = run(tmp_path, explore=0)
    failures = [h.failure for h in state.history if not (h.failure or "").startswith("mutation")]
    # LARGER decides as its parent: a no-op; SMALLER too, but it is evaluated in full.
    assert failures == [None, None, "no-op", None]
    assert executor.full == [SEED, PARENT, SMALLER]
    assert state.best is not None and state.best.code == SMALLER
    archived = {normalised_hash(e.code) for e in Archive(state.archive).elites()}
    assert normalised_hash(SMALLER) in archived


def test_before_explore_the_first_of_equal_programs_stays_the_best(tmp_path: Path) -> None:
    state, executor = run(tmp_path, explore=None)
    assert executor.full == [SEED, PARENT, LARGER, SMALLER]
    assert state.best is not None and state.best.code == PARENT


def elite(index: int, code: str, score: float) -> Elite:
    return Elite(index=index, code=code, code_hash=normalised_hash(code), score=score)


@pytest.mark.parametrize("ties_to_smaller", [False, True])
def test_a_tie_goes_to_the_smaller_program_only_when_asked(ties_to_smaller: bool) -> None:
    archive = Archive.empty(["loops"], ["a"], cells=1)
    archive.insert(elite(0, PARENT, 1.0))
    archive.freeze(random.Random(0))
    assert archive.insert(elite(1, LARGER, 1.0), ties_to_smaller=True) is False
    kept = archive.insert(elite(2, SMALLER, 1.0), ties_to_smaller=ties_to_smaller)
    assert kept is ties_to_smaller
    assert [e.index for e in archive.elites()] == [2 if ties_to_smaller else 0]


def edited(code: str, name: str, seed: int) -> tuple[str | None, str | None]:
    (edit,) = [e for e in REFINE_EDITS if e.__name__ == name][:1]
    tree = ast.parse(code)
    function = find_function(tree, "decide")
    assert function is not None
    note = edit(function, random.Random(seed))
    return (finish(tree) if note else None), note


CHOICES = (
    "def decide(slack, spot):\n"
    "    if slack < 2.0 or spot > 2:\n"
    "        return 2\n"
    "    if spot > 0.5:\n"
    "        return 1\n"
    "    return 0\n"
)


def test_dropping_a_clause_leaves_one_operand_and_a_smaller_program() -> None:
    results = {edited(CHOICES, "_drop_operand", seed)[0] for seed in range(20)}
    assert results == {
        CHOICES.replace("slack < 2.0 or ", ""),
        CHOICES.replace(" or spot > 2", ""),
    }
    assert all(r is not None and program_size(r) < program_size(CHOICES) for r in results)


def test_a_conditional_answer_answers_another_of_the_functions_choices() -> None:
    answers = set()
    for seed in range(40):
        code, note = edited(CHOICES, "_conditional_answer", seed)
        assert code is not None and note is not None
        function = find_function(ast.parse(code), "decide")
        assert function is not None
        (changed,) = [
            n
            for n in ast.walk(function)
            if isinstance(n, ast.Return) and isinstance(n.value, ast.IfExp)
        ]
        assert isinstance(changed.value, ast.IfExp)
        body, orelse = changed.value.body, changed.value.orelse
        assert isinstance(body, ast.Constant) and isinstance(orelse, ast.Constant)
        assert body.value != orelse.value and {body.value, orelse.value} <= {0, 1, 2}
        answers.add((orelse.value, body.value))
    assert len(answers) >= 4, "every return is a site and every other answer a choice"


def test_no_conditional_answer_where_the_function_returns_expressions() -> None:
    code, note = edited(
        "def decide(x):\n    if x > 1:\n        return x * 2\n    return 0\n",
        "_conditional_answer",
        0,
    )
    assert code is None and note is None
