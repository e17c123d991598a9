"""The headroom benchmark's oracle: the best policy per phase, and its ratio to S3-FIFO."""

from __future__ import annotations

import sys

from retune.evaluate.loader import compile_policy
from tests.llm_server import REPO

sys.path.insert(0, str(REPO / "bench"))
import policy_headroom
from staying_tuned import PHASES, Plan

TINY = Plan(evaluations=0, holdout_seeds=1, sim_keys=1_000, requests=4_000)


def test_every_probe_is_a_policy_the_sandbox_accepts() -> None:
    programs = policy_headroom.policies()
    probes = [name for name in programs if name.startswith("probe ")]
    assert len(probes) >= 5
    for name, code in programs.items():
        assert compile_policy(code, "priority", filename=name) is not None


def test_the_oracle_takes_the_best_policy_of_each_phase() -> None:
    names = ("baseline lru", "baseline scan_resistant", "probe log_frequency")
    programs = {name: policy_headroom.policies()[name] for name in names}
    run = policy_headroom.measure(TINY, 8, programs)
    scores = run["scores"]
    for phase in range(len(PHASES)):
        best = max(scores[name][phase] for name in names)
        assert run["oracle"][phase] == best
        assert scores[run["oracle_policies"][phase]][phase] == best
    # LRU is never the best here: the hybrid and the probe both protect reused objects.
    assert "baseline lru" not in run["oracle_policies"]
    assert run["oracle_vs_s3fifo"] >= run["best_single_vs_s3fifo"] > 0
    assert all(0 < s < 1 for s in run["s3fifo"])
