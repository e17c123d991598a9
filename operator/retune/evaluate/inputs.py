"""For evaluator authors: the evaluation context read into the evaluator's own models.

An evaluator's ``evaluate(policy_path, profile, stage)`` receives the context as a plain
dict (``workload``, ``hardware``, ``params``, ``seed``). Validating it up front, into
pydantic models the evaluator declares, makes a bad value fail with its field's name
rather than deep inside a simulator::

    from retune.evaluate.inputs import read_context, weights_by_name

    workload, params, seed = read_context(profile, CacheWorkload, CacheParams)
    weights = weights_by_name(params.phase_weights, PHASES, "params.phase_weights")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

WorkloadT = TypeVar("WorkloadT", bound=BaseModel)
ParamsT = TypeVar("ParamsT", bound=BaseModel)
ModelT = TypeVar("ModelT", bound=BaseModel)


def read_context(
    profile: Mapping[str, Any], workload_model: type[WorkloadT], params_model: type[ParamsT]
) -> tuple[WorkloadT, ParamsT, int]:
    """The context's workload, params and seed; a ``ValueError`` naming each bad field by
    its path (``params.sim_keys: ...``)."""
    workload = _validated(workload_model, profile, "workload")
    params = _validated(params_model, profile, "params")
    return workload, params, int(profile.get("seed", 0))


def _validated(model: type[ModelT], profile: Mapping[str, Any], section: str) -> ModelT:
    try:
        return model.model_validate(profile.get(section) or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, (section, *error['loc'])))}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(f"invalid evaluation context: {problems}") from exc


def weights_by_name(
    table: Mapping[str, float], names: Sequence[str], field: str
) -> dict[str, float]:
    """One weight per name in ``names`` (0 where ``table`` has none), checked: no unknown
    names, none negative, not all 0. Errors start with ``field``, the table's path."""
    unknown = set(table) - set(names)
    if unknown:
        raise ValueError(f"{field}: unknown names {sorted(unknown)}; expected {list(names)}")
    weights = {name: float(table.get(name, 0.0)) for name in names}
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"{field}: weights must be >= 0 and not all 0")
    return weights
