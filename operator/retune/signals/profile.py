"""Reading the workload profile: named queries, each reduced to one number or a problem."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from retune.signals.metrics import MetricsProvider, Problem, Value, safe_query


@dataclass(frozen=True)
class ProfileReading:
    """One reading of the profile: the names that gave a number, and the ones that did not.

    Every queried name is in exactly one of ``values`` and ``problems``; a missing value is
    never filled in with 0.
    """

    values: dict[str, float] = field(default_factory=dict)
    problems: dict[str, Problem] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every query gave a number."""
        return not self.problems

    def describe_problems(self) -> str:
        """``name: reason`` of every problem, for a status condition or an Event."""
        return "; ".join(f"{name}: {problem.describe()}" for name, problem in self.problems.items())


def read_profile(provider: MetricsProvider, queries: Mapping[str, str]) -> ProfileReading:
    """Query every ``name -> promql`` of the profile once, in order."""
    values: dict[str, float] = {}
    problems: dict[str, Problem] = {}
    for name, promql in queries.items():
        sample = safe_query(provider, promql)
        if isinstance(sample, Value):
            values[name] = sample.value
        else:
            problems[name] = sample
    return ProfileReading(values=values, problems=problems)
