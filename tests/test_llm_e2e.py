"""`retune run --mutator llm` end to end, against the stand-in model server.

Given examples/01 and the server on a loopback port, when `retune run` searches with the
LLM tiers, then result.json's tokens are exactly what the server served, its calls are the
calls the audit log shows, the USD budget holds, and the same seed replays the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retune.search.llm.audit import NOT_CALLS
from tests.llm_server import REPO, MutationServer, running_mutation_server

TARGET = REPO / "examples" / "01-cache-eviction" / "target.yaml"
MAX_USD = 0.05
# The stand-in server's models at its prices (bench/mutation_server.py's MODELS).
STAND_IN_MODELS = ["--model", "cheap=small@0.15/0.60", "--model", "strong=large@2.50/10.00"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[MutationServer]:
    with running_mutation_server(seed=1, retry_after=0.2) as running:
        yield running


def retune_run(
    server: MutationServer,
    output: Path,
    *extra: str,
    faults: str = "",
    free_start: int = 0,
    validated: bool = True,
) -> dict[str, Any]:
    """``retune run`` against a fresh-counting server; result.json's content. The models
    write every candidate unless ``free_start`` leaves the first ones to the built-in
    mutator; the winner passes its validation, or with ``validated=False`` may not."""
    server.reset()
    server.set_faults(faults)
    command = [
        sys.executable, "-m", "retune.cli", "run", str(TARGET),
        "--mutator", "llm", "--llm-base-url", server.base_url, *STAND_IN_MODELS,
        "--max-evaluations", "30", "--seed", "7", "--quiet", "--output", str(output),
        "--free-start", str(free_start), *extra,
    ]  # fmt: skip
    paths = [str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=env, check=False
    )
    assert completed.returncode in ((0,) if validated else (0, 3)), completed.stderr
    result: dict[str, Any] = json.loads((output / "result.json").read_text())
    return result


def audit(output: Path) -> list[dict[str, Any]]:
    lines = (output / "llm-calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_ledger_is_what_the_server_served(server: MutationServer, tmp_path: Path) -> None:
    result = retune_run(server, tmp_path, "--max-usd", str(MAX_USD))

    assert result["evaluations"] == 30
    assert result["tokens"] == server.stats()
    calls = audit(tmp_path)
    made = Counter(line["tier"] for line in calls if line["outcome"] not in NOT_CALLS)
    assert result["calls"] == dict(made)
    assert result["calls"]["small"] > result["calls"].get("large", 0)
    assert result["cost_usd"] == pytest.approx(sum(line["usd"] for line in calls))
    assert result["cost_usd"] <= MAX_USD
    strong = sum(line["usd"] for line in calls if line["tier"] == "large")
    assert result["strong_usd"] == pytest.approx(strong)
    assert result["strong_share"] == 0.3
    assert result["strong_cap_usd"] == pytest.approx(0.3 * MAX_USD)
    assert result["strong_usd"] <= result["strong_cap_usd"]
    report = (tmp_path / "report.html").read_text()
    assert "<th>strong_usd</th>" in report and "<th>strong_share</th>" in report


def test_the_free_start_calls_no_model_and_the_ledger_still_is_what_was_served(
    server: MutationServer, tmp_path: Path
) -> None:
    # --free-start 200 with 30 evaluations: ten free ones (a third) before the models' 30
    result = retune_run(
        server, tmp_path, "--max-usd", str(MAX_USD), free_start=200, validated=False
    )
    assert (result["evaluations"], result["free_start_evaluations"]) == (30, 10)
    calls = audit(tmp_path)
    assert min(line["candidate_index"] for line in calls) == 1, "the models' own first"
    assert result["tokens"] == server.stats()
    assert result["cost_usd"] == pytest.approx(sum(line["usd"] for line in calls))


def test_a_small_budget_stops_the_search_before_it_is_exceeded(
    server: MutationServer, tmp_path: Path
) -> None:
    result = retune_run(server, tmp_path, "--max-usd", "0.004")

    assert result["stop_reason"] == "USD budget reached"
    assert 0 < result["cost_usd"] <= 0.004
    assert result["tokens"] == server.stats()


def test_endpoint_faults_cost_candidates_not_the_run(
    server: MutationServer, tmp_path: Path
) -> None:
    # (rates high enough that 46 or so calls draw each kind whatever the prompts say)
    faults = "429:0.2,500:0.15,drop:0.05,malformed:0.05,empty:0.05,garbage:0.1"
    first = retune_run(server, tmp_path / "first", "--max-usd", str(MAX_USD), faults=faults)
    assert first["tokens"] == server.stats()
    again = retune_run(server, tmp_path / "again", "--max-usd", str(MAX_USD), faults=faults)
    assert again["tokens"] == server.stats()

    assert first["evaluations"] == 30
    outcomes = {line["outcome"] for line in audit(tmp_path / "first")}
    assert {"rate_limited", "server_error", "ok"} <= outcomes
    first.pop("wall_seconds")
    again.pop("wall_seconds")
    assert first == again  # the same seed and the same server replay the run
