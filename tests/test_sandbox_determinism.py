"""Whatever a policy may compile compiles the same in every candidate process.

Compiling a non-ASCII identifier needs ``unicodedata`` (identifiers are NFKC-normalised).
A candidate process cannot import a module after its privileges drop, so a policy that
needs one the zygote never imported failed with ``ModuleNotFoundError`` -- but only when
it was not the first candidate of its worker, breaking same-seed replay.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from pathlib import Path
from retune.evaluate.contract import EvaluationContext, EvaluationTask, SandboxLimits
from retune.evaluate.loader import load_evaluator
from retune.evaluate.sandbox import SandboxHarness

evaluator = load_evaluator(Path(sys.argv[2]))
limits = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256)
plain = "def choose(x):\\n    return 2 * x + 1\\n"
accented = "def choose(x):\\n    r\\u00e9sultat = 2 * x + 1\\n    return r\\u00e9sultat\\n"
with SandboxHarness(evaluator, "choose", limits) as harness:
    for index, code in enumerate([plain, accented, accented]):
        task = EvaluationTask(task_id=str(index), policy_code=code, context=EvaluationContext())
        outcome = harness.run(task)
        score = outcome.result.score if outcome.result else None
        print(outcome.ok, score, outcome.failure, outcome.detail[:80])
"""


def test_a_non_ascii_identifier_scores_the_same_in_any_worker_history() -> None:
    evaluator = ROOT / "tests" / "fixtures" / "scoring_evaluator.py"
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, "cold", str(evaluator)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={
            "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'tests' / 'fixtures'}",
            "PATH": "/usr/bin:/bin",
        },
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    plain, first, second = completed.stdout.splitlines()
    assert plain.startswith("True")
    assert first == second == plain, completed.stdout
