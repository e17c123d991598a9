"""A parameters policy: the search moves the declared parameters' values and nothing else.

Given a ``kind: parameters`` policy, when its values are read, a candidate is checked, a
model answers, a seed is given or a revision is published, then: the values are read from
the syntax tree (never by running the program) within their bounds; a candidate that
changes anything but the values, or moves one out of bounds, is refused with the reason;
the models' answers that do are refused and never reach the search; a seed that does not
hold its parameters stops the search naming ``spec.policy.seed``; and the revision holds
the values as JSON beside the program, for a workload in any language.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retune.evaluate.contract import EvaluationContext
from retune.evaluate.parameters import ParameterError, read_values, values_only_problem
from retune.handlers.export import Export, write_export
from retune.rollout.revisions import revision_manifest, values_file_name
from retune.search.archive import Archive
from retune.search.builder import SearchBuilder, SearchSetup
from retune.search.builtin import BuiltinMutator, ParameterBounds
from retune.search.engine import SearchConfigError
from retune.search.ledger import Budget, Ledger
from retune.search.llm import build_llm_mutator
from retune.search.llm.client import CallResult
from retune.search.llm.prompts import PolicyBrief, build_prompt
from retune.search.mutation import MutationKind, MutationRequest
from retune.search.state import decode_state
from retune.spec import ParameterSpec, PolicySource, PolicySpec, TargetSpec
from tests.llm_server import REPO, MutationServer, running_mutation_server
from tests.test_llm_mutator import FAST_RETRY, search_spec

SEED = '''\
"""Batching: how long to wait and how many requests to take."""
WAIT_MS = 4.0
MAX_BATCH = 16
SKEW = -0.5


def batch_size(queue_length, oldest_wait_ms):
    if oldest_wait_ms > WAIT_MS:
        return min(queue_length, MAX_BATCH)
    return max(1, int(queue_length * (1.0 + SKEW)))
'''
PARAMETERS = [
    ParameterSpec(name="WAIT_MS", min=0.5, max=50, step=0.5),
    ParameterSpec(name="MAX_BATCH", min=1, max=64, integer=True),
    ParameterSpec(name="SKEW", min=-1, max=1),
]
SIGNATURE = "batch_size(queue_length, oldest_wait_ms) -> int"
EXAMPLE_01 = REPO / "examples" / "01-cache-eviction"


def policy_spec(seed: str = SEED) -> PolicySpec:
    return PolicySpec(
        kind="parameters",
        entrypoint="batch_size",
        signature=SIGNATURE,
        description="How many queued requests to send as one batch.",
        seed=PolicySource(inline=seed),
        parameters=PARAMETERS,
    )


# -- reading and checking ------------------------------------------------------------------
def test_the_values_are_read_in_declaration_order_with_their_types() -> None:
    assert read_values(SEED, PARAMETERS) == {"WAIT_MS": 4.0, "MAX_BATCH": 16, "SKEW": -0.5}
    whole = SEED.replace("MAX_BATCH = 16", "MAX_BATCH = 16.0")
    assert isinstance(read_values(whole, PARAMETERS)["MAX_BATCH"], int)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("WAIT_MS = 4.0", "WAIT_MS = 2.0 * 2"), "number literal"),
        (("WAIT_MS = 4.0", "WAIT_MS = 4.0\nWAIT_MS = 5.0"), "assigned 2 times"),
        (("WAIT_MS = 4.0", "WAIT = 4.0"), "is not assigned"),
        (("WAIT_MS = 4.0", "WAIT_MS: float = 4.0"), "number literal"),
        (("WAIT_MS = 4.0", "WAIT_MS = 80.0"), r"must lie in \[0.5, 50\]"),
        (("MAX_BATCH = 16", "MAX_BATCH = 16.5"), "whole number"),
        (("WAIT_MS = 4.0", "WAIT_MS = 4.2"), r"0.5 plus a whole number of steps of 0.5"),
        (("SKEW = -0.5", "SKEW = True"), "number literal"),
        (("SKEW = -0.5", "SKEW = float('nan')"), "number literal"),
        (("def batch_size", "def batch_size("), "does not parse"),
    ],
)
def test_a_program_that_breaks_the_contract_is_named_for_what_it_breaks(
    change: tuple[str, str], problem: str
) -> None:
    with pytest.raises(ParameterError, match=problem):
        read_values(SEED.replace(*change), PARAMETERS)


def test_a_candidate_may_move_values_within_bounds_and_nothing_else() -> None:
    moved = SEED.replace("WAIT_MS = 4.0", "WAIT_MS = 7.5").replace("SKEW = -0.5", "SKEW = 0.1")
    assert values_only_problem(SEED, moved, PARAMETERS) is None
    edited = SEED.replace("min(queue_length, MAX_BATCH)", "max(queue_length, MAX_BATCH)")
    assert "only the values" in str(values_only_problem(SEED, edited, PARAMETERS))
    out_of_bounds = SEED.replace("MAX_BATCH = 16", "MAX_BATCH = 65")
    assert "must lie in" in str(values_only_problem(SEED, out_of_bounds, PARAMETERS))
    # comments and blank lines are not the program: a reformatted candidate passes
    assert values_only_problem(SEED, SEED.replace('"""', '# x\n"""', 1), PARAMETERS) is None


