"""How the search runs: budget, mutator, model tiers, archive, cascade and tiering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from retune.spec.base import (
    FloatSeconds,
    Identifier,
    KeyRef,
    Name,
    NonEmptyStr,
    SpecModel,
    Url,
    duplicates,
    invalid,
)


class BudgetSpec(SpecModel):
    """Limits of one search; it stops before any of them would be exceeded."""

    max_evaluations: int | None = Field(default=None, ge=1)
    """Most candidates the search may evaluate. A candidate counts once whether the quick
    stage screened it out or it went on to the full evaluation; duplicates and failed
    mutations are not evaluated and do not count, nor does held-out validation."""
    max_usd: float | None = Field(default=None, ge=0)
    """Most money the search may spend on model calls, in US dollars."""
    max_wall_seconds: FloatSeconds | None = Field(
        default=None, gt=0, validation_alias="maxWallTime", serialization_alias="maxWallTime"
    )
    """Longest the search may run, e.g. ``2h``."""

    @model_validator(mode="after")
    def _bounded(self) -> BudgetSpec:
        if self.max_evaluations is None and self.max_usd is None and self.max_wall_seconds is None:
            raise invalid("set at least one of maxEvaluations, maxUsd or maxWallTime")
        return self


class ApiKeySource(SpecModel):
    """Where a model endpoint's API key comes from: an environment variable (local mode and
    the operator's own environment) and/or a Secret key (in the cluster)."""

    env: Identifier | None = None
    """Environment variable holding the key."""
    secret_key_ref: KeyRef | None = None
    """Secret key holding the key, in the target's namespace."""

    @model_validator(mode="after")
    def _some_source(self) -> ApiKeySource:
        if self.env is None and self.secret_key_ref is None:
            raise invalid("set env, secretKeyRef, or both (omit apiKey for no key)")
        return self


class Pricing(SpecModel):
    """What a model costs: per-million-token prices, or for a self-hosted model the GPU's
    hourly price and its generation throughput."""

    input_per_million: float | None = Field(default=None, ge=0)
    """US dollars per million prompt tokens."""
    output_per_million: float | None = Field(default=None, ge=0)
    """US dollars per million completion tokens."""
    gpu_hour_usd: float | None = Field(default=None, ge=0)
    """Self-hosted: US dollars per hour of the serving GPU(s)."""
    tokens_per_second: float | None = Field(default=None, gt=0)
    """Self-hosted: tokens per second the server generates."""

    @model_validator(mode="after")
    def _one_form(self) -> Pricing:
        per_token = (self.input_per_million, self.output_per_million)
        per_hour = (self.gpu_hour_usd, self.tokens_per_second)
        uses_tokens = any(value is not None for value in per_token)
        uses_hours = any(value is not None for value in per_hour)
        if uses_tokens and uses_hours:
            raise invalid(
                "set either inputPerMillion/outputPerMillion or gpuHourUsd/tokensPerSecond"
            )
        if not uses_tokens and not uses_hours:
            raise invalid(
                "set inputPerMillion and outputPerMillion, or gpuHourUsd and tokensPerSecond"
            )
        pairs = (
            (("inputPerMillion", per_token[0]), ("outputPerMillion", per_token[1]))
            if uses_tokens
            else (("gpuHourUsd", per_hour[0]), ("tokensPerSecond", per_hour[1]))
        )
        for key, value in pairs:
            if value is None:
                raise invalid("required field missing", key)
        return self

    def per_million(self) -> tuple[float, float]:
        """US dollars per million (prompt, completion) tokens.

        A self-hosted model is charged its GPU time for every token at the generation
        rate, prompt tokens included: an upper bound, so the budget is never overshot.
        """
        if self.input_per_million is not None and self.output_per_million is not None:
            return self.input_per_million, self.output_per_million
        assert self.gpu_hour_usd is not None and self.tokens_per_second is not None
        usd = self.gpu_hour_usd / 3600.0 / self.tokens_per_second * 1e6
        return usd, usd


