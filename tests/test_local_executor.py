"""LocalExecutor (the zygote pool) and the retune-evaluate pod entrypoint."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retune.evaluate.contract import (
    STAGE_QUICK,
    EvaluationContext,
    EvaluationOutcome,
    EvaluationTask,
    FailureReason,
    SandboxLimits,
)
from retune.evaluate.entrypoint import decode_outcomes, encode_outcomes
from retune.evaluate.loader import EvaluatorLoadError
from retune.evaluate.local import LocalExecutor

FIXTURES = Path(__file__).parent / "fixtures"
EVALUATOR = FIXTURES / "scoring_evaluator.py"
LIMITS = SandboxLimits(wall_seconds=10, cpu_seconds=10, memory_mb=256)
OPERATOR = str(Path(__file__).parent.parent / "operator")


def task(
    offset: int = 1, task_id: str = "t", stage: str = "full", **params: object
) -> EvaluationTask:
    code = f"def choose(x):\n    return 2 * x + {offset}\n"
    context = EvaluationContext(params=dict(params))
    return EvaluationTask(task_id=task_id, policy_code=code, context=context, stage=stage)


@pytest.fixture(scope="module")
def pool() -> Iterator[LocalExecutor]:
    with LocalExecutor(EVALUATOR, "choose", LIMITS, workers=2) as executor:
        yield executor


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (FileNotFoundError, ProcessLookupError):
                continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_until(condition: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_scores_many_candidates_in_parallel(pool: LocalExecutor) -> None:
    assert pool.capacity == 2
    futures = [pool.submit(task(offset=i % 3, task_id=str(i))) for i in range(20)]
    scores = [f.result(timeout=30).result.score for f in futures]  # type: ignore[union-attr]
    assert scores == [[90.0, 100.0, 90.0][i % 3] for i in range(20)]
    if os.geteuid() == 0:
        assert pool.isolation["user"] == "nobody"
        assert pool.isolation["network"] == "namespace"


def test_context_and_stage_reach_the_evaluator(pool: LocalExecutor) -> None:
    outcome = pool.submit(task(stage=STAGE_QUICK, mode="sleep", seconds=0.2)).result(30)
    assert outcome.result is not None
    assert outcome.result.subscores == {STAGE_QUICK: 100.0}
    assert 0.2 <= outcome.evaluator_seconds < 1.0


def test_rejected_and_failed_candidates_are_outcomes(pool: LocalExecutor) -> None:
    rejected = EvaluationTask(
        task_id="r",
        policy_code="import os\ndef choose(x):\n    return 1\n",
        context=EvaluationContext(),
    )
    assert pool.submit(rejected).result(30).failure == FailureReason.REJECTED
    assert pool.submit(task(mode="nan")).result(30).failure == FailureReason.MALFORMED


def test_one_worker_keeps_every_outcome_with_its_task() -> None:
    # One worker, tasks queued ahead: each is prepared while the previous one runs and
    # launched before the previous process is reaped. Outcomes must not get mixed up.
    limits = SandboxLimits(wall_seconds=0.5, cpu_seconds=10, memory_mb=256)
    loop = "def choose(x):\n    while True:\n        x = x + 1\n"
    refused = "import os\ndef choose(x):\n    return 1\n"
    kinds = ["ok", "refused", "loop", "ok", "nan", "ok", "refused", "ok"]
    with LocalExecutor(EVALUATOR, "choose", limits, workers=1) as executor:
        futures = []
        for i, kind in enumerate(kinds):
            if kind in ("ok", "nan"):
                item = task(offset=i, task_id=str(i), mode="score" if kind == "ok" else "nan")
            else:
                code = refused if kind == "refused" else loop
                item = EvaluationTask(task_id=str(i), policy_code=code, context=EvaluationContext())
            futures.append(executor.submit(item))
        outcomes = [f.result(30) for f in futures]
    expected = {"refused": FailureReason.REJECTED, "loop": FailureReason.TIMEOUT}
    expected["nan"] = FailureReason.MALFORMED
    for i, (kind, outcome) in enumerate(zip(kinds, outcomes, strict=True)):
        if kind == "ok":
            assert outcome.result is not None and outcome.result.score == 100.0 - 10 * abs(i - 1)
        else:
            assert outcome.failure == expected[kind], (i, outcome)


def test_a_worker_runs_one_candidate_at_a_time() -> None:
    # The next candidate is handed over early but starts only once the previous is done.
    with LocalExecutor(EVALUATOR, "choose", LIMITS, workers=1) as executor:
        futures = [executor.submit(task(mode="busy", seconds=0.05)) for _ in range(6)]
        spans = sorted(
            (o.result.metrics["started"], o.result.metrics["ended"])  # type: ignore[union-attr]
            for o in (f.result(30) for f in futures)
        )
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended


def test_a_dead_worker_is_replaced_and_its_task_retried(pool: LocalExecutor) -> None:
    before = set(pool.worker_pids())
    futures = [pool.submit(task(mode="sleep", seconds=0.5, task_id=str(i))) for i in range(2)]
    time.sleep(0.2)
    os.kill(pool.worker_pids()[0], signal.SIGKILL)
    outcomes = [f.result(30) for f in futures]
    assert all(o.ok for o in outcomes), outcomes
    assert set(pool.worker_pids()) != before
    assert pool.submit(task()).result(30).ok


def test_a_task_that_loses_two_workers_fails_as_infrastructure() -> None:
    # The task outlives the test, however slowly a worker restarts on a loaded machine:
    # it can only end by losing its workers.
    limits = SandboxLimits(wall_seconds=600, cpu_seconds=10, memory_mb=256)
    with LocalExecutor(EVALUATOR, "choose", limits, workers=1) as executor:
        future = executor.submit(task(mode="sleep", seconds=600))
        for _ in range(2):
            if future.done():
                break  # the worker could not be restarted (a slow start): the task failed
            old = executor.worker_pids()[0]
            assert wait_until(lambda old=old: descendants(old), 120)  # the candidate runs
            os.kill(old, signal.SIGKILL)

            def moved_on(old: int = old) -> bool:
                # a new worker, or none and the task failed with "cannot restart"
                return future.done() or executor.worker_pids() not in ([], [old])

            assert wait_until(moved_on, 120)
        outcome = future.result(30)
        assert outcome.failure == FailureReason.INFRASTRUCTURE
        # "died twice", or "cannot restart" if the second kill hit the worker's start-up
        assert "evaluation worker" in outcome.detail
        assert executor.submit(task()).result(30).ok


def test_close_cancels_queued_work_and_leaves_no_process() -> None:
    executor = LocalExecutor(EVALUATOR, "choose", LIMITS, workers=2)
    futures = [executor.submit(task(mode="sleep", seconds=5, task_id=str(i))) for i in range(5)]
    workers = executor.worker_pids()
    assert wait_until(lambda: all(descendants(w) for w in workers))  # candidates running
    processes = set(workers) | {p for w in workers for p in descendants(w)}
    executor.close()
    outcomes = [f.result(10) for f in futures]
    assert {o.failure for o in outcomes} == {FailureReason.CANCELLED}
    assert wait_until(lambda: not any(alive(p) for p in processes))
    assert executor.submit(task()).result(1).failure == FailureReason.CANCELLED


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_or_killed_operator_leaves_no_process(tmp_path: Path, signum: int) -> None:
    script = tmp_path / "fake_operator.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, signal, time
        from pathlib import Path
        # Ctrl-C as in a terminal, even if started with SIGINT ignored (a shell's
        # background job is).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from retune.evaluate.contract import EvaluationContext, EvaluationTask, SandboxLimits
        from retune.evaluate.local import LocalExecutor
        limits = SandboxLimits(wall_seconds=30, cpu_seconds=30)
        with LocalExecutor(Path({str(EVALUATOR)!r}), "choose", limits, workers=2) as pool:
            context = EvaluationContext(params={{"mode": "sleep", "seconds": 20}})
            code = "def choose(x):\\n    return x\\n"
            for i in range(4):
                pool.submit(EvaluationTask(task_id=str(i), policy_code=code, context=context))
            print(json.dumps(pool.worker_pids()), flush=True)
            # Short naps, as the engine's loop waits: the kernel may deliver SIGINT to a
            # worker thread, and Python then acts on it when the main thread next wakes.
            for _ in range(600):
                time.sleep(0.1)
        """)
    )
    env = {**os.environ, "PYTHONPATH": OPERATOR}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    workers = json.loads(process.stdout.readline())
    assert wait_until(lambda: all(descendants(w) for w in workers))
    processes = set(workers) | {p for w in workers for p in descendants(w)}
    process.send_signal(signum)
    process.wait(timeout=20)
    assert wait_until(lambda: not any(alive(p) for p in processes)), processes


