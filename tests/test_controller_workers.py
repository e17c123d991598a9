"""Search workers: threads bounded by an operator-wide limit, reporting to the controller."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import yaml

from retune.controller import (
    SearchOutcome,
    SearchProgress,
    WorkKind,
    WorkReport,
    WorkState,
    spec_digests,
)
from retune.handlers.workers import WorkCancelled, WorkerHandle, Workers, WorkFailed
from retune.search.ledger import LedgerState
from retune.spec import parse_target
from tests.test_spec import MINIMAL_CLUSTER

KEY = ("shop", "router")
PROGRESS = SearchProgress(
    evaluations=3, best_score=0.5, seed_score=0.4, best_candidate="c2", ledger=LedgerState()
)


def wait_for(workers: Workers, key: tuple[str, str], state: WorkState) -> WorkReport:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        report = workers.report(key)
        if report is not None and report.state is state:
            return report
        time.sleep(0.01)
    raise AssertionError(f"{key} never reached {state}: {workers.report(key)}")


def blocking_job(release: threading.Event) -> Callable[[WorkerHandle], SearchOutcome]:
    def job(handle: WorkerHandle) -> SearchOutcome:
        handle.progress(PROGRESS)
        while not release.wait(0.01):
            handle.check()
        return SearchOutcome(stop_reason="evaluation budget reached", progress=PROGRESS)

    return job


def test_a_finished_search_reports_its_outcome_until_forgotten() -> None:
    workers = Workers(limit=2)
    release = threading.Event()
    workers.start(KEY, WorkKind.SEARCH, blocking_job(release))
    running = wait_for(workers, KEY, WorkState.RUNNING)
    assert running.progress == PROGRESS and running.active
    release.set()
    finished = wait_for(workers, KEY, WorkState.FINISHED)
    assert finished.search is not None and finished.search.stop_reason.startswith("evaluation")
    assert finished.ended_at is not None and not finished.active
    workers.forget(KEY)
    assert workers.report(KEY) is None


def test_searches_beyond_the_limit_wait_in_a_queue() -> None:
    workers = Workers(limit=1)
    first, second = threading.Event(), threading.Event()
    workers.start(("a", "one"), WorkKind.SEARCH, blocking_job(first))
    wait_for(workers, ("a", "one"), WorkState.RUNNING)
    workers.start(("a", "two"), WorkKind.SEARCH, blocking_job(second))
    queued = wait_for(workers, ("a", "two"), WorkState.QUEUED)
    assert queued.queued_behind == 1 and workers.queued == 1 and workers.running == 1
    first.set()
    wait_for(workers, ("a", "two"), WorkState.RUNNING)
    second.set()
    wait_for(workers, ("a", "two"), WorkState.FINISHED)
    assert workers.running == 0


def test_failures_say_what_to_change_and_whether_a_retry_can_help() -> None:
    workers = Workers(limit=2)

    def seed_fails(handle: WorkerHandle) -> SearchOutcome:
        raise WorkFailed("the seed policy failed", path="spec.policy.seed", permanent=True)

    def api_down(handle: WorkerHandle) -> SearchOutcome:
        raise ConnectionError("API server unreachable")

    workers.start(("a", "seed"), WorkKind.SEARCH, seed_fails)
    workers.start(("a", "api"), WorkKind.VALIDATION, api_down)
    seed = wait_for(workers, ("a", "seed"), WorkState.FAILED)
    assert (seed.error, seed.error_path, seed.permanent) == (
        "the seed policy failed",
        "spec.policy.seed",
        True,
    )
    api = wait_for(workers, ("a", "api"), WorkState.FAILED)
    assert api.kind is WorkKind.VALIDATION
    assert api.error == "ConnectionError: API server unreachable" and not api.permanent


def test_stopping_cancels_the_job_runs_its_hooks_and_leaves_no_report() -> None:
    workers = Workers(limit=1)
    hooks: list[str] = []
    seen: list[str] = []

    def job(handle: WorkerHandle) -> SearchOutcome:
        handle.on_cancel.append(lambda: hooks.append("executor closed"))
        try:
            while True:
                handle.check()
                time.sleep(0.01)
        except WorkCancelled:
            seen.append("cancelled")
            raise RuntimeError("what a stopped job raises is not a verdict") from None

    workers.start(KEY, WorkKind.SEARCH, job)
    wait_for(workers, KEY, WorkState.RUNNING)
    workers.stop(KEY)
    assert hooks == ["executor closed"] and seen == ["cancelled"]
    assert workers.report(KEY) is None and workers.running == 0


def test_a_background_stop_can_be_waited_for_later() -> None:
    workers = Workers(limit=1)
    workers.start(KEY, WorkKind.SEARCH, blocking_job(threading.Event()))
    wait_for(workers, KEY, WorkState.RUNNING)
    workers.stop(KEY, wait=False)
    assert workers.report(KEY) is None
    workers.stop(KEY)  # waits for the background stop
    assert workers.running == 0
    workers.start(KEY, WorkKind.SEARCH, blocking_job(threading.Event()))  # the key is free again
    workers.stop_all()
    assert workers.running == 0


def test_one_worker_per_target() -> None:
    workers = Workers(limit=1)
    workers.start(KEY, WorkKind.SEARCH, blocking_job(threading.Event()))
    with pytest.raises(RuntimeError, match="already has a worker"):
        workers.start(KEY, WorkKind.VALIDATION, blocking_job(threading.Event()))
    workers.stop_all()


def test_spec_digests_separate_budget_search_and_signals() -> None:
    target = parse_target(yaml.safe_load(MINIMAL_CLUSTER), "test")
    base = spec_digests(target.spec)

    def changed(**updates: object) -> object:
        data = target.to_dict()
        for path, value in updates.items():
            node = data["spec"]
            *parents, leaf = path.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return spec_digests(parse_target(data, "test").spec)

    budget = changed(search__budget={"maxEvaluations": 5})
    assert (budget.signals, budget.search) == (base.signals, base.search)
    assert budget.budget != base.budget
    seed = changed(search__seed=7)
    assert seed.search != base.search and seed.signals == base.signals
    profile = changed(profile__queries={"rps": "sum(rate(x[5m]))"})
    assert profile.signals != base.signals
    rollout = changed(rollout__steps=[50])
    assert rollout == base
