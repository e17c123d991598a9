"""One OpenAI-compatible endpoint, and the retry loop around it.

The ``openai`` client is used with ``max_retries=0``: retries are ours, so that every
attempt is reserved, settled and audited on its own, and so that backoff jitter comes from
a seeded RNG (a run replays with the same waits) rather than from the clock.

:meth:`ChatEndpoint.complete` makes exactly one HTTP request and never raises: every
way a call can go wrong (timeout, refused connection, 429, 5xx, a body that is not JSON,
no choices, no content) becomes a :class:`CallResult` with an ``outcome`` and the tokens
the server says it served -- or ``cost_known=False`` when nobody can say (no answer in
time, a connection lost after the request went out, a body cut off, no ``usage``): the
ledger then charges the call its reservation.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import openai

from retune.search.llm.pricing import estimate_tokens

T = TypeVar("T")

OK = "ok"
_RETRYABLE_STATUS = {408, 409, 429}
_REJECTED_STATUS = {400, 401, 403, 404, 405, 422}
# 400s about this one prompt (too long for the context window, a filtered answer).
_PROMPT_SPECIFIC = re.compile(
    r"context.length|maximum context|too many tokens|content.filter", re.I
)


@dataclass(frozen=True)
class CallResult:
    """What one request to an endpoint came to."""

    outcome: str  # "ok", or why not: timeout, connection, rate_limited, server_error, ...
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False
    retryable: bool = False
    retry_after: float | None = None
    detail: str = ""
    latency_seconds: float = 0.0
    rejected: bool = False  # the endpoint refuses requests as configured (bad key, model...)
    # False when the request may have been served and billed but what it used is unknown.
    cost_known: bool = True

    @property
    def ok(self) -> bool:
        return self.outcome == OK


class ChatEndpoint:
    """A model behind an OpenAI-compatible ``/v1/chat/completions``.

    Reasoning models refuse ``max_tokens`` (they take ``max_completion_tokens``) and any
    ``temperature`` but their default. With ``token_parameter="auto"`` the endpoint starts
    with ``max_tokens`` and, when a 400 names the parameter it refuses, sends the request
    again as the endpoint asks and keeps doing so: a refused request served no tokens, so
    the switch costs nothing. ``headers`` and ``query`` go with every request (gateways
    want an API version, a route, a tenant).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_seconds: float,
        client: Any | None = None,
        token_parameter: str = "auto",
        send_temperature: bool = True,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> None:
        self.model = model
        self._secret = api_key
        self._adapt = token_parameter == "auto"
        self.token_parameter = "max_tokens" if self._adapt else token_parameter
        self.send_temperature = send_temperature
        self._client = client or openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            timeout=timeout_seconds,
            default_headers=headers or None,
            default_query=query or None,
        )

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int,
        call_id: str = "",
    ) -> CallResult:
        """One request (two or three when a 400 shows which parameters the model takes);
        never raises. ``seed`` is OpenAI's best-effort sampling seed; ``call_id`` goes with
        the request as ``X-Retune-Call``, so a provider's logs can be matched to the
        ledger's."""
        started = time.monotonic()
        for _ in range(3):
            options: dict[str, Any] = {self.token_parameter: max_tokens, "seed": seed}
            if self.send_temperature:
                options["temperature"] = temperature
            if call_id:
                options["extra_headers"] = {"X-Retune-Call": call_id}
            try:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=cast(Any, messages),  # plain dicts are the wire format
                    **options,
                )
            except openai.APITimeoutError:
                return self._failed(
                    started, "timeout", retryable=True, detail="no answer in time", known=False
                )
            except openai.APIConnectionError as error:
                # Refused before the request was sent: nothing served. Any later loss (a
                # dropped connection, a body cut off) may have been served and billed.
                sent = type(error.__cause__).__name__ != "ConnectError"  # httpx's, by name
                return self._failed(
                    started, "connection", retryable=True, detail=str(error), known=not sent
                )
            except openai.APIStatusError as error:
                if error.status_code == 400 and self._adapted_to(_body_message(error), options):
                    continue
                return self._status_failure(started, error)
            except Exception as error:  # a body that is not a chat completion (bad JSON, ...)
                detail = f"{type(error).__name__}: {error}"
                return self._failed(
                    started, "malformed", retryable=True, detail=detail, known=False
                )
            return self._answered(started, messages, response)
        return self._failed(started, "http_400", retryable=False, detail="parameters refused")

    def _adapted_to(self, message: str, sent: dict[str, Any]) -> bool:
        """Whether a 400 that says ``message`` to a request that ``sent`` these options was
        about a parameter this endpoint can do without; if so, the parameter is changed for
        this and every later request (another thread may have changed it already)."""
        text = message.lower()
        if self._adapt and "max_tokens" in sent and "max_tokens" in text:
            self.token_parameter = "max_completion_tokens"
            return True
        if "temperature" in sent and "temperature" in text:
            self.send_temperature = False
            return True
        return False

    def _answered(
        self, started: float, messages: list[dict[str, str]], response: Any
    ) -> CallResult:
        latency = time.monotonic() - started
        choices = getattr(response, "choices", None) or []
        choice = choices[0] if choices else None
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None)
        text = text if isinstance(text, str) else None
        usage = getattr(response, "usage", None)
        prompt_tokens = _int(getattr(usage, "prompt_tokens", None))
        completion_tokens = _int(getattr(usage, "completion_tokens", None))
        reported = prompt_tokens is not None and completion_tokens is not None
        if not reported:  # the server served tokens but did not say how many: estimate
            prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
            completion_tokens = estimate_tokens(text or "")
        common: dict[str, Any] = {
            "prompt_tokens": prompt_tokens or 0,
            "completion_tokens": completion_tokens or 0,
            "usage_reported": reported,
            "cost_known": reported,
            "latency_seconds": latency,
        }
        if choice is None:
            return CallResult("empty_choices", retryable=True, detail="no choices", **common)
        if not text or not text.strip():
            return CallResult("no_content", retryable=True, detail="empty message", **common)
        finish = getattr(choice, "finish_reason", None)
        return CallResult(OK, text=text, finish_reason=finish, **common)

    def _status_failure(self, started: float, error: openai.APIStatusError) -> CallResult:
        status = error.status_code
        retry_after = retry_after_seconds(error.response.headers)
        if status == 429:
            outcome = "rate_limited"
        elif status >= 500:
            outcome = "server_error"
        else:
            outcome = f"http_{status}"
        retryable = status in _RETRYABLE_STATUS or status >= 500
        message = _body_message(error)
        detail = f"HTTP {status}: {message}"
        # A refusal that no other prompt would escape: the configuration is wrong.
        rejected = status in _REJECTED_STATUS and not _PROMPT_SPECIFIC.search(message)
        return self._failed(
            started,
            outcome,
            retryable=retryable,
            retry_after=retry_after,
            detail=detail,
            rejected=rejected,
        )

    def _failed(
        self,
        started: float,
        outcome: str,
        *,
        retryable: bool,
        detail: str,
        retry_after: float | None = None,
        rejected: bool = False,
        known: bool = True,
    ) -> CallResult:
        return CallResult(
            outcome,
            retryable=retryable,
            retry_after=retry_after,
            rejected=rejected,
            cost_known=known,
            detail=self.redact(detail)[:300],
            latency_seconds=time.monotonic() - started,
        )

    def redact(self, text: str) -> str:
        """``text`` with the API key blanked out (error messages sometimes echo it)."""
        return text.replace(self._secret, "[redacted]") if len(self._secret) >= 4 else text