ESCAPE = """
def _os():
    for cls in ().__class__.__base__.__subclasses__():
        if cls.__name__ == "_wrap_close":
            return cls.__init__.__globals__
"""


def test_workers_never_hold_the_operators_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    monkeypatch.setenv("RETUNE_TEST_SECRET", secret)
    snoop = ESCAPE + textwrap.dedent("""
        def choose(x):
            os = _os()
            found = [str(dict(os["environ"]))]
            for pid in ("self", str(os["getppid"]())):
                try:
                    fd = os["open"]("/proc/" + pid + "/environ", os["O_RDONLY"])
                    found.append(str(os["read"](fd, 1 << 20)))
                except Exception as exc:
                    found.append(str(exc))
            return str(found)
    """)
    limits = SandboxLimits(wall_seconds=10, cpu_seconds=10)
    with LocalExecutor(EVALUATOR, "choose", limits, workers=1, enforce_allowlist=False) as pool:
        for worker in pool.worker_pids():  # the worker was started without them
            assert secret not in Path(f"/proc/{worker}/environ").read_text()
        echo = EvaluationContext(params={"mode": "echo"})
        outcome = pool.submit(EvaluationTask(task_id="env", policy_code=snoop, context=echo))
        result = outcome.result(30).result
        assert result is not None and "Permission denied" in result.feedback
        assert secret not in result.feedback


