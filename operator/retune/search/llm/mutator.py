"""``LLMMutator``: the Mutator protocol on top of one or more model tiers.

For one planned mutation it tries the tier whose role fits the mutation's kind, then the
other tiers, then a fallback mutator (the built-in one), and never raises. Each attempt at
a tier:

1. waits for a slot of that tier's concurrency limit;
2. reserves its worst-case cost on the ledger (an upper bound on the prompt tokens plus
   ``max_output_tokens``, at the tier's prices), waiting while calls in flight hold the
   rest of the budget -- if what is left unspent cannot cover it, the tier is not called;
3. makes one request, settles the reservation with what the server says it served (a
   200 with useless content still consumed tokens; a 5xx consumed none);
4. parses the answer into a program, or records why that failed;
5. appends an audit line.

Endpoint trouble (timeouts, 429, 5xx, refused connections) is retried with seeded
backoff; a useless answer or a duplicate program is retried at once with another seed.
Every seed is derived from the run's seed and the request, never from the clock or from
the order in which threads run, so a run against the same server replays exactly.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from retune.search.ledger import Ledger, Reservation
from retune.search.llm.audit import AuditEntry, AuditLog
from retune.search.llm.client import CallResult, ChatEndpoint, RetryPolicy, Step, with_retries
from retune.search.llm.parse import parse_answer
from retune.search.llm.pricing import PerMillionPrices, cost_usd, worst_case_usd
from retune.search.llm.prompts import PolicyBrief, Prompt, build_prompt
from retune.search.mutation import (
    DuplicateCheck,
    MutationKind,
    MutationRequest,
    MutationResult,
    Mutator,
)

log = logging.getLogger(__name__)

BUDGET = "budget"
DUPLICATE = "duplicate"
RESERVATION_POLL_SECONDS = 0.02

# Which tier roles may serve a kind of mutation, best first.
ROLE_PREFERENCE: dict[MutationKind, tuple[str, ...]] = {
    MutationKind.MUTATE: ("mutate", "paradigm", "init"),
    MutationKind.PARADIGM: ("paradigm", "mutate", "init"),
    MutationKind.INIT: ("init", "paradigm", "mutate"),
}


@dataclass
class Tier:
    """One configured model, ready to call."""

    name: str
    role: str
    endpoint: ChatEndpoint
    prices: PerMillionPrices
    max_concurrency: int = 4
    max_output_tokens: int = 2048
    temperature: float = 0.8
    slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(max(1, self.max_concurrency))

    @property
    def model(self) -> str:
        return self.endpoint.model


@dataclass
class _TierOutcome:
    result: MutationResult | None = None
    failure: str = ""
    budget_refused: bool = False
    duplicates: int = 0  # answers that repeated a known program


class LLMMutator:
    """Mutations written by LLM tiers, with retries, tier fallback and a fallback mutator."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        policy: PolicyBrief,
        ledger: Ledger,
        fallback: Mutator | None,
        *,
        seed: int,
        audit: AuditLog | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not tiers:
            raise ValueError("an LLM mutator needs at least one model tier")
        self.tiers = list(tiers)
        self.policy = policy
        self.ledger = ledger
        self.fallback = fallback
        self.seed = seed
        self.audit = audit
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    @property
    def concurrency(self) -> int:
        """Every tier's slots: more mutations than that in flight would only queue."""
        return sum(max(1, tier.max_concurrency) for tier in self.tiers)

    def tier_chain(self, kind: MutationKind) -> list[Tier]:
        """The tiers to try for ``kind``, in order: best-fitting role first."""
        preference = ROLE_PREFERENCE[kind]

        def rank(tier: Tier) -> int:
            return preference.index(tier.role) if tier.role in preference else len(preference)

        return sorted(self.tiers, key=rank)  # stable: the spec's order breaks ties

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        """A new program for ``request``; a failed result, never an exception."""
        try:
            return self._mutate(request, is_duplicate)
        except Exception as error:  # a bug here must cost one mutation, not the search
            log.exception("LLM mutator failed on candidate %s", request.candidate_index)
            return self._fall_back(request, is_duplicate, [f"internal: {error}"])

    def _mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        failures: list[str] = []
        unaffordable = duplicates = 0
        chain = self.tier_chain(request.kind)
        for tier in chain:
            asked = request_for_tier(request, tier.role)
            prompt = build_prompt(asked, self.policy)
            outcome = self._try_tier(tier, asked, prompt, is_duplicate)
            duplicates += outcome.duplicates
            if outcome.result is not None:
                return outcome.result.model_copy(update={"duplicates": duplicates})
            unaffordable += outcome.budget_refused
            failures.append(f"{tier.name}: {outcome.failure}")
        if unaffordable == len(chain):
            # No tier can be paid for any more: say so, rather than let the free fallback
            # mutator hide it from the engine.
            failure = f"{BUDGET}: " + "; ".join(failures)
            return MutationResult(failure=failure, duplicates=duplicates)
        result = self._fall_back(request, is_duplicate, failures)
        return result.model_copy(update={"duplicates": duplicates})

    def _fall_back(
        self, request: MutationRequest, is_duplicate: DuplicateCheck, failures: list[str]
    ) -> MutationResult:
        why = "; ".join(failures)
        if self.fallback is None:
            return MutationResult(failure=f"llm: {why}")
        try:
            result = self.fallback.mutate(request, is_duplicate)
        except Exception as error:
            log.exception("fallback mutator failed on candidate %s", request.candidate_index)
            return MutationResult(failure=f"llm: {why}; fallback: {error}")
        prefix = f"fallback after LLM failures ({why})"
        if result.ok:
            return result.model_copy(update={"description": f"{prefix}: {result.description}"})
        return result.model_copy(update={"failure": f"{result.failure} [{prefix}]"})

    def _try_tier(
        self,
        tier: Tier,
        request: MutationRequest,
        prompt: Prompt,
        is_duplicate: DuplicateCheck,
    ) -> _TierOutcome:
        outcome = _TierOutcome()
        worst_usd = worst_case_usd(tier.prices, prompt.texts(), tier.max_output_tokens)

        def attempt(index: int) -> Step[MutationResult]:
            step, failure, refused = self._attempt(
                tier, request, prompt, is_duplicate, index, worst_usd
            )
            outcome.failure = failure
            outcome.budget_refused = outcome.budget_refused or refused
            outcome.duplicates += failure.startswith(DUPLICATE)
            return step

        rng = random.Random(_derive(self.seed, request.seed, tier.name, "backoff"))
        outcome.result = with_retries(attempt, self.retry, rng, self._sleep)
        return outcome

    def _attempt(
        self,
        tier: Tier,
        request: MutationRequest,
        prompt: Prompt,
        is_duplicate: DuplicateCheck,
        index: int,
        worst_usd: float,
    ) -> tuple[Step[MutationResult], str, bool]:
        """One call; returns the retry step, the failure (if any) and a budget refusal flag."""
        entry = AuditEntry(
            model=tier.model,
            tier=tier.name,
            role=tier.role,
            kind=str(request.kind),
            candidate_index=request.candidate_index,
            attempt=index,
            outcome=BUDGET,
            reserved_usd=worst_usd,
        )
        with tier.slots:
            reservation = self._reserve(worst_usd)
            if reservation is None:
                entry.detail = f"a call may cost up to ${worst_usd:.6f}; the budget cannot cover it"
                self._audit(entry)
                return Step(), f"{BUDGET}: {entry.detail}", True
            try:
                call = tier.endpoint.complete(
                    prompt.messages(),
                    max_tokens=tier.max_output_tokens,
                    temperature=tier.temperature,
                    seed=_derive(self.seed, request.seed, tier.name, index) % 2**31,
                )
            except BaseException:
                # A reservation left held would shrink the budget for good; with little
                # left, every later call would wait for it forever.
                self.ledger.release(reservation)
                raise
            usd = cost_usd(tier.prices, call.prompt_tokens, call.completion_tokens)
            result, failure = self._judge(tier, request, call, is_duplicate)
            self.ledger.settle(
                reservation,
                model=tier.name,
                usd=usd,
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                failed=result is None,
            )
        entry.outcome = "ok" if result is not None else failure.split(":", 1)[0]
        entry.detail = "" if result is not None else failure
        entry.prompt_tokens = call.prompt_tokens
        entry.completion_tokens = call.completion_tokens
        entry.usage_reported = call.usage_reported
        entry.usd = usd
        entry.latency_seconds = round(call.latency_seconds, 4)
        self._audit(entry)
        if result is not None:
            return Step(value=result), "", False
        if not call.ok:
            return Step(retry=call.retryable, retry_after=call.retry_after), failure, False
        return Step(retry=True, backoff=False), failure, False  # useless answer: ask again

    def _reserve(self, usd: float) -> Reservation | None:
        """Reserve ``usd``; ``None`` once the budget itself cannot cover it.

        A refusal while other calls hold reservations is only temporary: they settle at
        their actual cost, usually far below their worst case, so wait for them rather
        than end the search with money left.
        """
        while True:
            reservation = self.ledger.reserve_usd(usd)
            if reservation is not None:
                return reservation
            limit = self.ledger.budget.max_usd
            if limit is None or self.ledger.usd_spent + usd > limit:
                return None
            time.sleep(RESERVATION_POLL_SECONDS)

    def _judge(
        self, tier: Tier, request: MutationRequest, call: CallResult, is_duplicate: DuplicateCheck
    ) -> tuple[MutationResult | None, str]:
        """The new program in a served answer, or why there is none. Never raises: the
        answer is paid for, and its reservation must be settled whatever it holds."""
        if not call.ok:
            return None, f"{call.outcome}: {call.detail}"
        try:
            result, failure = self._read_answer(tier, request, call.text, call.finish_reason)
        except Exception as error:  # e.g. CPython 3.11's parser under threads (gh-106905)
            log.warning("cannot read an answer from tier %s", tier.name, exc_info=True)
            return None, f"unreadable: {type(error).__name__}: {error}"
        if result is not None and _safe_is_duplicate(is_duplicate, result.code):
            return None, f"{DUPLICATE}: the program is already known"
        return result, failure

    def _read_answer(
        self, tier: Tier, request: MutationRequest, text: str | None, finish_reason: str | None
    ) -> tuple[MutationResult | None, str]:
        if text is None:
            return None, ""
        parsed = parse_answer(
            text,
            parent_code=request.parent_code,
            entrypoint=self.policy.entrypoint,
            signature=self.policy.signature,
            truncated=finish_reason == "length",
        )
        if parsed.code is None:
            return None, parsed.failure or "no_code"
        description = f"{tier.name} ({tier.model}) {request.kind}: {parsed.summary}"
        gist = _gist(text)
        if gist:
            description += f" -- {gist}"
        return MutationResult(code=parsed.code, description=description, model=tier.name), ""

    def _audit(self, entry: AuditEntry) -> None:
        if self.audit is None:
            return
        try:
            self.audit.write(entry)
        except OSError:
            log.warning("cannot write the LLM audit log %s", self.audit.path, exc_info=True)


def request_for_tier(request: MutationRequest, role: str) -> MutationRequest:
    """``request`` as a tier of ``role`` is asked it.

    A cheap (``mutate``) tier that stands in for a strong one -- not configured, failing,
    or more than the budget can pay for a call -- is asked for an ordinary SEARCH/REPLACE
    edit, not a whole new program: a cheap model's rewrites cost several times the output
    tokens of an edit and come back without usable code more often, and in measurements
    against the stand-in models they improved on their parent less often, per call and
    per dollar (``bench/README.md``).
    """
    if role == "mutate" and request.kind is not MutationKind.MUTATE:
        return request.model_copy(update={"kind": MutationKind.MUTATE})
    return request


def _derive(*parts: object) -> int:
    """A 63-bit seed from ``parts``; stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _safe_is_duplicate(is_duplicate: DuplicateCheck, code: str | None) -> bool:
    if code is None:
        return False
    try:
        return is_duplicate(code)
    except Exception:
        log.warning("duplicate check failed; treating the program as new", exc_info=True)
        return False


def _gist(text: str, limit: int = 160) -> str:
    """The first line of prose in an answer: what the model says it did."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("```", "<<<", "===", ">>>", "#", "def ", "import ")):
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""