class ModelTier(SpecModel):
    """An OpenAI-compatible model endpoint and the role it plays in the search."""

    name: Name
    """Name of the tier, used in the ledger and in events."""
    role: Literal["mutate", "paradigm", "init"] = "mutate"
    """``mutate``: ordinary mutations (the cheap tier). ``paradigm``: rare paradigm shifts
    on stagnation (the strong tier). ``init``: diversifying the initial population."""
    base_url: Url
    """Base URL of the OpenAI-compatible API, e.g. ``https://api.openai.com/v1``."""
    model: NonEmptyStr
    """Model name sent to the endpoint."""
    api_key: ApiKeySource | None = None
    """Where the API key comes from; unset means the endpoint needs none."""
    pricing: Pricing
    """What calls cost; every call is priced, a self-hosted model too."""
    max_concurrency: int = Field(default=4, ge=1, le=256)
    """Most calls in flight to this tier."""
    timeout_seconds: FloatSeconds = Field(default=60.0, gt=0, le=3600)
    """Timeout of one call."""
    max_output_tokens: int = Field(default=2048, ge=16, le=1_000_000)
    """Most completion tokens per call (also what a call reserves from the budget)."""
    token_limit_parameter: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    """How the output limit is sent. ``auto``: ``max_tokens``, switching to
    ``max_completion_tokens`` when the endpoint says so (reasoning models)."""
    temperature: float = Field(default=0.8, ge=0, le=2)
    """Sampling temperature."""
    send_temperature: bool = True
    """false sends no temperature (models that take only their default). A temperature
    the endpoint refuses is dropped after its first 400 anyway."""
    headers: dict[str, str] = {}
    """Extra HTTP headers on every call (a gateway's route or tenant); the API key belongs
    in ``apiKey``, not here."""
    query: dict[str, str] = {}
    """Extra query parameters on every call (e.g. ``api-version`` for Azure OpenAI)."""


class ArchiveSpec(SpecModel):
    """The quality-diversity archive (CVT-MAP-Elites)."""

    cells: int = Field(default=64, ge=4, le=4096)
    """Number of niches (centroids)."""
    initial_population: int = Field(default=12, ge=2, le=1000)
    """Programs evaluated before the centroids and normalisation are fixed."""
    structural_descriptors: list[Identifier] = ["loops", "branches", "depth", "math_ops"]
    """Features of the program's syntax tree that place it in the archive."""
    behavioural_descriptors: list[Name] = []
    """Subscores that place a program in the archive; empty means every subscore the
    evaluator reports."""

    @model_validator(mode="after")
    def _unique(self) -> ArchiveSpec:
        for key, names in (
            ("structuralDescriptors", self.structural_descriptors),
            ("behaviouralDescriptors", self.behavioural_descriptors),
        ):
            repeated = duplicates(names)
            if repeated:
                raise invalid(f"duplicate descriptor {repeated[0]!r}", key)
        return self


class CascadeSpec(SpecModel):
    """A quick evaluation first; only promising candidates get the full one."""

    enabled: bool = True
    """Whether candidates are screened on the evaluator's quick stage first."""
    quick_threshold: float = Field(default=0.9, ge=0, le=1)
    """Fraction of its parent's quick score a child needs to go on to the full evaluation
    (the loosest screen; ``quickSpread`` tightens it)."""
    quick_spread: float = Field(default=0.5, ge=0, le=100)
    """Robust standard deviations of the recent quick scores a child may fall below its
    parent's quick score and still go on; the tighter of this and ``quickThreshold``
    applies, so the screen still works when every score lies within a few per cent of the
    seed. 0 keeps only ``quickThreshold``."""


class TieringSpec(SpecModel):
    """When the strong (paradigm) tier is called instead of the cheap one."""

    stagnation_evaluations: int = Field(default=40, ge=1)
    """Evaluations without a new best after which a paradigm shift is requested."""
    paradigm_every: int = Field(default=100, ge=0)
    """Request a paradigm shift every this many evaluations regardless; 0 disables."""
    initial_seeds: int = Field(default=3, ge=0, le=100)
    """Diversified programs asked of the init tier for the initial population."""
    strong_share: float = Field(default=0.3, ge=0, le=1)
    """Most share of the USD budget the strong tiers (roles ``paradigm`` and ``init``) may
    spend; past it, paradigm shifts are ordinary edits by the cheap tier."""


def _default_budget() -> BudgetSpec:
    return BudgetSpec(max_evaluations=200)


