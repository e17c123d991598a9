"""The LLM mutator against the stand-in model server, through the real ``openai`` client.

Given the server on a loopback port, when mutations are asked for -- under faults, under a
tight budget, from many threads -- then the mutator never raises, never spends past the
budget, and the ledger holds exactly the tokens the server says it served.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from retune.search.builtin import BuiltinMutator
from retune.search.ledger import Budget, Ledger, LedgerState
from retune.search.llm import (
    LLMConfigError,
    LLMMutator,
    RetryPolicy,
    build_llm_mutator,
)
from retune.search.llm import mutator as mutator_module
from retune.search.llm.audit import NOT_CALLS
from retune.search.llm.client import ChatEndpoint
from retune.search.llm.mutator import Tier, request_for_tier
from retune.search.llm.pricing import cost_usd, worst_case_usd
from retune.search.llm.prompts import PolicyBrief, build_prompt
from retune.search.llm.rest import RestPolicy, TierRests
from retune.search.mutation import (
    Inspiration,
    MutationKind,
    MutationRequest,
    MutationResult,
    MutatorRejected,
)
from retune.spec import ApiKeySource, ModelTier, PolicySource, PolicySpec, Pricing, SearchSpec
from tests.llm_server import MutationServer, running_mutation_server

PARENT = '''\
"""Eviction priority: the lowest is evicted first."""

RECENCY = 1.0


def priority(key, now, last_access, hits, size, evictions, last_evicted):
    age = now - last_access
    score = hits / (1.0 + RECENCY * age)
    if size > 65536:
        score = score * 0.5
    return score - 0.1 * evictions
'''
SIGNATURE = "priority(key, now, last_access, hits, size, evictions, last_evicted) -> float"
API_KEY = "sk-test-do-not-log-4f9c2e"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.05)
STALL_TIMEOUT = 1.0  # the tiers' client timeout; the server stalls longer than this


@pytest.fixture(scope="module")
def server() -> Iterator[MutationServer]:
    with running_mutation_server(seed=7, stall_seconds=4.0, retry_after=0.05) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(server: MutationServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.setenv("RETUNE_TEST_LLM_KEY", API_KEY)


def policy_spec() -> PolicySpec:
    return PolicySpec(
        entrypoint="priority",
        signature=SIGNATURE,
        description="Choose which cached object to evict; maximise the byte hit ratio.",
        seed=PolicySource(inline=PARENT),
    )


def search_spec(base_url: str, **tier_options: Any) -> SearchSpec:
    key = ApiKeySource(env="RETUNE_TEST_LLM_KEY")
    tier_options = {"timeout_seconds": STALL_TIMEOUT, **tier_options}
    models = [
        ModelTier(
            name="small",
            role="mutate",
            base_url=base_url,
            model="small",
            api_key=key,
            pricing=Pricing(input_per_million=0.15, output_per_million=0.60),
            **tier_options,
        ),
        ModelTier(
            name="large",
            role="paradigm",
            base_url=base_url,
            model="large",
            api_key=key,
            pricing=Pricing(input_per_million=2.50, output_per_million=10.00),
            **tier_options,
        ),
    ]
    return SearchSpec(mutator="llm", models=models)


def make_mutator(
    server: MutationServer,
    ledger: Ledger | None = None,
    *,
    seed: int = 1,
    audit_path: Path | None = None,
    fallback: bool = True,
    **tier_options: Any,
) -> LLMMutator:
    mutator = build_llm_mutator(
        search_spec(server.base_url, **tier_options),
        policy_spec(),
        ledger or Ledger(Budget()),
        BuiltinMutator("priority"),
        audit_path,
        seed,
        retry=FAST_RETRY,
    )
    if not fallback:
        mutator.fallback = None
    return mutator


def request(seed: int, kind: MutationKind = MutationKind.MUTATE) -> MutationRequest:
    return MutationRequest(
        kind=kind,
        parent_code=PARENT,
        parent_score=0.41,
        parent_subscores={"steady": 0.55, "scan": 0.22, "shift": 0.46},
        parent_feedback="scan phase: hot objects evicted by one-time reads",
        inspirations=[Inspiration(code=PARENT.replace("0.5", "0.25"), score=0.39)],
        seed=seed,
        candidate_index=seed,
    )


def never_duplicate(code: str) -> bool:
    return False


def ledger_tokens(ledger: Ledger) -> dict[str, dict[str, int]]:
    return {
        model: {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        for model, usage in ledger.snapshot().models.items()
        if usage.prompt_tokens or usage.completion_tokens
    }


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def worst_case(mutator: LLMMutator, tier_name: str, planned: MutationRequest) -> float:
    tier = next(t for t in mutator.tiers if t.name == tier_name)
    prompt = build_prompt(planned, mutator.policy)
    return worst_case_usd(tier.prices, prompt.texts(), tier.max_output_tokens)


# -- accounting --------------------------------------------------------------------------
def test_the_ledger_holds_exactly_the_tokens_the_server_served(server: MutationServer) -> None:
    ledger = Ledger(Budget())
    mutator = make_mutator(server, ledger)
    kinds = [MutationKind.MUTATE] * 8 + [MutationKind.PARADIGM] * 2 + [MutationKind.INIT] * 2
    with ThreadPoolExecutor(max_workers=mutator.concurrency) as pool:
        results = list(
            pool.map(lambda i: mutator.mutate(request(i, kinds[i]), never_duplicate), range(12))
        )

    assert all(result.ok for result in results), [r.failure for r in results]
    assert [r.model for r in results] == ["small"] * 8 + ["large"] * 4
    assert ledger_tokens(ledger) == server.stats()
    state = ledger.snapshot()
    assert state.models["small"].calls == 8 and state.models["large"].calls == 4
    for name, (per_in, per_out) in {"small": (0.15, 0.60), "large": (2.50, 10.00)}.items():
        usage = state.models[name]
        expected = (usage.prompt_tokens * per_in + usage.completion_tokens * per_out) / 1e6
        assert usage.usd == pytest.approx(expected)
    assert state.usd_spent == pytest.approx(sum(u.usd for u in state.models.values()))


def test_an_answer_in_the_requested_format_becomes_a_program(server: MutationServer) -> None:
    mutator = make_mutator(server)
    mutated = mutator.mutate(request(3), never_duplicate)
    rewritten = mutator.mutate(request(3, MutationKind.PARADIGM), never_duplicate)
    assert mutated.ok and "diff blocks applied" in mutated.description
    assert rewritten.ok and "full program" in rewritten.description
    assert mutated.code != PARENT and rewritten.code != PARENT


# -- budget ------------------------------------------------------------------------------
def test_a_call_that_could_overshoot_the_budget_is_never_made(server: MutationServer) -> None:
    probe = make_mutator(server)
    worst = worst_case(probe, "small", request(0))
    budget = worst * 1.2
    ledger = Ledger(Budget(max_usd=budget))
    mutator = make_mutator(server, ledger, fallback=True)

    results: list[MutationResult] = []
    for seed in range(200):
        before = server.stats()
        spent_before = ledger.usd_spent
        result = mutator.mutate(request(seed), never_duplicate)
        results.append(result)
        if not result.ok:
            break
    refused = results[-1]
    assert refused.failure is not None and refused.failure.startswith("budget")
    assert refused.code is None  # not quietly replaced by the free fallback mutator
    assert server.stats() == before  # the refused call never reached the server
    assert spent_before + worst > budget  # it really could have overshot
    assert len(results) > 2
    assert ledger.usd_spent <= budget
    assert ledger_tokens(ledger) == server.stats()


def test_a_budget_below_one_call_refuses_the_first(server: MutationServer) -> None:
    ledger = Ledger(Budget(max_usd=1e-6))
    result = make_mutator(server, ledger).mutate(request(0), never_duplicate)
    assert not result.ok and (result.failure or "").startswith("budget")
    assert server.stats() == {}
    assert ledger.usd_spent == 0


def test_concurrent_callers_never_overshoot_together(server: MutationServer) -> None:
    probe = make_mutator(server)
    budget = worst_case(probe, "small", request(0)) * 3
    ledger = Ledger(Budget(max_usd=budget))
    mutator = make_mutator(server, ledger, max_concurrency=8)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: mutator.mutate(request(i), never_duplicate), range(80)))
    assert any(r.ok for r in results)
    assert any((r.failure or "").startswith("budget") for r in results)
    assert ledger.usd_spent <= budget
    assert ledger_tokens(ledger) == server.stats()


def test_an_answer_that_cannot_be_read_still_settles_its_reservation(
    server: MutationServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Whatever reading an answer raises (CPython 3.11's parser can fail spuriously under
    # threads, gh-106905), the call is paid and its reservation settled: a reservation left
    # held would stall a search near the end of its budget, waiting for it forever.
    budget = worst_case(make_mutator(server), "small", request(0)) * 2.5
    ledger = Ledger(Budget(max_usd=budget))
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, ledger, audit_path=audit)
    read = mutator_module.parse_answer
    failures = iter([SystemError("AST constructor recursion depth mismatch")])

    def flaky_parse(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return read(*args, **kwargs)

    monkeypatch.setattr(mutator_module, "parse_answer", flaky_parse)
    result = mutator.mutate(request(0), never_duplicate)
    assert result.ok and result.model == "small"
    assert [line["outcome"] for line in audit_lines(audit)] == ["unreadable", "ok"]
    assert ledger_tokens(ledger) == server.stats()  # the unreadable answer is paid for
    assert ledger.reserve_usd(budget - ledger.usd_spent) is not None  # nothing left held


@pytest.mark.parametrize("kind", [MutationKind.PARADIGM, MutationKind.INIT])
def test_a_rewrite_the_strong_tier_cannot_afford_goes_to_the_cheap_one_as_an_edit(
    server: MutationServer, tmp_path: Path, kind: MutationKind
) -> None:
    probe = make_mutator(server)
    planned = request(0, kind)
    budget = worst_case(probe, "small", planned) * 1.5
    assert worst_case(probe, "large", planned) > budget
    ledger = Ledger(Budget(max_usd=budget))
    audit = tmp_path / "calls.jsonl"
    result = make_mutator(server, ledger, audit_path=audit).mutate(planned, never_duplicate)
    assert result.ok and result.model == "small"
    assert set(server.stats()) == {"small"}
    # The cheap tier is asked for SEARCH/REPLACE edits, not for a whole program.
    assert [(line["tier"], line["kind"], line["outcome"]) for line in audit_lines(audit)] == [
        ("large", str(kind), "budget"),
        ("small", "mutate", "ok"),
    ]
    assert "diff blocks applied" in result.description


def test_a_strong_share_too_small_for_a_second_worst_case_still_pays_for_more_rewrites(
    server: MutationServer, tmp_path: Path
) -> None:
    # Given a budget whose strong share covers the strong tier's worst case 1.05 times (a
    # real call costs a fraction of it)
    probe = make_mutator(server)
    planned = request(0, MutationKind.PARADIGM)
    worst = worst_case(probe, "large", planned)
    ledger = Ledger(Budget(max_usd=worst * 1.05 / mutator_module.DEFAULT_STRONG_SHARE))
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, ledger, audit_path=audit)
    cap = mutator.strong_cap_usd
    assert cap is not None
    # When rewrites are asked for one after another
    results = [
        mutator.mutate(request(seed, MutationKind.PARADIGM), never_duplicate) for seed in range(12)
    ]
    # Then the strong tier answers more than once: later calls are reserved with the output
    # limit that fits what is left of the share
    strong = [line for line in audit_lines(audit) if line["tier"] == "large"]
    served = [line for line in strong if line["outcome"] != "budget"]
    assert sum(r.model == "large" for r in results) > 1
    assert any(line["reserved_usd"] < worst * 0.99 for line in served)
    assert all(line["reserved_usd"] <= cap for line in served)
    # and never spends past its share or the budget; once not even a short answer fits,
    # the rewrite goes to the cheap tier as an edit
    assert ledger.snapshot().strong_usd <= cap
    assert ledger.usd_spent <= ledger.budget.max_usd
    assert strong[-1]["outcome"] == "budget" and results[-1].model == "small"
    assert ledger_tokens(ledger) == server.stats()


def test_the_cheap_tier_is_asked_exactly_as_for_an_ordinary_edit() -> None:
    planned = request(3, MutationKind.PARADIGM)
    assert request_for_tier(planned, "mutate") == request(3, MutationKind.MUTATE)
    assert request_for_tier(planned, "paradigm") == planned
    assert request_for_tier(request(3, MutationKind.INIT), "init").kind is MutationKind.INIT


# -- faults ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "first_outcome"),
    [
        ("429", "rate_limited"),
        ("500", "server_error"),
        ("503", "server_error"),
        ("drop", "connection"),
        ("malformed", "malformed"),
        ("empty", "empty_choices"),
        ("garbage", "no_code"),
        ("stall", "timeout"),
    ],
)
def test_a_fault_is_retried_on_the_same_tier(
    server: MutationServer, tmp_path: Path, fault: str, first_outcome: str
) -> None:
    ledger = Ledger(Budget())
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, ledger, audit_path=audit)
    server.set_faults(f"{fault}:#1")

    result = mutator.mutate(request(5), never_duplicate)

    assert result.ok and result.model == "small"
    lines = audit_lines(audit)
    assert [(line["attempt"], line["outcome"]) for line in lines] == [(0, first_outcome), (1, "ok")]
    assert ledger_tokens(ledger) == server.stats()
    assert ledger.snapshot().models["small"].calls == 2
    assert ledger.snapshot().models["small"].failed_calls == 1
    if fault == "stall":
        assert lines[0]["latency_seconds"] >= STALL_TIMEOUT * 0.9


def test_a_rate_limit_is_waited_out_as_the_server_asks(server: MutationServer) -> None:
    waits: list[float] = []
    mutator = make_mutator(server)
    mutator._sleep = waits.append
    server.set_faults("429:#2")
    assert mutator.mutate(request(5), never_duplicate).ok
    assert len(waits) == 2 and all(0.05 <= wait <= 0.06 for wait in waits)


def test_a_truncated_answer_is_never_sent_broken(server: MutationServer) -> None:
    ledger = Ledger(Budget())
    mutator = make_mutator(server, ledger, fallback=False)
    server.set_faults("truncate:1.0")
    for seed in range(6):
        for kind in (MutationKind.MUTATE, MutationKind.PARADIGM):
            result = mutator.mutate(request(seed, kind), never_duplicate)
            if result.ok:
                assert result.code is not None
                compile(result.code, "<candidate>", "exec")
    assert ledger_tokens(ledger) == server.stats()


def test_a_failing_cheap_tier_is_never_replaced_by_the_strong_one(
    server: MutationServer, tmp_path: Path
) -> None:
    ledger = Ledger(Budget())
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, ledger, audit_path=audit)
    server.set_faults("500@small:1.0")

    result = mutator.mutate(request(2), never_duplicate)

    assert result.ok and result.model is None  # the built-in mutator wrote it
    outcomes = [(line["tier"], line["outcome"]) for line in audit_lines(audit)]
    assert outcomes == [("small", "server_error")] * 3
    usage = ledger.snapshot().models
    assert usage["small"].calls == 3 and usage["small"].prompt_tokens == 0
    assert "large" not in usage and server.stats() == {}


def test_when_every_tier_fails_the_fallback_mutator_answers(server: MutationServer) -> None:
    ledger = Ledger(Budget())
    mutator = make_mutator(server, ledger)
    server.set_faults("503:1.0")
    result = mutator.mutate(request(2, MutationKind.PARADIGM), never_duplicate)
    assert result.ok and result.model is None
    assert result.description.startswith("fallback after LLM failures")
    assert server.stats() == {} and ledger_tokens(ledger) == {}


def test_with_no_fallback_a_failed_mutation_says_why(server: MutationServer) -> None:
    mutator = make_mutator(server, fallback=False)
    server.set_faults("garbage:1.0")
    result = mutator.mutate(request(2), never_duplicate)
    assert not result.ok and "no_code" in (result.failure or "")


def test_an_unknown_model_stops_the_search_naming_the_tier(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "calls.jsonl"
    spec = search_spec(server.base_url)
    spec.models[0] = spec.models[0].model_copy(update={"model": "no-such-model"})
    mutator = build_llm_mutator(
        spec,
        policy_spec(),
        Ledger(Budget()),
        BuiltinMutator("priority"),
        audit,
        1,
        retry=FAST_RETRY,
    )
    with pytest.raises(MutatorRejected) as raised:
        mutator.mutate(request(1), never_duplicate)
    assert raised.value.path == "spec.search.models[0]"
    assert "no-such-model" in str(raised.value) and "HTTP 404" in str(raised.value)
    assert [line["outcome"] for line in audit_lines(audit)] == ["http_404"]  # not retried


def test_a_refused_connection_ends_in_the_fallback() -> None:
    spec = search_spec("http://127.0.0.1:9/v1")  # the discard port: nothing listens
    mutator = build_llm_mutator(
        spec,
        policy_spec(),
        Ledger(Budget()),
        BuiltinMutator("priority"),
        None,
        1,
        retry=FAST_RETRY,
    )
    result = mutator.mutate(request(1), never_duplicate)
    assert result.ok and result.model is None
    assert "connection" in result.description


def test_under_random_faults_the_mutator_never_raises(server: MutationServer) -> None:
    ledger = Ledger(Budget())
    # (no stalls here: a generous timeout, so that a slow answer on a loaded machine is not
    # given up by the client after the server has served, and counted, it)
    mutator = make_mutator(server, ledger, timeout_seconds=30.0)
    server.set_faults(
        "429:0.1,500:0.1,503:0.05,drop:0.1,malformed:0.1,empty:0.1,garbage:0.1,truncate:0.1"
    )
    kinds = list(MutationKind)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: mutator.mutate(request(i, kinds[i % 3]), never_duplicate), range(40))
        )
    assert all(result.ok for result in results)  # the builtin fallback covers the rest
    assert ledger_tokens(ledger) == server.stats()


# -- duplicates --------------------------------------------------------------------------
def test_a_duplicate_program_is_asked_for_again(server: MutationServer, tmp_path: Path) -> None:
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, audit_path=audit)
    seen: list[str] = []

    def first_is_known(code: str) -> bool:
        seen.append(code)
        return len(seen) == 1

    result = mutator.mutate(request(4), first_is_known)
    assert result.ok and result.code == seen[1] != seen[0]
    assert [line["outcome"] for line in audit_lines(audit)] == ["duplicate", "ok"]


# -- replay ------------------------------------------------------------------------------
def run_batch(server: MutationServer, seed: int, workers: int, order: list[int]) -> list[Any]:
    mutator = make_mutator(server, seed=seed)
    kinds = list(MutationKind)

    def one(index: int) -> tuple[int, Any]:
        result = mutator.mutate(request(index, kinds[index % 3]), never_duplicate)
        return index, (result.code, result.failure, result.model, result.description)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [outcome for _, outcome in sorted(pool.map(one, order))]


def test_the_same_seed_and_server_replay_the_same_results(server: MutationServer) -> None:
    server.set_faults("429:0.1,500:0.1,drop:0.05,malformed:0.05,empty:0.05,garbage:0.1")
    order = list(range(18))
    first = run_batch(server, seed=11, workers=1, order=order)
    stats_first = server.stats()
    server.reset()
    server.set_faults("429:0.1,500:0.1,drop:0.05,malformed:0.05,empty:0.05,garbage:0.1")
    shuffled = order[:]
    random.Random(3).shuffle(shuffled)
    second = run_batch(server, seed=11, workers=8, order=shuffled)
    assert first == second
    assert server.stats() == stats_first
    assert run_batch(server, seed=12, workers=4, order=order) != first


# -- the audit log -----------------------------------------------------------------------
def test_the_audit_log_has_a_line_per_call_and_never_the_key(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "audit" / "calls.jsonl"
    ledger = Ledger(Budget())
    mutator = make_mutator(server, ledger, audit_path=audit)
    server.set_faults("500:#1")
    for seed in range(3):
        mutator.mutate(request(seed, MutationKind.INIT), never_duplicate)
    text = audit.read_text()
    assert API_KEY not in text
    lines = audit_lines(audit)
    assert len(lines) == 4
    assert {line["model"] for line in lines} == {"large"}  # init falls back to the paradigm tier
    assert {
        "time",
        "model",
        "tier",
        "role",
        "kind",
        "attempt",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "usd",
        "latency_seconds",
    } <= set(lines[0])
    assert sum(line["usd"] for line in lines) == pytest.approx(ledger.usd_spent)


def test_an_error_that_echoes_the_key_is_redacted() -> None:
    endpoint = ChatEndpoint(
        base_url="http://127.0.0.1:9/v1", api_key=API_KEY, model="m", timeout_seconds=1
    )
    assert API_KEY not in endpoint.redact(f"Incorrect API key provided: {API_KEY}.")


# -- configuration -----------------------------------------------------------------------
def test_a_missing_key_is_a_configuration_error_naming_the_field(
    server: MutationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RETUNE_TEST_LLM_KEY")
    with pytest.raises(
        LLMConfigError, match=r"spec\.search\.models\[0\]\.apiKey.*RETUNE_TEST_LLM_KEY"
    ):
        make_mutator(server)


def test_a_key_resolver_is_used_for_secret_references(server: MutationServer) -> None:
    asked: list[ApiKeySource] = []

    def resolve(source: ApiKeySource) -> str:
        asked.append(source)
        return "from-a-secret"

    build_llm_mutator(
        search_spec(server.base_url),
        policy_spec(),
        Ledger(Budget()),
        BuiltinMutator("priority"),
        None,
        0,
        resolve,
    )
    assert len(asked) == 2


# -- concurrency, without a server -------------------------------------------------------
class _SlowCompletions:
    """Stands in for ``client.chat.completions``; records how many calls overlap."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def create(self, **_: Any) -> Any:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        raise RuntimeError("not a completion")


