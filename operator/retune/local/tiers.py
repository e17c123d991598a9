"""Model tiers of a local run: the spec's, replaced or added to from the command line.

``--model cheap=NAME@IN/OUT`` gives a tier its model and its prices (US dollars per
million prompt and completion tokens); ``--llm-base-url`` is the endpoint of every tier.
Nothing is assumed: a tier with no model or no price is an error naming what to set, never
a silent default (a guessed price would make the USD budget meaningless).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

from retune.spec import ApiKeySource, ModelTier, Pricing
from retune.spec.errors import Problem

# The words a user may give a tier on the command line, and the spec role each one means.
ROLE_WORDS = {
    "cheap": "mutate",
    "mutate": "mutate",
    "strong": "paradigm",
    "paradigm": "paradigm",
    "init": "init",
}
EXAMPLE_TIER = "cheap=gpt-4o-mini@0.15/0.60"
MODEL_OPTION_FORMAT = f"ROLE=MODEL@IN/OUT, e.g. {EXAMPLE_TIER}"
_OPTION = re.compile(r"^(?P<role>[a-z]+)=(?P<model>[^@\s]+)@(?P<inp>[^/\s]+)/(?P<out>\S+)$")
_TIER_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class TierOption:
    """One ``--model`` option: a role, the model name sent to the endpoint, its prices."""

    role: str
    model: str
    input_per_million: float
    output_per_million: float


def parse_tier_option(text: str) -> TierOption:
    """``cheap=NAME@IN/OUT`` as a :class:`TierOption`; ``ValueError`` says what is wrong."""
    match = _OPTION.match(text.strip())
    if match is None:
        raise ValueError(f"expected {MODEL_OPTION_FORMAT} (got {text!r})")
    word = match["role"]
    if word not in ROLE_WORDS:
        roles = ", ".join(ROLE_WORDS)
        raise ValueError(f"unknown role {word!r} in {text!r}; use one of {roles}")
    prices = []
    for what in ("inp", "out"):
        try:
            price = float(match[what])
        except ValueError:
            price = -1.0
        if not price >= 0:  # also refuses nan
            raise ValueError(
                f"{match[what]!r} in {text!r} is not a price; give US dollars per million "
                f"tokens, e.g. {EXAMPLE_TIER}"
            )
        prices.append(price)
    return TierOption(ROLE_WORDS[word], match["model"], prices[0], prices[1])


def resolve_tiers(
    configured: list[ModelTier],
    options: list[TierOption],
    *,
    base_url: str | None,
    api_key_env: str | None,
) -> tuple[list[ModelTier], list[Problem]]:
    """The tiers a local run uses, and the problems that keep it from using them.

    A ``--model`` option replaces the spec's tiers of its role and keeps the others;
    ``base_url`` points every tier at one endpoint. Problems name the option or field;
    no tier at all is left to the caller, who knows whether one is needed.
    """
    problems: list[Problem] = []
    replaced = {option.role for option in options}
    tiers = [tier for tier in configured if tier.role not in replaced]
    if options and not base_url:
        problems.append(
            Problem("--model", "a tier given on the command line needs --llm-base-url URL")
        )
    names = _tier_names(options)
    for option, name in zip(options, names, strict=True):
        try:
            tiers.append(
                ModelTier(
                    name=name,
                    role=option.role,  # type: ignore[arg-type]  # checked by parse_tier_option
                    base_url=base_url or "http://unset.invalid",
                    model=option.model,
                    api_key=ApiKeySource(env=api_key_env) if api_key_env else None,
                    pricing=Pricing(
                        input_per_million=option.input_per_million,
                        output_per_million=option.output_per_million,
                    ),
                )
            )
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]) for e in exc.errors(include_url=False))
            problems.append(Problem("--model", f"{option.model}: {reasons}"))
    if base_url:
        tiers = [tier.model_copy(update={"base_url": base_url}) for tier in tiers]
    return tiers, problems


def _tier_names(options: list[TierOption]) -> list[str]:
    """A tier is named after its model (so the ledger's rows match the endpoint's models),
    or after model and role when two tiers use the same model."""
    models = [option.model for option in options]
    names = []
    for option in options:
        name = _TIER_NAME_UNSAFE.sub("-", option.model).strip("-._") or "model"
        if models.count(option.model) > 1:
            name = f"{name}-{option.role}"
        names.append(name[:63])
    return names