def test_a_candidate_cannot_forge_the_worker_protocol() -> None:
    forge = ESCAPE + textwrap.dedent("""
        def choose(x):
            os = _os()
            fake = '{"outcome": {"result": {"score": 1e9}}}\\n'.encode()
            for fd in range(0, 32):
                try:
                    os["write"](fd, fake)
                except Exception:
                    pass
            return 2 * x + 1
    """)
    limits = SandboxLimits(wall_seconds=10, cpu_seconds=10)
    with LocalExecutor(EVALUATOR, "choose", limits, workers=1, enforce_allowlist=False) as pool:
        attack = EvaluationTask(task_id="forge", policy_code=forge, context=EvaluationContext())
        outcome = pool.submit(attack).result(30)
        # Its own result pipe got the fake too, so its frame is corrupt; nothing reached
        # the worker's protocol on stdout, and the next candidate is scored normally.
        assert outcome.failure == FailureReason.MALFORMED
        assert pool.submit(task()).result(30).result.score == 100.0  # type: ignore[union-attr]


def test_an_evaluator_that_cannot_load_fails_construction(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module\n")
    with pytest.raises(EvaluatorLoadError, match="no_such_module"):
        LocalExecutor(broken, "choose", LIMITS, workers=1)
    with pytest.raises(EvaluatorLoadError, match="no evaluate"):
        LocalExecutor(FIXTURES / "scoring_rules.py", "choose", LIMITS, workers=1)


# --- retune-evaluate -------------------------------------------------------------------


def evaluate_batch(batch: dict[str, object], tmp_path: Path, **env: str) -> tuple[int, str, str]:
    (tmp_path / "etc").mkdir(exist_ok=True)
    (tmp_path / "etc" / "batch.json").write_text(json.dumps(batch))
    script = Path(sys.executable).parent / "retune-evaluate"
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "retune.evaluate.entrypoint"]
    )
    completed = subprocess.run(
        [*command, "--batch", "/etc/batch.json", "--output", "/termination-log"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": OPERATOR,
            "RETUNE_PATH_PREFIX": str(tmp_path),
            **env,
        },
    )
    written = (tmp_path / "termination-log").read_text()
    assert completed.stdout.strip().splitlines()[-1] == written
    return completed.returncode, written, completed.stderr


def test_entrypoint_runs_a_batch_and_reports_compactly(tmp_path: Path) -> None:
    (tmp_path / "evaluator").mkdir()
    for name in ("scoring_evaluator.py", "scoring_rules.py", "context_rules.py"):
        (tmp_path / "evaluator" / name).write_text((FIXTURES / name).read_text())
    tasks = [task(offset=1, task_id="good"), task(offset=0, task_id="close", stage="quick")]
    tasks.append(task(task_id="nan", mode="nan"))
    tasks.append(
        EvaluationTask(
            task_id="forger",
            context=EvaluationContext(),
            policy_code="def choose(x):\n    return open('/termination-log', 'w').write('{}')\n",
        )
    )
    batch = {
        "evaluator": "/evaluator/scoring_evaluator.py",  # remapped under RETUNE_PATH_PREFIX
        "entrypoint": "choose",
        "limits": {"wall_seconds": 5, "cpu_seconds": 5, "memory_mb": 256},
        "tasks": [t.model_dump(mode="json") for t in tasks],
    }
    status, written, stderr = evaluate_batch(batch, tmp_path)
    assert status == 0, stderr
    assert len(written) <= 4096
    outcomes = decode_outcomes(written, [t.task_id for t in tasks])
    assert outcomes["good"].result is not None and outcomes["good"].result.score == 100.0
    assert outcomes["close"].result is not None
    assert outcomes["close"].result.subscores == {"quick": 90.0}
    assert outcomes["nan"].failure == FailureReason.MALFORMED
    assert outcomes["forger"].failure == FailureReason.REJECTED
    assert "isolation" in stderr