def _answer(text: str) -> Any:
    message = SimpleNamespace(content=text)
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message, finish_reason="stop")],
        usage=SimpleNamespace(prompt_tokens=100, completion_tokens=50),
    )


class _SlowAnswers:
    """A slow endpoint that answers every call with a new program."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def create(self, **_: Any) -> Any:
        time.sleep(0.2)
        with self._lock:
            self.count += 1
            return _answer(f"```python\n{PARENT}\nBIAS = {self.count}\n```")


def test_a_call_waits_for_calls_in_flight_to_settle_rather_than_fail() -> None:
    completions = _SlowAnswers()
    client = SimpleNamespace(chat=SimpleNamespace(completions=completions))
    endpoint = ChatEndpoint(
        base_url="http://unused/v1", api_key="k", model="m", timeout_seconds=1, client=client
    )
    prices = Pricing(input_per_million=1, output_per_million=1)
    tier = Tier(name="only", role="mutate", endpoint=endpoint, prices=prices, max_concurrency=4)
    brief = PolicyBrief("priority", SIGNATURE, "", "code")
    planned = request(0)
    worst = worst_case_usd(prices, build_prompt(planned, brief).texts(), tier.max_output_tokens)
    # Room for one call in flight at a time, and for several at their actual cost.
    ledger = Ledger(Budget(max_usd=worst * 1.5))
    mutator = LLMMutator([tier], brief, ledger, None, seed=0)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda i: mutator.mutate(request(i), never_duplicate), range(3)))
    assert all(result.ok for result in results), [r.failure for r in results]
    assert ledger.usd_spent == pytest.approx(3 * 150 / 1e6)


def test_a_tier_never_has_more_calls_in_flight_than_its_limit() -> None:
    completions = _SlowCompletions()
    client = type("Client", (), {"chat": type("Chat", (), {"completions": completions})()})()
    endpoint = ChatEndpoint(
        base_url="http://unused/v1", api_key="k", model="m", timeout_seconds=1, client=client
    )
    tier = Tier(
        name="only",
        role="mutate",
        endpoint=endpoint,
        prices=Pricing(input_per_million=1, output_per_million=1),
        max_concurrency=2,
    )
    brief = PolicyBrief("priority", SIGNATURE, "", "code")
    mutator = LLMMutator(
        [tier], brief, Ledger(Budget()), None, seed=0, retry=RetryPolicy(max_attempts=1)
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: mutator.mutate(request(i), never_duplicate), range(8)))
    assert completions.most == 2
    assert all((r.failure or "").startswith("llm: only: malformed") for r in results)
    assert cost_usd(tier.prices, 0, 0) == 0


# -- a tier whose tries keep failing rests -------------------------------------------------
def test_a_tier_rests_after_its_tries_keep_failing_and_each_rest_after_a_failure_is_longer() -> (
    None
):
    rests = TierRests(Ledger(Budget()), RestPolicy(after=3, mutations=4, longest=10))
    begun = [rests.record("small", usable=False) for _ in range(3)]
    assert begun[:2] == [None, None] and begun[2] is not None
    assert (begun[2].failures, begun[2].mutations, begun[2].again) == (3, 4, False)
    assert [rests.skip("small") for _ in range(5)] == [4, 3, 2, 1, 0]
    assert rests.skip("large") == 0  # per tier
    again = rests.record("small", usable=False)  # one failure after a rest is enough
    assert again is not None and (again.mutations, again.again) == (8, True)
    assert rests.record("small", usable=False) is None  # in flight when the rest began
    assert sum(rests.skip("small") > 0 for _ in range(12)) == 8
    third = rests.record("small", usable=False)
    assert third is not None and third.mutations == 10  # never longer than the longest
    rests.record("small", usable=True)  # a usable answer ends it all
    assert rests.skip("small") == 0
    assert [rests.record("small", usable=False) is not None for _ in range(3)] == [
        False,
        False,
        True,
    ]
    assert rests.skip("small") == 4  # back to the first rest's length
    never = TierRests(Ledger(Budget()), RestPolicy(after=0))
    assert all(never.record("small", usable=False) is None for _ in range(50))


def test_a_model_that_keeps_answering_unusably_is_paid_for_a_few_tries_not_every_mutation(
    server: MutationServer, tmp_path: Path
) -> None:
    ledger = Ledger(Budget())
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, ledger, audit_path=audit)
    policy = mutator.rests.policy
    server.set_faults("garbage@small:1.0")  # prose, never a program: paid, and useless

    results = [mutator.mutate(request(seed), never_duplicate) for seed in range(60)]

    assert all(result.ok and result.model is None for result in results)  # built-in wrote them
    lines = audit_lines(audit)
    rests = [line for line in lines if line["outcome"] == "rested"]
    calls = [line for line in lines if line["outcome"] not in NOT_CALLS]
    # eight tries (an answer and its repair each), a rest of 20 mutations, one try, a rest
    # of 40: nine tries in 60 mutations, where without rests every mutation pays two calls
    tries = policy.after + 1
    assert len(calls) == 2 * tries and all(line["outcome"] == "no_code" for line in calls)
    assert [line["candidate_index"] for line in rests] == [
        policy.after - 1,
        policy.after + policy.mutations,
    ]
    assert "tries in a row gave no usable program" in rests[0]["detail"]
    assert "first try after a rest" in rests[1]["detail"]
    assert all(line["usd"] == 0 for line in rests)
    rested = [r for r in results if "small: rested" in r.description]
    assert len(rested) == 60 - tries
    assert ledger_tokens(ledger) == server.stats()  # every paid call accounted
    assert ledger.snapshot().models["small"].calls == 2 * tries
    assert ledger.snapshot().rests == {"small": 2}  # the status's rests, and its Event

    server.set_faults("")  # the model answers again: after its rest it is asked, and stays
    later = [mutator.mutate(request(seed), never_duplicate) for seed in range(60, 120)]
    back = next(i for i, result in enumerate(later) if result.model == "small")
    assert back == 2 * policy.mutations - (60 - tries - policy.mutations)  # the rest's end
    assert all(result.model == "small" for result in later[back:])


def test_a_resumed_search_goes_on_resting_a_resting_tier(server: MutationServer) -> None:
    ledger = Ledger(Budget())
    mutator = make_mutator(server, ledger)
    policy = mutator.rests.policy
    server.set_faults("garbage@small:1.0")
    for seed in range(policy.after + 3):  # the tier rests, three of its rest skipped
        mutator.mutate(request(seed), never_duplicate)
    served = server.stats()
    checkpoint = ledger.snapshot().model_dump_json()

    # The operator restarts: a new ledger and mutator, from the checkpoint
    resumed = Ledger(Budget())
    resumed.restore(LedgerState.model_validate_json(checkpoint))
    after = make_mutator(server, resumed)
    results = [after.mutate(request(seed), never_duplicate) for seed in range(100, 110)]

    assert server.stats() == served  # no call: the tier still rests
    assert all("small: rested" in result.description for result in results)


def test_a_model_that_fails_now_and_then_never_rests(
    server: MutationServer, tmp_path: Path
) -> None:
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, audit_path=audit)
    server.set_faults("garbage:0.3,500:0.2")
    results = [mutator.mutate(request(seed), never_duplicate) for seed in range(80)]
    outcomes = [line["outcome"] for line in audit_lines(audit)]
    assert outcomes.count("no_code") >= 15  # it did fail, often
    assert "rested" not in outcomes
    assert sum(result.model == "small" for result in results) >= 55  # a rest would skip 20


def test_calls_the_budget_refuses_never_rest_a_tier(server: MutationServer, tmp_path: Path) -> None:
    audit = tmp_path / "calls.jsonl"
    mutator = make_mutator(server, Ledger(Budget(max_usd=1e-7)), audit_path=audit)
    results = [mutator.mutate(request(seed), never_duplicate) for seed in range(30)]
    assert all(result.budget_exhausted for result in results)
    assert {line["outcome"] for line in audit_lines(audit)} == {"budget"}