def bounds() -> list[ParameterBounds]:
    return [ParameterBounds(p.name, p.min, p.max, p.integer, p.step) for p in PARAMETERS]


def test_the_builtin_mutator_keeps_to_the_contract() -> None:
    mutator = BuiltinMutator("batch_size", bounds())
    moves_of_skew = 0
    for seed in range(60):
        kind = list(MutationKind)[seed % len(MutationKind)]
        request = MutationRequest(parent_code=SEED, seed=seed, kind=kind)
        result = mutator.mutate(request, lambda _: False)
        assert result.code is not None
        assert values_only_problem(SEED, result.code, PARAMETERS) is None  # on the grid too
        # a negative value is moved from where it is, not from the middle of its range
        if "SKEW:" in result.description:
            moves_of_skew += 1
            assert "SKEW: -0.5 -> " in result.description, result.description
    assert moves_of_skew > 0


# -- the models ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[MutationServer]:
    with running_mutation_server(seed=3) as running:
        yield running


def test_the_prompt_lists_the_parameters_and_asks_for_their_values_only() -> None:
    brief = PolicyBrief("batch_size", SIGNATURE, "", "parameters", tuple(PARAMETERS))
    task = build_prompt(MutationRequest(parent_code=SEED, seed=1), brief).user
    assert "`MAX_BATCH`: a whole number from 1 to 64" in task
    assert "`SKEW`: from -1 to 1" in task
    assert "`WAIT_MS`: from 0.5 to 50, in steps of 0.5" in task
    assert "Every other line must stay exactly as it is" in task


