"""Token estimates and USD prices for LLM calls.

Two different estimates, for two different jobs:

* :func:`estimate_tokens` (about four characters a token) stands in for the real count
  when a server answers without a ``usage`` block, so the ledger still records a cost.
* :func:`prompt_token_bound` is an *upper bound* on what any tokenizer can count for a
  prompt (every token covers at least one UTF-8 byte, plus the chat template's few
  tokens per message). Budget reservations use it, so a call that is allowed to start
  can never push the run past its USD budget, whatever tokenizer the server uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# Role markers and separators a chat template adds around each message; generous on
# purpose (real templates add 3-5).
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_PROMPT = 8


class PerMillionPrices(Protocol):
    """What pricing needs from a tier's price sheet (``retune.spec.Pricing``)."""

    def per_million(self) -> tuple[float, float]:
        """USD per million prompt tokens and per million completion tokens."""
        ...


def estimate_tokens(text: str) -> int:
    """A rough token count (about four characters a token), for unreported usage."""
    return (len(text) + 3) // 4


def prompt_token_bound(messages: Sequence[str]) -> int:
    """An upper bound on the prompt tokens of a chat made of ``messages``."""
    return TEMPLATE_TOKENS_PER_PROMPT + sum(
        len(text.encode("utf-8")) + TEMPLATE_TOKENS_PER_MESSAGE for text in messages
    )


def cost_usd(prices: PerMillionPrices, prompt_tokens: int, completion_tokens: int) -> float:
    """The USD cost of a call that used these many tokens."""
    per_in, per_out = prices.per_million()
    return (prompt_tokens * per_in + completion_tokens * per_out) / 1_000_000


def worst_case_usd(
    prices: PerMillionPrices, messages: Sequence[str], max_output_tokens: int
) -> float:
    """The most a call with this prompt and output cap can cost; what a call reserves."""
    return cost_usd(prices, prompt_token_bound(messages), max_output_tokens)


def affordable_output_tokens(
    prices: PerMillionPrices, messages: Sequence[str], usd: float
) -> int | None:
    """The largest output cap whose worst case with this prompt fits ``usd``: ``None``
    when output is free (any cap fits), negative when not even the prompt fits."""
    per_out = prices.per_million()[1]
    if per_out <= 0:
        return None
    left = usd - cost_usd(prices, prompt_token_bound(messages), 0)
    return int(left * 1_000_000 / per_out)
