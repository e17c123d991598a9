"""Prompts, prices and backoff of the LLM mutator: pure functions, no server."""

from __future__ import annotations

import random
import re
from email.utils import formatdate

import pytest

from retune.evaluate.allowlist import ALLOWED_MODULES, SAFE_BUILTIN_NAMES
from retune.search.llm.client import RetryPolicy, Step, retry_after_seconds, with_retries
from retune.search.llm.pricing import cost_usd, estimate_tokens, prompt_token_bound
from retune.search.llm.prompts import (
    CONTEXT_HEADING,
    PARENT_HEADING,
    PolicyBrief,
    Prompt,
    build_prompt,
    repair_prompt,
)
from retune.search.mutation import Inspiration, MutationKind, MutationRequest
from retune.spec import Pricing

BRIEF = PolicyBrief(
    entrypoint="priority",
    signature="priority(key, now, last_access, hits, size, evictions, last_evicted) -> float",
    description="Choose which cached object to evict.",
    kind="code",
)
PARENT = (
    "def priority(key, now, last_access, hits, size, evictions, last_evicted):\n    return hits\n"
)


def request(kind: MutationKind, **fields: object) -> MutationRequest:
    return MutationRequest(kind=kind, parent_code=PARENT, seed=1, **fields)  # type: ignore[arg-type]


def mutate_prompt() -> Prompt:
    return build_prompt(
        request(
            MutationKind.MUTATE,
            parent_score=0.42,
            parent_subscores={"scan": 0.2, "steady": 0.6},
            parent_feedback="scan phase: hot objects evicted",
            inspirations=[Inspiration(code=f"# other {i}\n" + PARENT, score=0.3) for i in range(3)],
        ),
        BRIEF,
    )


def test_the_program_to_change_is_the_only_code_block_directly_under_its_named_heading() -> None:
    user = mutate_prompt().user
    assert f"{PARENT_HEADING}\n```python\n{PARENT}```\n" in user
    assert "`policy.py`" in PARENT_HEADING
    # One fence in the whole prompt: a model that edits the first, the last or the longest
    # code block edits the program to change.
    assert user.count("```") == 2
    assert "Score of `policy.py`: 0.42 (subscores: scan=0.2, steady=0.6)" in user
    assert "scan phase: hot objects evicted" in user
    assert "<<<<<<< SEARCH" in user and "SEARCH/REPLACE" in user
    assert "matched against `policy.py` alone" in user


def test_other_programs_are_read_only_listings_placed_after_the_task() -> None:
    user = mutate_prompt().user
    task, context = user.index("## Task"), user.index(CONTEXT_HEADING)
    assert user.index(PARENT_HEADING) < task < context
    listing = user[context:]
    assert "NOT the program to change" in listing
    assert "| # other 0" in listing and "| # other 1" in listing
    assert "# other 2" not in user  # at most two
    assert "### Reference A (read-only), score 0.3" in listing
    # No line of a reference program appears unprefixed, so none can match a SEARCH block.
    body = [line for line in listing.splitlines()[2:] if line and not line.startswith("###")]
    assert all(line.startswith("| ") for line in body)


def test_the_rules_offer_exactly_what_the_allowlist_accepts() -> None:
    system = mutate_prompt().system
    assert BRIEF.signature in system
    for module in ("heapq", "collections", "itertools"):
        assert module not in system
    modules = re.search(r"Imports: only (.*?), at the top", system)
    assert modules is not None
    assert set(re.findall(r"`(\w+)`", modules.group(1))) == ALLOWED_MODULES
    builtins = re.search(r"Builtins: only (.*?)\. Exceptions", system)
    assert builtins is not None
    assert set(builtins.group(1).split(", ")) == SAFE_BUILTIN_NAMES


def test_a_repair_round_carries_the_answer_and_the_exact_problem() -> None:
    prompt = mutate_prompt()
    problem = "diff_not_applied: this SEARCH text is not in it:\n    return hits * 2"
    repaired = repair_prompt(prompt, "the answer", problem, MutationKind.MUTATE)
    roles = [m["role"] for m in repaired.messages()]
    assert roles == ["system", "user", "assistant", "user"]
    assert repaired.messages()[2]["content"] == "the answer"
    follow_up = repaired.messages()[3]["content"]
    assert problem in follow_up and "```" not in follow_up.replace("```python block", "")
    assert repaired.texts()[:2] == prompt.texts()


@pytest.mark.parametrize("kind", [MutationKind.PARADIGM, MutationKind.INIT])
def test_a_rewrite_prompt_asks_for_one_whole_program(kind: MutationKind) -> None:
    user = build_prompt(request(kind), BRIEF).user
    assert "SEARCH/REPLACE" not in user
    assert "complete program in a single ```python code block" in user


def test_long_feedback_is_cut_and_the_prompt_is_a_pure_function() -> None:
    planned = request(MutationKind.MUTATE, parent_feedback="x" * 10_000)
    first, second = build_prompt(planned, BRIEF), build_prompt(planned, BRIEF)
    assert first == second
    assert "[... feedback truncated]" in first.user and len(first.user) < 5_000


def test_the_prompt_bound_exceeds_any_plausible_token_count() -> None:
    texts = ["a+b*(c-d)/e;" * 50, "ünïcödé 🙂 text", "def f(x):\n    return x\n"]
    bound = prompt_token_bound(texts)
    # Every token covers at least one character, whatever the tokenizer.
    assert bound >= sum(len(re.findall(r"\w+|[^\w\s]", t)) + 4 for t in texts) + 3
    assert bound >= sum(len(t) for t in texts)
    assert estimate_tokens("abcdefgh") == 2 and estimate_tokens("") == 0


def test_cost_uses_the_tiers_prices() -> None:
    hosted = Pricing(input_per_million=2.0, output_per_million=8.0)
    assert cost_usd(hosted, 1_000_000, 500_000) == pytest.approx(6.0)
    self_hosted = Pricing(gpu_hour_usd=3.6, tokens_per_second=1000)  # $1e-6 per token
    assert cost_usd(self_hosted, 1_000, 1_000) == pytest.approx(0.002)


def test_backoff_is_seeded_bounded_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay_seconds=0.5, max_delay_seconds=4.0, max_retry_after_seconds=30)
    first = [policy.delay(i, random.Random(9), None) for i in range(6)]
    assert first == [policy.delay(i, random.Random(9), None) for i in range(6)]
    for index, wait in enumerate(first):
        cap = min(4.0, 0.5 * 2**index)
        assert wait is not None and cap / 2 <= wait <= cap
    asked = policy.delay(0, random.Random(9), 2.0)
    assert asked is not None and 2.0 <= asked <= 2.5
    assert policy.delay(0, random.Random(9), 120.0) is None  # too long: try another tier


def test_with_retries_stops_on_a_value_or_a_final_answer() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def attempt(index: int) -> Step[str]:
        calls.append(index)
        return Step(value="done") if index == 2 else Step(retry=True, backoff=index == 0)

    policy = RetryPolicy(max_attempts=5)
    assert with_retries(attempt, policy, random.Random(0), waits.append) == "done"
    assert calls == [0, 1, 2] and len(waits) == 1  # only endpoint trouble waits

    def give_up(index: int) -> Step[str]:
        calls.append(index)
        return Step()  # not retryable (a 404, say)

    calls.clear()
    assert with_retries(give_up, policy, random.Random(0)) is None
    assert calls == [0]


def test_retry_after_headers() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "soon"}) is None
    future = retry_after_seconds({"retry-after": formatdate(usegmt=True)})
    assert future is not None and future <= 1.0
