"""Canary analysis: query templating and per-query verdicts."""

from __future__ import annotations

from retune.signals import (
    BadQuery,
    Invalid,
    NoData,
    RecordedProvider,
    Unavailable,
    Value,
    analyse,
    analyse_query,
)
from retune.signals.analysis import render_analysis_query
from retune.signals.metrics import Sample
from retune.spec import AnalysisQuery

ERRORS = AnalysisQuery(
    name="error-rate",
    query='sum(rate(errors_total{namespace="{{namespace}}",track="{{track}}"}[1m]))',
    threshold=0.05,
    comparison="below",
)
HIT_RATIO = AnalysisQuery(
    name="hit-ratio",
    query='avg(cache_hit_ratio{track="{{track}}"})',
    threshold=0.5,
    comparison="above",
)
SERVICE_UP = AnalysisQuery(name="up", query='min(up{job="shop"})', threshold=1, comparison="above")


def q(template: AnalysisQuery, track: str) -> str:
    return render_analysis_query(template, track=track, namespace="shop", target="cache")


def test_templates_are_rendered_per_track() -> None:
    assert q(ERRORS, "canary") == 'sum(rate(errors_total{namespace="shop",track="canary"}[1m]))'
    assert q(ERRORS, "stable") == 'sum(rate(errors_total{namespace="shop",track="stable"}[1m]))'


def test_target_placeholder_is_rendered() -> None:
    # model_construct: the spec's placeholder list is checked elsewhere; rendering supports
    # {{target}} for queries that select by the target's name.
    query = AnalysisQuery.model_construct(
        name="t", query='x{target="{{target}}"}', threshold=1.0, comparison="below"
    )
    assert q(query, "canary") == 'x{target="cache"}'


def test_canary_value_decides_pass_or_fail_and_stable_is_reported() -> None:
    provider = RecordedProvider({q(ERRORS, "canary"): 0.01, q(ERRORS, "stable"): 0.02})
    result = analyse_query(ERRORS, provider, namespace="shop", target="cache")
    assert result.outcome == "pass"
    assert result.canary == Value(0.01) and result.stable == Value(0.02)
    assert result.message == "error-rate: canary 0.01 is at most 0.05 (stable: 0.02)"

    failing = RecordedProvider({q(ERRORS, "canary"): 0.2, q(ERRORS, "stable"): 0.01})
    result = analyse_query(ERRORS, failing, namespace="shop", target="cache")
    assert result.outcome == "fail"
    assert result.message == "error-rate: canary 0.2 is not at most 0.05 (stable: 0.01)"


def test_an_above_check() -> None:
    provider = RecordedProvider({q(HIT_RATIO, "canary"): 0.4, q(HIT_RATIO, "stable"): 0.7})
    assert analyse_query(HIT_RATIO, provider, namespace="shop", target="cache").outcome == "fail"


def test_a_canary_without_a_number_is_nodata_and_says_why() -> None:
    for problem in (NoData(), Invalid("NaN"), Unavailable("connection refused"), BadQuery("parse")):

        class Answer:
            def query(self, promql: str, problem: Sample = problem) -> Sample:
                return problem if "canary" in promql else Value(0.01)

        result = analyse_query(ERRORS, Answer(), namespace="shop", target="cache")
        assert result.outcome == "nodata"
        assert result.canary == problem
        assert problem.describe() in result.message


def test_no_data_for_the_stable_does_not_change_the_verdict() -> None:
    provider = RecordedProvider({q(ERRORS, "canary"): 0.01})
    result = analyse_query(ERRORS, provider, namespace="shop", target="cache")
    assert result.outcome == "pass" and isinstance(result.stable, NoData)


def test_a_query_without_track_is_run_once() -> None:
    asked: list[str] = []

    class Counting:
        def query(self, promql: str) -> Sample:
            asked.append(promql)
            return Value(1)

    result = analyse_query(SERVICE_UP, Counting(), namespace="shop", target="cache")
    assert result.outcome == "pass" and result.stable is None
    assert asked == ['min(up{job="shop"})']


def test_the_report_fails_on_any_failure_then_holds_on_no_data() -> None:
    values = {
        q(ERRORS, "canary"): 0.01,
        q(HIT_RATIO, "canary"): 0.9,
        'min(up{job="shop"})': 1,
    }
    passing = analyse(
        [ERRORS, HIT_RATIO, SERVICE_UP], RecordedProvider(values), namespace="shop", target="cache"
    )
    assert passing.outcome == "pass" and len(passing.results) == 3

    no_hits = {k: v for k, v in values.items() if k != q(HIT_RATIO, "canary")}
    held = analyse([ERRORS, HIT_RATIO], RecordedProvider(no_hits), namespace="shop", target="cache")
    assert held.outcome == "nodata"
    assert held.message.startswith("hit-ratio: canary no data")

    failing = dict(no_hits, **{q(ERRORS, "canary"): 1.0})
    report = analyse(
        [ERRORS, HIT_RATIO], RecordedProvider(failing), namespace="shop", target="cache"
    )
    assert report.outcome == "fail"
    assert report.message.startswith("error-rate: canary 1 is not at most 0.05")


def test_no_queries_pass() -> None:
    report = analyse([], RecordedProvider({}), namespace="shop", target="cache")
    assert report.outcome == "pass" and report.message == "no analysis queries"