def retry_after_seconds(headers: Any) -> float | None:
    """The wait a 429/503 asks for: ``retry-after-ms``, or ``Retry-After`` (seconds or date)."""
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
    except (AttributeError, ValueError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- the retry loop ----------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, one tier is tried for one mutation."""

    max_attempts: int = 3
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 8.0
    max_retry_after_seconds: float = 30.0  # a server asking for more: use another tier

    def delay(
        self, retry_index: int, rng: random.Random, retry_after: float | None
    ) -> float | None:
        """Seconds to wait before retry ``retry_index`` (0-based); ``None``: do not retry.

        Exponential backoff with "equal jitter" (half fixed, half drawn from ``rng``), or
        what the server's Retry-After asks for, plus a little jitter so that callers told
        the same thing do not all come back at once.
        """
        if retry_after is not None:
            if retry_after > self.max_retry_after_seconds:
                return None
            return retry_after + rng.uniform(0, min(1.0, self.base_delay_seconds))
        cap = min(self.max_delay_seconds, self.base_delay_seconds * 2**retry_index)
        return cap / 2 + rng.uniform(0, cap / 2)


@dataclass(frozen=True)
class Step(Generic[T]):
    """What one attempt came to: a value, or whether (and how) to try again."""

    value: T | None = None
    retry: bool = False
    backoff: bool = True  # wait before the next attempt (endpoint trouble, not bad content)
    retry_after: float | None = None


def with_retries(
    attempt: Callable[[int], Step[T]],
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call ``attempt(0)``, ``attempt(1)``, ... until one returns a value or gives up."""
    for index in range(policy.max_attempts):
        step = attempt(index)
        if step.value is not None:
            return step.value
        if not step.retry or index + 1 == policy.max_attempts:
            return None
        if step.backoff:
            wait = policy.delay(index, rng, step.retry_after)
            if wait is None:
                return None
            sleep(wait)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _body_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return error.message