EXPLORE_DEFAULT = 32
"""``spec.search.explore``'s default."""
FREE_SHARE_DEFAULT = 0.6
"""``spec.search.freeShare``'s default."""
FREE_START_DEFAULT = 200
"""``spec.search.freeStart``'s default."""
ADDED_SEARCH_SETTINGS: dict[str, object] = {
    "explore": EXPLORE_DEFAULT,
    "freeShare": FREE_SHARE_DEFAULT,
}
"""Settings of ``spec.search`` added after targets could exist, with their defaults. At
its default such a setting is left out of what identifies a search (the spec's search
digest, a checkpoint's configuration), so upgrading the operator is not a spec change: no
new search, no checkpoint refused, no library winner forgotten."""
OUTSIDE_IDENTITY = frozenset({"freeStart"})
"""Settings of ``spec.search`` that leave the search as it is, like its budget: the free
start runs apart from the search and before it, so changing it is not a new search."""


def search_identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without those outside a search's identity
    (:data:`OUTSIDE_IDENTITY`) and the added ones at their default
    (:data:`ADDED_SEARCH_SETTINGS`): the part that identifies a search."""
    return {
        key: value
        for key, value in settings.items()
        if key not in OUTSIDE_IDENTITY
        and not (key in ADDED_SEARCH_SETTINGS and value == ADDED_SEARCH_SETTINGS[key])
    }


class SearchSpec(SpecModel):
    """How the search for a better policy runs."""

    seed: int = Field(default=0, ge=0)
    """Seed of every random choice; with the same model answers a run replays exactly."""
    budget: BudgetSpec = Field(default_factory=_default_budget)
    """Limits of one search; without a budget section, 200 evaluations."""
    mutator: Literal["builtin", "llm"] = "builtin"
    """``builtin``: AST-level mutations, no model needed. ``llm``: the model tiers."""
    models: list[ModelTier] = []
    """Model tiers; at least one ``mutate`` tier when the mutator is ``llm``."""
    archive: ArchiveSpec = Field(default_factory=ArchiveSpec)
    """The quality-diversity archive."""
    cascade: CascadeSpec = Field(default_factory=CascadeSpec)
    """Quick-then-full evaluation."""
    tiering: TieringSpec = Field(default_factory=TieringSpec)
    """When the strong tier is used."""
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    """Most candidates in flight (being generated or evaluated); unset means the
    evaluator's parallelism."""
    explore: int = Field(default=EXPLORE_DEFAULT, ge=0)
    """Evaluations a search spends on plain edits before it refines: then the built-in
    mutator also tunes a parent's constants from the scores of its relatives and grafts
    terms of other elites, and a child whose quick result is its parent's is not
    evaluated in full (a no-op). The default is above a retune's usual budget, so a
    retune searches as before; a value at or above the budget's maxEvaluations never
    refines."""
    free_share: float = Field(default=FREE_SHARE_DEFAULT, ge=0, le=1)
    """With the ``llm`` mutator, the share of a refining search's ordinary mutations
    answered without a model call: half by constant tuning, half by the built-in
    mutator's edits. They cost evaluations, not USD. 0 sends every mutation to the
    models."""
    free_start: int = Field(default=FREE_START_DEFAULT, ge=0)
    """With the ``llm`` mutator on a code policy, the most evaluations of the free start:
    a search of the built-in mutator's edits, run before the models' search and apart
    from it, so no model is paid for what free edits find. It takes at most a third of
    ``budget.maxEvaluations``, on top of them (the built-in edits find better programs
    in bursts, often 50-100 evaluations apart, so it does not stop early). Its best is the
    run's until the models' search beats it; its programs stay out of the models'
    archive and prompts, so the models' search is the one it would be without a free
    start. 0: none."""

    @model_validator(mode="after")
    def _tiers(self) -> SearchSpec:
        repeated = duplicates([tier.name for tier in self.models])
        if repeated:
            raise invalid(f"duplicate model tier name {repeated[0]!r}", "models")
        if self.mutator == "llm" and not any(tier.role == "mutate" for tier in self.models):
            raise invalid(
                "mutator 'llm' needs at least one model tier with role 'mutate'", "models"
            )
        return self
