"""The search engine: plan (`planning.py`), mutate, evaluate (with a cascade), archive,
checkpoint.

An LLM search may begin with a free start (``spec.search.freeStart``): an engine of the
built-in mutator's edits, run to its own small budget before the search's first
candidate, with its own archive, random stream and state, kept inside the
search's checkpoint. Its best is the run's until the search beats it, and nothing else of
it reaches the search, which so plans, asks and spends exactly as it would without it.

Determinism with parallel work: candidates are numbered in plan order. Candidate ``i`` is
planned from the archive exactly as it stood after applying candidates ``< i - window + 1``,
results are applied strictly in index order, and duplicates are checked in index order.
So the run depends only on the seed, the window and what the mutator and evaluator return,
never on which worker finished first. Every applied candidate is checkpointed, so a killed
run resumes where it was and loses at most the work in flight.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from pydantic import BaseModel

from retune.evaluate.contract import (
    STAGE_FULL,
    STAGE_QUICK,
    EvaluationOutcome,
    EvaluationTask,
    Executor,
    FailureReason,
)
from retune.search.archive import Archive, Elite
from retune.search.cascade import RECENT_QUICK_SCORES, Verdict, verdict
from retune.search.config import EngineConfig
from retune.search.constants import record_trial
from retune.search.ledger import Budget, Ledger
from retune.search.mutation import (
    Mutator,
    MutatorRejected,
)
from retune.search.outcomes import elite_of, failure_of, smaller_at_same_score
from retune.search.planning import Planner
from retune.search.program import normalised_hash
from retune.search.state import (
    Candidate,
    EngineState,
    HistoryPoint,
    Origin,
    Stage,
    StopReason,
    decode_state,
    encode_state,
)
from retune.store.base import Store

log = logging.getLogger(__name__)


class Progress(BaseModel):
    evaluations: int  # of the search, or of its free start while that runs
    max_evaluations: int | None
    best_score: float | None
    seed_score: float | None
    usd: float
    coverage: float
    wall_seconds: float
    free_start: bool = False  # the free start is running: the counts are its own
    free_evaluations: int = 0  # evaluations the free start made


class EngineError(RuntimeError):
    """The search cannot go on (for example, the seed policy itself fails)."""


class SearchConfigError(EngineError):
    """The search cannot go on as configured; ``path`` names the spec field to fix."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class Engine:
    """Runs one search to its budget, checkpointing as it goes."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        seed_code: str,
        mutator: Mutator,
        executor: Executor,
        store: Store,
        ledger: Ledger | None = None,
        warm_programs: list[str] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        resume: bool = False,
        free_mutator: Mutator | None = None,
        outer: Engine | None = None,
    ) -> None:
        self.config = config
        self.seed_code = seed_code
        self.mutator = mutator
        self.executor = executor
        self.store = store
        self.on_progress = on_progress
        self.free_mutator = free_mutator  # writes the free start's programs
        self._outer = outer  # the search this engine is the free start of
        self.rng = random.Random(config.seed)
        self.state = self._initial_state(resume, warm_programs or [])
        self.archive = Archive(self.state.archive)
        self.ledger = ledger or Ledger(config.budget)
        if outer is None:  # a free start shares its search's ledger, restored already
            self.ledger.restore(self.state.ledger)
        self.planner = Planner(config, self.state, self.archive, self.rng, seed_code)
        self._futures: dict[Future[Any], tuple[int, Stage]] = {}
        self._last_tick = time.monotonic()

    # -- state -------------------------------------------------------------------------
    def _initial_state(self, resume: bool, warm_programs: list[str]) -> EngineState:
        """The checkpoint's state on a resume (with the warm programs it started with);
        else a fresh one. A free start's is in its search's state."""
        if self._outer is not None:
            document = None
            saved = self._outer.state.free_start
            if saved is not None:
                self._restore_rng(saved)
                return saved
        else:
            document = self.store.load() if resume else None
        if document is not None:
            try:
                state = decode_state(document)
            except (ValueError, zlib.error, RecursionError) as error:  # torn, foreign, old
                reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
                raise EngineError(
                    f"the checkpoint cannot be resumed ({reason}); start without --resume in "
                    "another output directory"
                ) from None
            if state.fingerprint != self.config.fingerprint:
                raise EngineError(
                    "the checkpoint belongs to a different target or configuration; "
                    "start without --resume or use another output directory"
                )
            self._restore_rng(state)
            return state
        archive = Archive.empty(self.config.structural, self.config.behavioural, self.config.cells)
        return EngineState(
            fingerprint=self.config.fingerprint,
            window=self.config.window,
            rng_state=[],
            archive=archive.state,
            warm_programs=list(warm_programs),
        )

    def _restore_rng(self, state: EngineState) -> None:
        version, internal, gauss = state.rng_state
        self.rng.setstate((version, tuple(internal), gauss))  # type: ignore[arg-type]

    def checkpoint(self) -> None:
        now = time.monotonic()
        self.ledger.add_wall_seconds(now - self._last_tick)
        self._last_tick = now
        if self._outer is not None:  # a free start is saved within its search's state
            self._keep_rng()
            self._outer._save()
            return
        self._save()

    def _keep_rng(self) -> None:
        version, internal, gauss = self.rng.getstate()
        self.state.rng_state = [version, list(internal), gauss]

    def _save(self) -> None:
        self._keep_rng()
        self.state.ledger = self.ledger.snapshot()
        self.store.save(encode_state(self.state))
        asking = (i for i, c in self.state.pending.items() if c.stage is Stage.PLANNED)
        self.ledger.checkpointed(frozenset(asking))

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> EngineState:
        """Search until a budget is reached; return the final state."""
        if self.state.stop_reason:
            return self.state
        self._run_free_start()
        mutations = ThreadPoolExecutor(max_workers=max(1, self.mutator.concurrency))
        try:
            self._restart_pending(mutations)
            self._top_up(mutations)
            while self.state.pending:
                if self._wall_time_exhausted():
                    self.state.stop_reason = StopReason.WALL_TIME
                    break
                done, _ = wait(list(self._futures), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: self._futures[f]):
                    index, stage = self._futures.pop(future)
                    self._on_finished(index, stage, future, mutations)
                self._check_in_order()
                while self._apply_next():
                    self._top_up(mutations)
                    self.checkpoint()
                    self._report()
            if self.state.stop_reason is None:
                self.state.stop_reason = self._budget_reason()
            self.checkpoint()
            self._report()
            return self.state
        finally:
            for future in self._futures:
                future.cancel()
            mutations.shutdown(wait=True, cancel_futures=True)

    def _run_free_start(self) -> None:
        """Run the free start to its end, unless there is none or it is over (a resume
        of a search begun before its free start existed has none either)."""
        limit = self.config.free_start
        if self.config.budget.max_evaluations is not None:
            limit = min(limit, self.config.budget.max_evaluations // 3)
        free = self.state.free_start
        if limit <= 0 or self.free_mutator is None or (free is None and self.state.next_index):
            return
        if free is not None and free.stop_reason is not None:
            return
        wall = self.config.budget.max_wall_seconds
        config = self.config.model_copy(
            update={
                # a third of the wall time too, so the search itself has time to run
                "budget": Budget(max_evaluations=limit, max_wall_seconds=_third(wall)),
                "free_start": 0,
                "fingerprint": f"{self.config.fingerprint}-free",
            }
        )
        engine = Engine(
            config,
            seed_code=self.seed_code,
            mutator=self.free_mutator,
            executor=self.executor,
            store=self.store,
            ledger=self.ledger,
            on_progress=self.on_progress,
            outer=self,
        )
        self.state.free_start = engine.state
        engine.run()
        self._last_tick = time.monotonic()  # its wall time is on the ledger already

    def _restart_pending(self, mutations: ThreadPoolExecutor) -> None:
        """After a resume, put back in flight whatever was in flight."""
        for index in sorted(self.state.pending):
            candidate = self.state.pending[index]
            if candidate.stage is Stage.PLANNED:
                self._submit_mutation(candidate, mutations)
            elif candidate.stage is Stage.QUICK:
                self._submit_evaluation(candidate, STAGE_QUICK)
            elif candidate.stage is Stage.FULL:
                self._submit_evaluation(candidate, STAGE_FULL)

    def _budget_reason(self) -> StopReason:
        if self.state.usd_exhausted:
            return StopReason.USD
        return StopReason.EVALUATIONS

    def _wall_time_exhausted(self) -> bool:
        """Whether the wall time on the ledger (a free start's and its search's, shared)
        reached this engine's limit: the search's, or its free start's third of it."""
        limit = self.config.budget.max_wall_seconds
        running_for = time.monotonic() - self._last_tick
        return limit is not None and self.ledger.wall_seconds() + running_for >= limit

    # -- planning ----------------------------------------------------------------------
    def _may_plan(self) -> bool:
        if self.state.usd_exhausted or len(self.state.pending) >= self.state.window:
            return False
        limit = self.config.budget.max_evaluations
        upper_bound = self.state.next_index - self.state.skipped_applied
        return limit is None or upper_bound < limit

    def _top_up(self, mutations: ThreadPoolExecutor) -> None:
        while self._may_plan():
            candidate = self.planner.plan(self.state.next_index)
            self.state.next_index += 1
            self.state.pending[candidate.index] = candidate
            if candidate.code is not None:
                candidate.stage = Stage.MUTATED
            else:
                self._submit_mutation(candidate, mutations)
        self._check_in_order()

    # -- mutation ----------------------------------------------------------------------
    def _submit_mutation(self, candidate: Candidate, mutations: ThreadPoolExecutor) -> None:
        assert candidate.request is not None
        seen, below = self.state.seen, candidate.known_below

        def is_duplicate(code: str) -> bool:
            # Only programs applied before this candidate was planned count, so the
            # answer does not depend on how far other work has got.
            return seen.get(normalised_hash(code), below) < below

        future = mutations.submit(self.mutator.mutate, candidate.request, is_duplicate)
        self._futures[future] = (candidate.index, Stage.PLANNED)

    def _check_in_order(self) -> None:
        """Dedup and dispatch mutated candidates strictly in index order."""
        while True:
            candidate = self.state.pending.get(self.state.checked)
            if candidate is None or candidate.stage is Stage.PLANNED:
                return
            self.state.checked += 1
            if candidate.stage is not Stage.MUTATED:
                continue
            if candidate.skipped is not None:
                candidate.stage = Stage.DONE
                continue
            assert candidate.code is not None
            candidate.code_hash = normalised_hash(candidate.code)
            if candidate.code_hash in self.state.seen:
                candidate.skipped = "duplicate"
                candidate.stage = Stage.DONE
                self.ledger.record_duplicate()
                continue
            self.state.seen[candidate.code_hash] = candidate.index
            quick_first = self.config.cascade and candidate.origin is Origin.MUTATION
            self._submit_evaluation(candidate, STAGE_QUICK if quick_first else STAGE_FULL)

    def _submit_evaluation(self, candidate: Candidate, stage: str) -> None:
        assert candidate.code is not None
        candidate.stage = Stage.QUICK if stage == STAGE_QUICK else Stage.FULL
        task = EvaluationTask(
            task_id=f"c{candidate.index}-{stage}",
            policy_code=candidate.code,
            context=self.config.context,
            stage=stage,
        )
        self._futures[self.executor.submit(task)] = (candidate.index, candidate.stage)

    # -- completions -------------------------------------------------------------------
    def _on_finished(
        self, index: int, stage: Stage, future: Future[Any], mutations: ThreadPoolExecutor
    ) -> None:
        candidate = self.state.pending[index]
        if stage is Stage.PLANNED:
            try:
                result = future.result()
            except MutatorRejected as error:
                raise SearchConfigError(str(error), error.path) from None
            candidate.stage = Stage.MUTATED
            candidate.model = result.model
            candidate.description = result.description
            candidate.duplicates = result.duplicates
            if result.ok:
                candidate.code = result.code
            else:
                candidate.skipped = f"mutation failed: {result.failure}"
                candidate.budget_exhausted = result.budget_exhausted
                self.ledger.record_failed_mutation()
            return
        try:
            outcome: EvaluationOutcome = future.result()
        except Exception as exc:  # an executor bug must not end the run
            outcome = EvaluationOutcome.failed(FailureReason.INFRASTRUCTURE, repr(exc))
        if stage is Stage.QUICK:
            candidate.quick = outcome
            if outcome.ok and candidate.origin is Origin.MUTATION:
                decided = verdict(candidate, self.config.quick_threshold)
                # A no-op decides exactly as its parent (a deterministic evaluator gives
                # it the parent's quick subscores to the last digit): its full evaluation
                # would only repeat the parent's. A smaller one is still worth keeping.
                candidate.no_op = decided is Verdict.NO_OP
                candidate.simpler = decided is Verdict.SIMPLER
                if decided in (Verdict.FULL, Verdict.SIMPLER):
                    self._submit_evaluation(candidate, STAGE_FULL)
                    return
            candidate.cascade_rejected = outcome.ok and not candidate.no_op
        else:
            candidate.full = outcome
        candidate.stage = Stage.DONE
        failed = not outcome.ok
        self.ledger.record_evaluation(
            quick_stage=stage is Stage.QUICK, failed=failed, free=self._outer is not None
        )

    # -- applying ----------------------------------------------------------------------
    def _apply_next(self) -> bool:
        candidate = self.state.pending.get(self.state.applied)
        if candidate is None or candidate.stage is not Stage.DONE:
            return False
        del self.state.pending[candidate.index]
        self.state.applied += 1
        if candidate.quick is not None and candidate.quick.result is not None:
            recent = self.state.quick_scores
            recent.append(candidate.quick.result.score)
            del recent[:-RECENT_QUICK_SCORES]
        if candidate.quick is not None and candidate.code is not None:
            result = candidate.quick.result
            record_trial(self.state.trials, candidate.code, result.score if result else None)
        self._count_repeats(candidate)
        kept = False
        failure = None
        if not candidate.evaluated:
            self.state.skipped_applied += 1
        evaluations = self.state.applied - self.state.skipped_applied
        if not candidate.evaluated:
            failure = candidate.skipped
            if candidate.budget_exhausted:
                self.state.usd_exhausted = True
        elif candidate.full is not None and candidate.full.result is not None:
            elite = elite_of(candidate, candidate.full.result)
            if candidate.origin is Origin.SEED:
                self.state.seed_elite = elite
            kept = self.archive.insert(elite, ties_to_smaller=candidate.simpler)
            found = self.state.best_found
            if found is None or elite.score > found:
                self.state.best_found = elite.score
                self.state.last_improvement = evaluations
            self._offer_best(elite, candidate.simpler)
        else:
            failure = failure_of(candidate)
        if candidate.origin is Origin.SEED and self.state.seed_elite is None:
            raise EngineError(f"the seed policy failed its evaluation: {failure}")
        if not self.archive.frozen and self.state.applied >= self.config.initial_population:
            self.archive.freeze(self.rng)
        self.state.history.append(
            HistoryPoint(
                index=candidate.index,
                evaluations=evaluations,
                score=candidate.score,
                best=self.state.best.score if self.state.best else None,
                usd=self.ledger.usd_spent,
                kept=kept,
                failure=failure,
            )
        )
        return True

    def _offer_best(self, elite: Elite, simpler: bool) -> None:
        """Make ``elite`` the run's best if it beats it (or, ``simpler``, ties it smaller):
        this search's, and a free start's search's too."""
        states = [self.state] if self._outer is None else [self.state, self._outer.state]
        for state in states:
            best = state.best
            if best is None or _beats(elite, best, simpler):
                state.best = elite

    def _count_repeats(self, candidate: Candidate) -> None:
        repeats = candidate.duplicates + (candidate.skipped == "duplicate")
        if repeats and candidate.parent is not None and candidate.origin is Origin.MUTATION:
            counts = self.state.repeats_by_parent
            counts[candidate.parent] = counts.get(candidate.parent, 0) + repeats

    def _report(self) -> None:
        if self.on_progress is None:
            return
        ledger = self.ledger.snapshot()
        free = self._outer is not None
        self.on_progress(
            Progress(
                evaluations=ledger.free_evaluations if free else ledger.evaluations,
                max_evaluations=self.config.budget.max_evaluations,
                best_score=self.state.best.score if self.state.best else None,
                seed_score=self.state.seed_elite.score if self.state.seed_elite else None,
                usd=ledger.usd_spent,
                coverage=self.archive.coverage,
                wall_seconds=ledger.wall_seconds,
                free_start=free,
                free_evaluations=ledger.free_evaluations,
            )
        )


def _beats(elite: Elite, best: Elite, simpler: bool) -> bool:
    """Whether ``elite`` is a better best than ``best``: higher, or ``simpler`` and as
    high with a smaller program."""
    return elite.score > best.score or (simpler and smaller_at_same_score(best, elite))


def _third(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 3
