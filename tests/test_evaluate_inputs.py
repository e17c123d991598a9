"""The evaluator authors' helpers: a bad context fails naming its field, before any work."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from retune.evaluate.inputs import read_context, weights_by_name


class Workload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    request_rate: float = Field(10.0, gt=0)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phase_weights: dict[str, float] = Field(default_factory=lambda: {"a": 1.0, "b": 1.0})


def test_a_context_is_read_into_the_evaluators_models() -> None:
    profile = {"workload": {"request_rate": 3.5, "unused": 1}, "params": {}, "seed": 4}
    workload, params, seed = read_context(profile, Workload, Params)
    assert (workload.request_rate, params.phase_weights, seed) == (3.5, {"a": 1.0, "b": 1.0}, 4)
    assert read_context({}, Workload, Params)[2] == 0  # every part is optional


@pytest.mark.parametrize(
    ("profile", "problem"),
    [
        ({"workload": {"request_rate": -1}}, "workload.request_rate: Input should be greater"),
        ({"params": {"typo": 1}}, "params.typo: Extra inputs are not permitted"),
    ],
)
def test_a_bad_context_names_the_field(profile: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^invalid evaluation context: {problem}"):
        read_context(profile, Workload, Params)


def test_weights_are_filled_and_checked() -> None:
    assert weights_by_name({"a": 2}, ("a", "b"), "params.w") == {"a": 2.0, "b": 0.0}
    with pytest.raises(ValueError, match=r"params\.w: unknown names \['c'\]"):
        weights_by_name({"c": 1.0}, ("a", "b"), "params.w")
    for bad in ({"a": -1.0, "b": 2.0}, {"a": 0.0}):
        with pytest.raises(ValueError, match=r"params\.w: weights must be >= 0 and not all 0"):
            weights_by_name(bad, ("a", "b"), "params.w")
