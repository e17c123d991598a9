"""The LLM mutator against models that answer badly: the stand-in server's zoo.

Given a model with one of the zoo's behaviours (``bench/zoo.py``), when it is asked for
mutations through the real ``openai`` client, then most calls still yield a program the
sandbox accepts; an unusable answer gets exactly one repair round, on the same tier,
carrying the exact problem; ordinary edits never reach the strong tier, whose spend stays
within its share of the budget; reasoning models and gateways work.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from retune.evaluate.allowlist import check_policy
from retune.search.builtin import BuiltinMutator
from retune.search.ledger import Budget, Ledger
from retune.search.llm import LLMMutator, RetryPolicy, build_llm_mutator
from retune.search.llm.mutator import REPAIR_EDIT_OUTPUT_TOKENS
from retune.search.mutation import Inspiration, MutationKind, MutationRequest, MutatorRejected
from retune.spec import ModelTier, PolicySource, PolicySpec, Pricing, SearchSpec, TieringSpec
from tests.llm_server import REPO, MutationServer, running_mutation_server

sys.path.insert(0, str(REPO / "bench"))
from zoo import BEHAVIOURS

SEED_POLICY = (REPO / "examples/01-cache-eviction/seed_policy.py").read_text()
SIGNATURE = "priority(key, now, last_access, hits, size, evictions, last_evicted) -> float"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.05)
CHEAP = Pricing(input_per_million=0.15, output_per_million=0.60)
STRONG = Pricing(input_per_million=2.50, output_per_million=10.00)


@pytest.fixture(scope="module")
def server() -> Iterator[MutationServer]:
    with running_mutation_server(seed=11) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: MutationServer) -> None:
    server.reset()


def tier(server: MutationServer, name: str, model: str, **options: Any) -> ModelTier:
    role = "mutate" if name == "cheap" else "paradigm"
    prices = CHEAP if role == "mutate" else STRONG
    return ModelTier(
        name=name, role=role, base_url=server.base_url, model=model, pricing=prices, **options
    )


def make_mutator(
    tiers: list[ModelTier],
    ledger: Ledger | None = None,
    audit: Path | None = None,
    strong_share: float = 0.3,
) -> LLMMutator:
    policy = PolicySpec(
        entrypoint="priority",
        signature=SIGNATURE,
        description="Choose which cached object to evict; maximise the byte hit ratio.",
        seed=PolicySource(inline=SEED_POLICY),
    )
    search = SearchSpec(mutator="llm", models=tiers, tiering=TieringSpec(strong_share=strong_share))
    return build_llm_mutator(
        search,
        policy,
        ledger or Ledger(Budget()),
        BuiltinMutator("priority"),
        audit,
        seed=3,
        retry=FAST_RETRY,
    )


def request(seed: int, kind: MutationKind = MutationKind.MUTATE) -> MutationRequest:
    other = SEED_POLICY.replace("1.0", "2.0", 1)
    return MutationRequest(
        kind=kind,
        parent_code=SEED_POLICY,
        parent_score=0.46,
        parent_subscores={"steady": 0.55, "scan": 0.22},
        parent_feedback="scan phase: hot objects evicted by one-time reads",
        inspirations=[Inspiration(code=other + "\n# a longer reference\n" * 30, score=0.44)],
        seed=seed,
        candidate_index=seed,
    )


def never_duplicate(code: str) -> bool:
    return False


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the zoo -----------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_every_behaviour_mostly_yields_programs_the_sandbox_accepts(
    server: MutationServer, tmp_path: Path, behaviour: str
) -> None:
    audit = tmp_path / "calls.jsonl"
    tiers = [
        tier(server, "cheap", f"small:{behaviour}"),
        tier(server, "strong", f"large:{behaviour}"),
    ]
    mutator = make_mutator(tiers, audit=audit)
    kinds = [MutationKind.MUTATE] * 8 + [MutationKind.PARADIGM] * 2
    for seed, kind in enumerate(kinds):
        result = mutator.mutate(request(seed, kind), never_duplicate)
        assert result.ok and result.code is not None
        assert check_policy(result.code, "priority") == []
    paid = [line for line in audit_lines(audit) if line["outcome"] != "budget"]
    usable = sum(line["outcome"] == "ok" for line in paid)
    assert usable / len(paid) >= 0.6, [line["detail"][:80] for line in paid]


def test_a_mistake_gets_exactly_one_repair_on_the_same_tier_carrying_the_problem(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "calls.jsonl"
    tiers = [tier(server, "cheap", "small:undefined-helper"), tier(server, "strong", "large")]
    mutator = make_mutator(tiers, audit=audit)
    results = [mutator.mutate(request(seed), never_duplicate) for seed in range(12)]
    lines, calls = audit_lines(audit), server.calls()
    assert len(lines) == len(calls)  # every call answered is on record, in order
    repaired = [i for i, line in enumerate(lines) if line["repair"]]
    helper = [i for i in repaired if lines[i - 1]["outcome"] == "undefined"]
    assert helper, "the zoo's helper calls should need some repairs"
    for i in repaired:
        first, repair = lines[i - 1], lines[i]
        assert not first["repair"] and first["outcome"] != "ok"
        assert (repair["tier"], repair["candidate_index"]) == ("cheap", first["candidate_index"])
        assert calls[i]["follow_up"] and first["detail"] in calls[i]["last_message"]
    for i in helper:
        assert "`clamp_score`" in lines[i - 1]["detail"]
        assert lines[i]["outcome"] != "undefined"  # told exactly what was wrong, it was fixed
    assert sum(lines[i]["outcome"] == "ok" for i in helper) >= len(helper) / 2
    per_candidate = [sum(line["candidate_index"] == r for line in lines) for r in range(12)]
    assert max(per_candidate) == 2  # never a second repair
    assert all(result.ok for result in results)
    assert {line["tier"] for line in lines} == {"cheap"}  # never escalated


def test_an_answer_cut_off_at_its_limit_is_repaired_cheaply_with_an_edit_only(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator([tier(server, "cheap", "small:verbose")], audit=audit)
    results = [mutator.mutate(request(seed), never_duplicate) for seed in range(10)]
    lines, calls = audit_lines(audit), server.calls()
    cut = [i for i, line in enumerate(lines) if line["outcome"] == "truncated"]
    assert cut, "the zoo's verbose model should run out of tokens sometimes"
    for i in cut:
        first, repair = lines[i], lines[i + 1]
        assert repair["repair"] and calls[i + 1]["output_limit"] == REPAIR_EDIT_OUTPUT_TOKENS
        assert calls[i]["output_limit"] == 2048
        assert "SEARCH/REPLACE blocks only" in calls[i + 1]["last_message"]
        # The cut-off answer's prose is not paid for again in the repair's prompt.
        assert repair["prompt_tokens"] < first["prompt_tokens"] + first["completion_tokens"] / 4
        assert repair["outcome"] == "ok"
    assert all(result.ok for result in results)


def test_a_repair_that_fails_again_ends_in_the_builtin_mutator_never_the_strong_tier(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(
        [tier(server, "cheap", "small"), tier(server, "strong", "large")], audit=audit
    )
    server.set_faults("garbage:1.0")
    result = mutator.mutate(request(1), never_duplicate)
    assert result.ok and result.model is None
    lines = audit_lines(audit)
    assert [(line["tier"], line["repair"], line["outcome"]) for line in lines] == [
        ("cheap", False, "no_code"),
        ("cheap", True, "no_code"),
    ]


# -- the strong tier's share -------------------------------------------------------------
def test_the_strong_tier_never_spends_past_its_share_of_the_budget(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "calls.jsonl"
    budget = 0.1
    ledger = Ledger(Budget(max_usd=budget))
    tiers = [tier(server, "cheap", "small"), tier(server, "strong", "large", max_output_tokens=512)]
    mutator = make_mutator(tiers, ledger, audit, strong_share=0.3)
    results = [
        mutator.mutate(request(seed, MutationKind.PARADIGM), never_duplicate) for seed in range(16)
    ]
    state = ledger.snapshot()
    assert 0 < state.strong_usd <= 0.3 * budget
    assert state.strong_usd == pytest.approx(state.models["strong"].usd)
    # Past the cap, paradigm shifts became the cheap tier's ordinary edits.
    assert {r.model for r in results} == {"strong", "cheap"}
    lines = audit_lines(audit)
    assert any(line["tier"] == "strong" and line["outcome"] == "budget" for line in lines)
    assert "strong tiers' share" in next(
        line["detail"] for line in lines if line["outcome"] == "budget"
    )


def test_with_a_zero_share_the_strong_tier_is_never_called(server: MutationServer) -> None:
    ledger = Ledger(Budget(max_usd=0.05))
    tiers = [tier(server, "cheap", "small"), tier(server, "strong", "large")]
    mutator = make_mutator(tiers, ledger, strong_share=0.0)
    for seed in range(3):
        assert mutator.mutate(request(seed, MutationKind.INIT), never_duplicate).model == "cheap"
    assert set(server.stats()) == {"small"} and ledger.snapshot().strong_usd == 0


# -- reasoning models and gateways -------------------------------------------------------
def test_a_reasoning_model_is_asked_as_it_says(server: MutationServer) -> None:
    ledger = Ledger(Budget())
    mutator = make_mutator([tier(server, "cheap", "small:reasoning")], ledger)
    # Several calls at once meet the first refusal: each must adapt, none may give up.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: mutator.mutate(request(s), never_duplicate), range(8)))
    assert all(r.model == "cheap" for r in results)
    # The 400s were not paid for; every answered call carried what the model takes.
    assert all(call["parameters"] == ["max_completion_tokens"] for call in server.calls())
    assert (
        ledger.snapshot().models["cheap"].prompt_tokens
        == server.stats()["small:reasoning"]["prompt_tokens"]
    )


def test_a_reasoning_model_configured_as_such_is_never_refused(server: MutationServer) -> None:
    model = tier(
        server,
        "cheap",
        "small:reasoning",
        token_limit_parameter="max_completion_tokens",
        send_temperature=False,
    )
    mutator = make_mutator([model])
    endpoint = mutator.tiers[0].endpoint
    assert mutator.mutate(request(0), never_duplicate).model == "cheap"
    assert (endpoint.token_parameter, endpoint.send_temperature) == ("max_completion_tokens", False)


def test_a_max_tokens_only_setting_surfaces_the_400_as_an_error(server: MutationServer) -> None:
    model = tier(server, "cheap", "small:reasoning", token_limit_parameter="max_tokens")
    with pytest.raises(MutatorRejected) as raised:
        make_mutator([model]).mutate(request(0), never_duplicate)
    assert raised.value.path == "spec.search.models[0]"
    assert "max_completion_tokens" in str(raised.value) and "HTTP 400" in str(raised.value)


def test_a_gateway_gets_its_headers_and_query_parameters(server: MutationServer) -> None:
    model = tier(
        server,
        "cheap",
        "small",
        headers={"X-Route": "team-a"},
        query={"api-version": "2024-10-21"},
    )
    assert make_mutator([model]).mutate(request(0), never_duplicate).model == "cheap"
    (call,) = server.calls()
    assert call["headers"]["x-route"] == "team-a"
    assert call["query"] == {"api-version": "2024-10-21"}


# -- an endpoint that refuses the request stops the search -------------------------------
class _Refused:
    concurrency = 1

    def mutate(self, request: MutationRequest, is_duplicate: Any) -> Any:
        raise MutatorRejected("tier 'cheap': HTTP 400: bad parameter", "spec.search.models[0]")


def test_an_endpoint_refusal_stops_the_search_with_an_error_naming_the_field(
    tmp_path: Path,
) -> None:
    from retune.search.config import EngineConfig
    from retune.search.engine import Engine, SearchConfigError
    from retune.store.file import FileStore
    from tests.staticscore import StaticExecutor

    config = EngineConfig(budget=Budget(max_evaluations=20), cells=8, initial_population=4)
    engine = Engine(
        config,
        seed_code="def f(x, y):\n    return x + y\n",
        mutator=_Refused(),
        executor=StaticExecutor(),
        store=FileStore(tmp_path / "ck"),
    )
    with pytest.raises(SearchConfigError) as raised:
        engine.run()
    assert raised.value.path == "spec.search.models[0]"
    assert str(raised.value).startswith("spec.search.models[0]: tier 'cheap': HTTP 400")