def test_a_models_answer_that_changes_more_than_the_values_never_reaches_the_search(
    server: MutationServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RETUNE_TEST_LLM_KEY", "sk-test")
    server.reset()
    audit = tmp_path / "llm-calls.jsonl"
    mutator = build_llm_mutator(
        search_spec(server.base_url), policy_spec(), Ledger(Budget()), None, audit, 1,
        retry=FAST_RETRY,
    )  # fmt: skip
    programs = 0
    for seed in range(16):
        request = MutationRequest(parent_code=SEED, seed=seed)
        result = mutator.mutate(request, lambda _: False)
        if result.code is not None:
            programs += 1
            assert values_only_problem(SEED, result.code, PARAMETERS) is None
    outcomes = [json.loads(line)["outcome"] for line in audit.read_text().splitlines()]
    # the stand-in answers the values task, and now and then breaks it (a value past its
    # range, another line changed): those answers are refused, none reaches the search
    assert programs >= 8
    assert outcomes.count("parameters") >= 1, outcomes


class ScriptedModel:
    """An endpoint answering with ``answers`` in turn; it keeps what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers, self.asked = list(answers), []

    def complete(self, messages: list[dict[str, str]], **_: Any) -> CallResult:
        self.asked.append(messages)
        text = self.answers.pop(0)
        return CallResult("ok", text, "stop", 500, 40, usage_reported=True)


def edit(line: str, new: str) -> str:
    return f"<<<<<<< SEARCH\n{line}\n=======\n{new}\n>>>>>>> REPLACE\n"


def test_a_value_out_of_bounds_is_repaired_and_a_values_only_answer_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETUNE_TEST_LLM_KEY", "sk-test")
    mutator = build_llm_mutator(
        search_spec("http://127.0.0.1:9"), policy_spec(), Ledger(Budget()), None, None, 1
    )
    model = ScriptedModel(
        edit("WAIT_MS = 4.0", "WAIT_MS = 80.0"), edit("WAIT_MS = 4.0", "WAIT_MS = 6.5")
    )
    for tier in mutator.tiers:
        monkeypatch.setattr(tier.endpoint, "complete", model.complete)
    result = mutator.mutate(MutationRequest(parent_code=SEED, seed=1), lambda _: False)
    assert result.code is not None
    assert read_values(result.code, PARAMETERS)["WAIT_MS"] == 6.5
    assert values_only_problem(SEED, result.code, PARAMETERS) is None
    assert "must lie in [0.5, 50]" in model.asked[1][-1]["content"]  # the repair says why


def test_a_model_that_keeps_breaking_the_task_rests_and_the_builtin_mutator_moves_the_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETUNE_TEST_LLM_KEY", "sk-test")
    mutator = build_llm_mutator(
        search_spec("http://127.0.0.1:9"),
        policy_spec(),
        Ledger(Budget()),
        BuiltinMutator("batch_size", bounds()),
        None,
        1,
    )
    model = ScriptedModel(*[edit("WAIT_MS = 4.0", "WAIT_MS = 80.0")] * 100)
    for tier in mutator.tiers:
        monkeypatch.setattr(tier.endpoint, "complete", model.complete)
    results = [
        mutator.mutate(MutationRequest(parent_code=SEED, seed=seed), lambda _: False)
        for seed in range(30)
    ]
    # eight tries (an answer and its repair each), a rest of 20 mutations, one more try
    tries = mutator.rests.policy.after + 1
    assert len(model.asked) == 2 * tries
    assert all(result.code is not None and result.model is None for result in results)
    assert all(values_only_problem(SEED, r.code or "", PARAMETERS) is None for r in results)
    assert sum("rested" in result.description for result in results) == 30 - tries


# -- the seed and the revision ------------------------------------------------------------
def test_a_seed_that_does_not_hold_its_parameters_stops_the_search_naming_the_seed() -> None:
    bad_seed = SEED.replace("SKEW = -0.5", "SKEW = 2.0")
    spec = TargetSpec.model_validate(
        {
            "workloadRef": {"name": "api"},
            "policy": {
                "kind": "parameters",
                "entrypoint": "batch_size",
                "signature": SIGNATURE,
                "seed": {"inline": bad_seed},
                "parameters": [p.model_dump() for p in PARAMETERS],
            },
            "evaluator": {"image": "eval:1"},
        }
    )
    builder = SearchBuilder(
        SearchSetup(spec, EvaluationContext(), seed_code=bad_seed, evaluator_identity="e")
    )
    never_used: Any = None  # the search stops before it needs an executor or a store
    with pytest.raises(SearchConfigError, match=r"spec.policy.seed: .* parameter 'SKEW' must lie"):
        builder.build(executor=never_used, store=never_used)


def test_a_revision_holds_the_values_as_json_beside_the_program(tmp_path: Path) -> None:
    owner = {"apiVersion": "retune.dev/v1alpha1", "kind": "OptimizationTarget"}
    owner |= {"name": "batcher", "uid": "1"}
    values = read_values(SEED, PARAMETERS)
    manifest = revision_manifest(
        name="batcher-policy-x", namespace="shop", owner=owner, code=SEED, file_name="policy.py",
        values=values,
    )  # fmt: skip
    assert set(manifest["data"]) == {"policy.py", "policy.json"}
    assert json.loads(manifest["data"]["policy.json"]) == values
    assert values_file_name("batcher") == "batcher.json"
    assert values_file_name("params.cfg") == "params.cfg.json"

    export = Export("r", "policy.py", SEED, "seed", SEED, {}, manifest["data"]["policy.json"])
    written = {path.name for path in write_export(export, tmp_path)}
    assert "policy.json" in written
    assert json.loads((tmp_path / "policy.json").read_text()) == values


# -- a whole local run with the models ----------------------------------------------------
WEIGHTED_SEED = """\
FREQUENCY_WEIGHT = 0.0
RETURN_WEIGHT = 0.0


def priority(size, now, last_access, access_count, insert_time, evicted_count, last_evicted):
    return last_access + FREQUENCY_WEIGHT * access_count + RETURN_WEIGHT * last_evicted
"""
WEIGHTS = [
    ParameterSpec(name="FREQUENCY_WEIGHT", min=0, max=2000),
    ParameterSpec(name="RETURN_WEIGHT", min=0, max=2),
]


@pytest.mark.slow
def test_an_llm_search_of_a_parameters_policy_moves_only_its_values(
    server: MutationServer, tmp_path: Path
) -> None:
    """examples/01 with LRU's two weights to tune, searched by the stand-in models through
    ``retune run``: they answer the values task, and now and then break it (a value past
    its range, another line changed) as real models do; those answers are refused and
    repaired, and everything the search keeps is the seed with its weights moved."""
    target = tmp_path / "target"
    shutil.copytree(EXAMPLE_01, target, ignore=shutil.ignore_patterns("workload", "baselines*"))
    (target / "seed_policy.py").write_text(WEIGHTED_SEED)
    spec = (target / "target.yaml").read_text()
    declared = "".join(
        f"      - {{name: {w.name}, min: {w.min:g}, max: {w.max:g}}}\n" for w in WEIGHTS
    )
    (target / "target.yaml").write_text(
        spec.replace("    kind: code\n", f"    kind: parameters\n    parameters:\n{declared}")
    )
    output = tmp_path / "out"
    server.reset()
    command = [
        sys.executable, "-m", "retune.cli", "run", str(target / "target.yaml"),
        "--mutator", "llm", "--llm-base-url", server.base_url,
        "--model", "cheap=small@0.15/0.60", "--model", "strong=large@2.50/10.00",
        "--max-evaluations", "24", "--seed", "7", "--quiet", "--output", str(output),
    ]  # fmt: skip
    paths = [str(REPO / "operator"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads((output / "result.json").read_text())

    assert result["best_score"] > result["seed_score"]
    assert result["tokens"] == server.stats()  # refused answers are paid for and counted
    outcomes = Counter(
        json.loads(line)["outcome"]
        for line in (output / "llm-calls.jsonl").read_text().splitlines()
    )
    assert outcomes["ok"] >= 5 and outcomes["parameters"] >= 1, outcomes
    state = decode_state((output / "checkpoint.retune").read_bytes())
    kept = [e.code for e in Archive(state.archive).elites()]
    assert len(kept) >= 3
    for code in [*kept, (output / "best_policy.py").read_text()]:
        assert values_only_problem(WEIGHTED_SEED, code, WEIGHTS) is None
