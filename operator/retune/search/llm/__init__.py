"""LLM tiers as a mutator: prompts, parsing, pricing, the endpoint client and the mutator.

Build one with :func:`build_llm_mutator`; everything else here is the machinery behind it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from retune.search.ledger import Ledger
from retune.search.llm.audit import AuditEntry, AuditLog
from retune.search.llm.client import ChatEndpoint, RetryPolicy
from retune.search.llm.mutator import LLMMutator, Tier
from retune.search.llm.prompts import PolicyBrief
from retune.search.mutation import Mutator
from retune.spec import ApiKeySource, ModelTier, PolicySpec, SearchSpec

__all__ = [
    "AuditEntry",
    "AuditLog",
    "LLMConfigError",
    "LLMMutator",
    "RetryPolicy",
    "Tier",
    "build_llm_mutator",
    "env_api_key",
]

# What the OpenAI client is given for an endpoint that needs no key (a local server).
NO_KEY = "no-key"

ApiKeyResolver = Callable[[ApiKeySource], str | None]


class LLMConfigError(ValueError):
    """A model tier cannot be used as configured; the message names the field."""


def env_api_key(source: ApiKeySource) -> str | None:
    """The key from the environment variable ``source`` names (local mode)."""
    return os.environ.get(source.env) if source.env else None


def build_llm_mutator(
    search_spec: SearchSpec,
    policy_spec: PolicySpec,
    ledger: Ledger,
    fallback: Mutator,
    audit_path: Path | None,
    seed: int,
    resolve_api_key: ApiKeyResolver | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> LLMMutator:
    """An :class:`LLMMutator` over the spec's model tiers.

    ``resolve_api_key`` turns a tier's key source into the key (the operator passes one
    that reads Kubernetes Secrets); by default keys come from environment variables.
    Raises :class:`LLMConfigError` if no tier is configured or a configured key is missing.
    """
    resolve = resolve_api_key or env_api_key
    if not search_spec.models:
        raise LLMConfigError("spec.search.models: the llm mutator needs at least one model tier")
    tiers = [_tier(index, model, resolve) for index, model in enumerate(search_spec.models)]
    policy = PolicyBrief(
        entrypoint=policy_spec.entrypoint,
        signature=policy_spec.signature,
        description=policy_spec.description,
        kind=policy_spec.kind,
        parameters=tuple(policy_spec.parameters) if policy_spec.kind == "parameters" else (),
    )
    audit = AuditLog(audit_path) if audit_path is not None else None
    return LLMMutator(
        tiers,
        policy,
        ledger,
        fallback,
        seed=seed,
        audit=audit,
        retry=retry,
        strong_share=search_spec.tiering.strong_share,
    )


def _tier(index: int, model: ModelTier, resolve: ApiKeyResolver) -> Tier:
    key = resolve(model.api_key) if model.api_key is not None else NO_KEY
    if not key:
        where = f"spec.search.models[{index}].apiKey"
        env = model.api_key.env if model.api_key is not None else None
        hint = f"set the environment variable {env}" if env else "check the referenced Secret"
        raise LLMConfigError(f"{where}: no API key for tier {model.name!r}; {hint}")
    endpoint = ChatEndpoint(
        base_url=model.base_url,
        api_key=key,
        model=model.model,
        timeout_seconds=float(model.timeout_seconds),
        token_parameter=model.token_limit_parameter,
        send_temperature=model.send_temperature,
        headers=dict(model.headers),
        query=dict(model.query),
    )
    return Tier(
        name=model.name,
        role=model.role,
        endpoint=endpoint,
        prices=model.pricing,
        max_concurrency=model.max_concurrency,
        max_output_tokens=model.max_output_tokens,
        temperature=model.temperature,
        index=index,
    )
