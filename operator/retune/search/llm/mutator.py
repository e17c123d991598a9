"""``LLMMutator``: the Mutator protocol on top of one or more model tiers.

Which tiers a planned mutation may use:

* an ordinary edit (``MUTATE``) goes to the cheap (``mutate``) tiers only;
* a paradigm shift or an initial diversification (``PARADIGM``, ``INIT``) goes to the
  strong (``paradigm``/``init``) tiers, within their share of the USD budget
  (``strong_share``); when they cannot serve it (over the cap, failing) a cheap tier
  makes an ordinary edit instead. The strong tier is never a retry of a cheap edit.

Each call to a tier:

1. waits for a slot of that tier's concurrency limit;
2. reserves its worst-case cost on the ledger (an upper bound on the prompt tokens plus
   ``max_output_tokens``, at the tier's prices), waiting while calls in flight hold the
   rest of the budget -- if what is left unspent cannot cover it, the tier is not called;
3. makes one request, settles the reservation with what the server says it served (a
   200 with useless content still consumed tokens; a 5xx consumed none);
4. parses the answer into a program, or records exactly why that failed;
5. appends an audit line.

Endpoint trouble (timeouts, 429, 5xx, refused connections) is retried with seeded
backoff. An answer that cannot be used (SEARCH text not in the program, a syntax error, a
name the allowlist refuses, a known program) gets one repair round on the same tier: the
answer and the exact problem go back to the model, once. An endpoint that refuses the
request itself (a 400/401/404 no other prompt would escape) stops the search with
:class:`MutatorRejected`. A tier whose tries keep coming to nothing rests for a while
(``rest.py``): the mutations that would ask it go on without it. Every seed is derived
from the run's seed and the request, never from the clock or from the order in which
threads run, so a run against the same server replays exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from retune.evaluate.parameters import values_only_problem
from retune.search.ledger import Ledger, Reservation
from retune.search.llm.audit import BUDGET, RESTED, AuditEntry, AuditLog
from retune.search.llm.client import CallResult, ChatEndpoint, RetryPolicy, Step, with_retries
from retune.search.llm.parse import parse_answer
from retune.search.llm.pricing import (
    PerMillionPrices,
    affordable_output_tokens,
    cost_usd,
    estimate_tokens,
    worst_case_usd,
)
from retune.search.llm.prompts import PolicyBrief, Prompt, build_prompt, repair_prompt
from retune.search.llm.rest import RestPolicy, TierRests
from retune.search.mutation import (
    DuplicateCheck,
    MutationKind,
    MutationRequest,
    MutationResult,
    Mutator,
    MutatorRejected,
)

log = logging.getLogger(__name__)

DUPLICATE = "duplicate"
PARAMETERS = "parameters"  # a parameters policy's answer changed more than its values
RESERVATION_POLL_SECONDS = 0.02
STRONG_ROLES = ("paradigm", "init")
DEFAULT_STRONG_SHARE = 0.3
# The output limit of a repair asking for SEARCH/REPLACE blocks only after an answer ran
# out of tokens: a focused edit fits in far less than a reasoning-and-code answer, and a
# smaller worst case lets the repair be reserved when little budget is left.
REPAIR_EDIT_OUTPUT_TOKENS = 768
# A call whose full output limit no longer fits what is left of the budget (or of the
# strong tiers' share) is sent with the limit that does fit, if that still holds an
# answer: twice the parent program's estimated tokens, and never less than this.
MIN_FITTED_OUTPUT_TOKENS = 512

# Which strong roles serve a kind of rewrite, best first.
STRONG_PREFERENCE: dict[MutationKind, tuple[str, ...]] = {
    MutationKind.PARADIGM: ("paradigm", "init"),
    MutationKind.INIT: ("init", "paradigm"),
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
    index: int = 0  # its place in spec.search.models, for error messages
    slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(max(1, self.max_concurrency))

    @property
    def model(self) -> str:
        return self.endpoint.model

    @property
    def strong(self) -> bool:
        return self.role in STRONG_ROLES


@dataclass
class _Answer:
    """What one round at a tier came to: a program, or the answer and why it is unusable."""

    result: MutationResult | None = None
    failure: str = ""
    text: str | None = None  # the model's answer, when one came back but was unusable
    budget_refused: bool = False
    duplicates: int = 0


class LLMMutator:
    """Mutations written by LLM tiers, with retries, a repair round, tier fallback and a
    fallback mutator."""

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
        strong_share: float | None = DEFAULT_STRONG_SHARE,
        rest: RestPolicy | None = None,
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
        self.strong_share = strong_share
        self.rests = TierRests(ledger, rest)
        self._sleep = sleep

    @property
    def concurrency(self) -> int:
        """Every tier's slots: more mutations than that in flight would only queue."""
        return sum(max(1, tier.max_concurrency) for tier in self.tiers)

    @property
    def strong_cap_usd(self) -> float | None:
        """The most the strong tiers may spend: their share of the USD budget (no cap
        without a USD budget)."""
        limit = self.ledger.budget.max_usd
        if limit is None or self.strong_share is None:
            return None
        return self.strong_share * limit

    def tier_chain(self, kind: MutationKind) -> list[Tier]:
        """The tiers to try for ``kind``, in order: for a rewrite the strong tiers, then
        the cheap ones (as an ordinary edit); for an edit the cheap tiers only."""
        cheap = [t for t in self.tiers if not t.strong] or list(self.tiers)
        if kind is MutationKind.MUTATE:
            return cheap
        preference = STRONG_PREFERENCE[kind]
        strong = sorted((t for t in self.tiers if t.strong), key=lambda t: preference.index(t.role))
        return strong + [t for t in cheap if t not in strong]

    def mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        """A new program for ``request``; a failed result, never an exception but
        :class:`MutatorRejected` (the endpoint refuses every request as configured)."""
        try:
            return self._mutate(request, is_duplicate)
        except MutatorRejected:
            raise
        except Exception as error:  # a bug here must cost one mutation, not the search
            log.exception("LLM mutator failed on candidate %s", request.candidate_index)
            return self._fall_back(request, is_duplicate, [f"internal: {error}"])

    def _mutate(self, request: MutationRequest, is_duplicate: DuplicateCheck) -> MutationResult:
        failures: list[str] = []
        unaffordable = duplicates = 0
        chain = self.tier_chain(request.kind)
        for tier in chain:
            resting = self.rests.skip(tier.name)
            if resting:
                failures.append(f"{tier.name}: {RESTED} ({resting} more mutations without it)")
                continue
            asked = request_for_tier(request, tier.role)
            outcome = self._try_tier(tier, asked, is_duplicate)
            self._count_try(tier, request, outcome)
            duplicates += outcome.duplicates
            if outcome.result is not None:
                return outcome.result.model_copy(update={"duplicates": duplicates})
            unaffordable += outcome.budget_refused
            failures.append(f"{tier.name}: {outcome.failure}")
        if unaffordable == len(chain):
            # No tier can be paid for any more: say so, rather than let the free fallback
            # mutator hide it from the engine.
            failure = f"{BUDGET}: " + "; ".join(failures)
            return MutationResult(failure=failure, duplicates=duplicates, budget_exhausted=True)
        result = self._fall_back(request, is_duplicate, failures)
        return result.model_copy(update={"duplicates": duplicates})

    def _count_try(self, tier: Tier, request: MutationRequest, outcome: _Answer) -> None:
        """Count a try towards the tier's rest (rest.py); say so when one begins."""
        if outcome.result is None and outcome.failure.startswith(BUDGET):
            return  # the budget's refusal, not the tier's failure
        rest = self.rests.record(tier.name, usable=outcome.result is not None)
        if rest is None:
            return
        why = rest.describe(outcome.failure)
        self.ledger.record_rest(tier.name)
        log.warning("tier %s (model %s) rests: %s", tier.name, tier.model, why)
        self._audit(
            AuditEntry(
                model=tier.model,
                tier=tier.name,
                role=tier.role,
                kind=str(request.kind),
                candidate_index=request.candidate_index,
                attempt=0,
                outcome=RESTED,
                detail=why,
            )
        )

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
        self, tier: Tier, request: MutationRequest, is_duplicate: DuplicateCheck
    ) -> _Answer:
        """A program from ``tier``: its answer, and if that cannot be used, one repair."""
        prompt = build_prompt(request, self.policy)
        attempts = iter(range(1_000))  # numbers every call at this tier, repairs included
        first = self._round(tier, request, prompt, is_duplicate, attempts, repair=False)
        if first.result is not None or first.text is None:
            return first
        problem = first.failure
        cut_off = first.failure.startswith("truncated")
        limit = repair_output_limit(tier, request.kind, cut_off=cut_off)
        if cut_off:
            problem += (
                f" (the limit was {tier.max_output_tokens} output tokens; this answer may "
                f"hold {limit}: give the code only)"
            )
        follow_up = repair_prompt(prompt, first.text, problem, request.kind, cut_off=cut_off)
        second = self._round(
            tier, request, follow_up, is_duplicate, attempts, repair=True, max_tokens=limit
        )
        second.duplicates += first.duplicates
        if second.result is None:
            second.failure = f"{first.failure}; repair: {second.failure}"
        return second

    def _round(
        self,
        tier: Tier,
        request: MutationRequest,
        prompt: Prompt,
        is_duplicate: DuplicateCheck,
        attempts: Iterator[int],
        *,
        repair: bool,
        max_tokens: int | None = None,
    ) -> _Answer:
        """One question to ``tier``, retried while the endpoint is in trouble; the answer
        may hold ``max_tokens`` (the tier's limit unless given)."""
        outcome = _Answer()
        limit = tier.max_output_tokens if max_tokens is None else max_tokens
        limit = self._fitted_limit(tier, request, prompt, limit)
        worst_usd = worst_case_usd(tier.prices, prompt.texts(), limit)

        def attempt(_: int) -> Step[MutationResult]:
            step, answer = self._attempt(
                tier, request, prompt, is_duplicate, next(attempts), worst_usd, repair, limit
            )
            outcome.failure, outcome.text = answer.failure, answer.text
            outcome.budget_refused = outcome.budget_refused or answer.budget_refused
            outcome.duplicates += answer.duplicates
            return step

        rng = random.Random(_derive(self.seed, request.seed, tier.name, "backoff", repair))
        outcome.result = with_retries(attempt, self.retry, rng, self._sleep)
        return outcome

    def _fitted_limit(
        self, tier: Tier, request: MutationRequest, prompt: Prompt, limit: int
    ) -> int:
        """``limit``, or a smaller output limit when only that fits what is left.

        Reservations are worst cases: with a small budget the strong tiers' share would
        otherwise refuse every call after the first, whose real cost is a fraction of its
        reservation. The smaller limit must still hold an answer (see
        ``MIN_FITTED_OUTPUT_TOKENS``); below that the call is refused as before.
        """
        cap = self.strong_cap_usd if tier.strong else None
        headroom = self.ledger.headroom(strong_cap=cap)
        if headroom is None:
            return limit
        fitting = affordable_output_tokens(tier.prices, prompt.texts(), headroom)
        if fitting is None or fitting >= limit:
            return limit
        needed = max(MIN_FITTED_OUTPUT_TOKENS, 2 * estimate_tokens(request.parent_code))
        return fitting if fitting >= min(needed, limit) else limit

    def _attempt(
        self,
        tier: Tier,
        request: MutationRequest,
        prompt: Prompt,
        is_duplicate: DuplicateCheck,
        index: int,
        worst_usd: float,
        repair: bool,
        max_tokens: int,
    ) -> tuple[Step[MutationResult], _Answer]:
        """One call; returns the retry step and what the answer came to."""
        entry = AuditEntry(
            model=tier.model,
            tier=tier.name,
            role=tier.role,
            kind=str(request.kind),
            candidate_index=request.candidate_index,
            attempt=index,
            repair=repair,
            outcome=BUDGET,
            reserved_usd=worst_usd,
        )
        messages = prompt.messages()
        seed = _derive(self.seed, request.seed, tier.name, index) % 2**31
        key = _request_key(tier, messages, seed, max_tokens)
        with tier.slots:
            paid = self.ledger.paid_answer(key)
            if paid is not None:  # answered and paid for before this run was resumed
                call = CallResult(**paid, usage_reported=True)
                result, failure = self._judge(tier, request, call, is_duplicate)
                entry.reserved_usd = 0.0
                entry.replayed = True
            else:
                reservation = self._reserve(
                    worst_usd, tier.strong, tier.name, key, request.candidate_index
                )
                if reservation is None:
                    entry.detail = self._refusal(worst_usd, tier)
                    self._audit(entry)
                    return Step(), _Answer(failure=f"{BUDGET}: {entry.detail}", budget_refused=True)
                entry.call_id = reservation.id
                try:
                    call = tier.endpoint.complete(
                        messages,
                        max_tokens=max_tokens,
                        temperature=tier.temperature,
                        seed=seed,
                        call_id=reservation.id,
                    )
                except BaseException:
                    # Interrupted mid-call: the request may have been served. Settle it at
                    # its worst case; a reservation left held would shrink the budget.
                    self.ledger.settle(
                        reservation,
                        model=tier.name,
                        usd=0.0,
                        prompt_tokens=0,
                        completion_tokens=0,
                        failed=True,
                        cost_known=False,
                    )
                    raise
                reported = cost_usd(tier.prices, call.prompt_tokens, call.completion_tokens)
                result, failure = self._judge(tier, request, call, is_duplicate)
                settlement = self.ledger.settle(
                    reservation,
                    model=tier.name,
                    usd=reported,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                    failed=result is None,
                    cost_known=call.cost_known,
                    answer=_paid_answer(call),
                )
                entry.usd = settlement.charged_usd
                entry.reported_usd = reported
                entry.over_reported_usd = settlement.over_reported_usd
                entry.charged_at_reservation = settlement.at_reservation
                if settlement.over_reported_usd:
                    log.warning(
                        "tier %s reported usage costing $%.6f for call %s, above its "
                        "reservation of $%.6f; recorded, charged the reservation",
                        tier.name,
                        reported,
                        reservation.id,
                        reservation.usd,
                    )
        entry.outcome = "ok" if result is not None else failure.split(":", 1)[0]
        entry.detail = "" if result is not None else failure
        entry.prompt_tokens = call.prompt_tokens
        entry.completion_tokens = call.completion_tokens
        entry.usage_reported = call.usage_reported
        entry.latency_seconds = round(call.latency_seconds, 4)
        self._audit(entry)
        if call.rejected:
            raise MutatorRejected(
                f"tier {tier.name!r} (model {tier.model!r}): the endpoint refused the request: "
                f"{call.detail}; check the tier's model, baseUrl, apiKey, headers and query",
                path=f"spec.search.models[{tier.index}]",
            )
        if result is not None:
            return Step(value=result), _Answer()
        if not call.ok:
            step: Step[MutationResult] = Step(retry=call.retryable, retry_after=call.retry_after)
            return step, _Answer(failure=failure)
        # A served but unusable answer: not retried here; the caller may repair it once.
        answer = _Answer(failure=failure, text=call.text)
        answer.duplicates = int(failure.startswith(DUPLICATE))
        return Step(), answer

    def _refusal(self, worst_usd: float, tier: Tier) -> str:
        cap = self.strong_cap_usd if tier.strong else None
        if cap is not None and self.ledger.affordable(worst_usd):
            return (
                f"a call may cost up to ${worst_usd:.6f}; the strong tiers' share of the "
                f"budget (${cap:.6f}) cannot cover it"
            )
        return f"a call may cost up to ${worst_usd:.6f}; the budget cannot cover it"

    def _reserve(
        self, usd: float, strong: bool, model: str, key: str, candidate: int
    ) -> Reservation | None:
        """Reserve ``usd`` (against the strong tiers' cap too for a strong tier); ``None``
        once the budget itself cannot cover it.

        A refusal while other calls hold reservations is only temporary: they settle at
        their actual cost, usually far below their worst case, so wait for them rather
        than end the search with money left.
        """
        cap = self.strong_cap_usd if strong else None
        while True:
            reservation = self.ledger.reserve_usd(
                usd, strong_cap=cap, model=model, key=key, candidate=candidate
            )
            if reservation is not None:
                return reservation
            if not self.ledger.affordable(usd, strong_cap=cap):
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
            return None, (
                f"{DUPLICATE}: the program your answer describes was evaluated before; "
                "make a different change"
            )
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
        if self.policy.parameters:
            problem = values_only_problem(request.parent_code, parsed.code, self.policy.parameters)
            if problem is not None:
                return None, f"{PARAMETERS}: {problem}"
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


def repair_output_limit(tier: Tier, kind: MutationKind, *, cut_off: bool) -> int:
    """The output limit of a repair round: smaller for an edit asked again after an answer
    that ran out of tokens (SEARCH/REPLACE blocks only), the tier's own otherwise."""
    if cut_off and kind is MutationKind.MUTATE:
        return min(tier.max_output_tokens, REPAIR_EDIT_OUTPUT_TOKENS)
    return tier.max_output_tokens


def _request_key(tier: Tier, messages: list[dict[str, str]], seed: int, max_tokens: int) -> str:
    """What identifies a request: the same key, the same question to the same model."""
    asked = [tier.name, tier.model, messages, max_tokens, seed]
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _paid_answer(call: CallResult) -> dict[str, object] | None:
    """What a resumed run needs of a served answer to use it again without paying."""
    if not call.ok:
        return None
    return {
        "outcome": call.outcome,
        "text": call.text,
        "finish_reason": call.finish_reason,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
    }


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
