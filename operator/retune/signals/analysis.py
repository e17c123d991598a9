"""Canary analysis: run each analysis query for the canary (and the stable) and judge it.

Query templates may use ``{{track}}`` (``canary`` or ``stable``: the ``retune.dev/track``
pod label), ``{{namespace}}`` (the target's namespace) and ``{{target}}`` (the target's
name). The verdict of a query is the canary's:

- ``pass``: the canary's value respects the threshold;
- ``fail``: it does not;
- ``nodata``: the canary's query gave no number (no data, invalid, Prometheus unavailable,
  bad query; the sample says which). The rollout decides what that means (hold or count as
  a failure); it never passes.

The stable track is queried with the same template for comparison and reported beside the
canary; it does not change the verdict. A template without ``{{track}}`` measures the
service as a whole and is queried once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from retune.signals.metrics import MetricsProvider, Sample, Value, safe_query
from retune.spec.base import placeholders, render_query
from retune.spec.rollout import AnalysisQuery

CANARY_TRACK = "canary"
STABLE_TRACK = "stable"
Outcome = Literal["pass", "fail", "nodata"]


def render_analysis_query(query: AnalysisQuery, *, track: str, namespace: str, target: str) -> str:
    """The PromQL of ``query`` for one track."""
    values = {"track": track, "namespace": namespace, "target": target}
    return render_query(query.query, values)


@dataclass(frozen=True)
class AnalysisResult:
    """The verdict of one analysis query, with both tracks' samples."""

    name: str
    outcome: Outcome
    canary: Sample
    stable: Sample | None
    """None when the query has no ``{{track}}`` (it measures the whole service)."""
    message: str


def analyse_query(
    query: AnalysisQuery, provider: MetricsProvider, *, namespace: str, target: str
) -> AnalysisResult:
    """Run ``query`` for the canary (and the stable) and judge the canary's value."""
    per_track = "track" in placeholders(query.query)

    def sample(track: str) -> Sample:
        promql = render_analysis_query(query, track=track, namespace=namespace, target=target)
        return safe_query(provider, promql)

    canary = sample(CANARY_TRACK)
    stable = sample(STABLE_TRACK) if per_track else None
    bound = f"{'at most' if query.comparison == 'below' else 'at least'} {query.threshold:g}"
    outcome: Outcome
    if not isinstance(canary, Value):
        outcome = "nodata"
        message = f"{query.name}: canary {canary.describe()}"
    else:
        outcome = "pass" if query.passes(canary.value) else "fail"
        verb = "is" if outcome == "pass" else "is not"
        message = f"{query.name}: canary {canary.value:g} {verb} {bound}"
    if stable is not None:
        message += f" (stable: {stable.describe()})"
    return AnalysisResult(
        name=query.name, outcome=outcome, canary=canary, stable=stable, message=message
    )


@dataclass(frozen=True)
class AnalysisReport:
    """The verdicts of one analysis run: ``fail`` if any query failed, else ``nodata`` if
    any had no data, else ``pass`` (also with no queries at all)."""

    outcome: Outcome
    results: tuple[AnalysisResult, ...]

    @property
    def message(self) -> str:
        """The results that decided the outcome, one per line-part."""
        deciding = [r.message for r in self.results if r.outcome == self.outcome]
        return "; ".join(deciding) or "no analysis queries"


def analyse(
    queries: Iterable[AnalysisQuery], provider: MetricsProvider, *, namespace: str, target: str
) -> AnalysisReport:
    """Run every analysis query once and combine the verdicts."""
    results = tuple(
        analyse_query(query, provider, namespace=namespace, target=target) for query in queries
    )
    outcomes = {result.outcome for result in results}
    outcome: Outcome = (
        "fail" if "fail" in outcomes else "nodata" if "nodata" in outcomes else "pass"
    )
    return AnalysisReport(outcome=outcome, results=results)