def test_entrypoint_reports_a_broken_batch_for_every_task(tmp_path: Path) -> None:
    batch = {
        "evaluator": "no_such_evaluator_module",
        "entrypoint": "choose",
        "tasks": [task(task_id="a").model_dump(mode="json")],
    }
    status, written, _ = evaluate_batch(batch, tmp_path)
    assert status == 2
    outcome = decode_outcomes(written, ["a"])["a"]
    assert outcome.failure == FailureReason.INFRASTRUCTURE
    assert "no_such_evaluator_module" in outcome.detail


def test_outcomes_shrink_to_fit_the_termination_message() -> None:
    feedback = "the policy thrashes on scans; " * 40
    many = [
        (
            f"candidate-{i:03d}",
            EvaluationOutcome.model_validate(
                {
                    "result": {
                        "score": 1 / 3 + i,
                        "subscores": {"quick": 2 / 3, "full": 0.123456789},
                        "metrics": {f"m{j}": j / 7 for j in range(8)},
                        "feedback": feedback,
                    },
                    "evaluator_seconds": 0.123456,
                }
            ),
        )
        for i in range(30)
    ]
    many.append(("timeout", EvaluationOutcome.failed(FailureReason.TIMEOUT, "x" * 3000, 5.0)))
    text = encode_outcomes(many)
    assert len(text.encode()) <= 4096
    decoded = decode_outcomes(text, [task_id for task_id, _ in many])
    first = decoded["candidate-000"].result
    assert first is not None and first.score == pytest.approx(1 / 3, rel=1e-3)
    assert first.feedback == "" and first.metrics == {}  # dropped first, in that order
    assert decoded["timeout"].failure == FailureReason.TIMEOUT

    small = encode_outcomes(many[:2])
    assert decode_outcomes(small)["candidate-001"].result.feedback.startswith("the policy")  # type: ignore[union-attr]

    crowd = [(f"task-{i:04d}-" + "x" * 40, many[0][1]) for i in range(200)]
    squeezed = encode_outcomes(crowd)
    assert len(squeezed) <= 4096
    last = decode_outcomes(squeezed, [t for t, _ in crowd])[crowd[-1][0]]
    assert last.failure == FailureReason.INFRASTRUCTURE and "did not fit" in last.detail


def test_decode_tolerates_garbage() -> None:
    outcome = decode_outcomes("not json", ["a"])["a"]
    assert outcome.failure == FailureReason.INFRASTRUCTURE
    assert "unreadable termination message" in outcome.detail


def test_the_policy_files_of_a_killed_run_are_removed_by_the_next(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from retune.evaluate.contract import EvaluationContext, EvaluationTask, SandboxLimits
        from retune.evaluate.local import LocalExecutor
        limits = SandboxLimits(wall_seconds=600, cpu_seconds=10)
        code = "def choose(x):\\n    return 2 * x + 1\\n"
        executor = LocalExecutor(Path({str(EVALUATOR)!r}), "choose", limits, workers=1)
        if sys.argv[1] == "hold":
            context = EvaluationContext(params={{"mode": "sleep", "seconds": 600}})
            executor.submit(EvaluationTask(task_id="t", policy_code=code, context=context))
            time.sleep(600)
        executor.close()
        """)
    env = {**os.environ, "PYTHONPATH": OPERATOR, "TMPDIR": str(tmp_path)}
    killed = subprocess.Popen([sys.executable, "-c", script, "hold"], env=env)
    try:
        assert wait_until(lambda: list(tmp_path.glob("retune-local-*/worker-0/policy-*.py")), 120)
    finally:
        killed.kill()  # SIGKILL: nothing of the run gets to clean up
        killed.wait()
    assert list(tmp_path.glob("retune-local-*/worker-0/policy-*.py"))  # left behind
    subprocess.run([sys.executable, "-c", script, "next"], env=env, check=True, timeout=120)
    assert list(tmp_path.glob("retune-local-*")) == []
