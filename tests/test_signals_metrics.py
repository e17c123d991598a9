"""The metric outcomes, the recorded provider, the factory and the profile reading."""

from __future__ import annotations

import math

import pytest

from retune.signals import (
    BadQuery,
    Invalid,
    NoData,
    RecordedProvider,
    Unavailable,
    Value,
    provider_for,
    read_profile,
)
from retune.signals.metrics import MetricsProvider, Sample, number, safe_query
from retune.signals.prometheus import PrometheusProvider


class Fixed:
    """A provider with canned answers per query text."""

    def __init__(self, answers: dict[str, Sample]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def query(self, promql: str) -> Sample:
        self.asked.append(promql)
        return self.answers.get(promql, NoData())


class Raising:
    def query(self, promql: str) -> Sample:
        raise RuntimeError("boom")


def test_value_refuses_non_finite_numbers() -> None:
    assert Value(1.5).value == 1.5
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="Invalid"):
            Value(bad)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.5", Value(1.5)),
        (3, Value(3.0)),
        ("-2e3", Value(-2000.0)),
    ],
)
def test_number_parses_prometheus_values(raw: object, expected: Sample) -> None:
    assert number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "kind", "reason"),
    [
        ("NaN", Invalid, "NaN"),
        ("+Inf", Invalid, "+Inf"),
        ("-Inf", Invalid, "-Inf"),
        ("abc", Invalid, "not a number"),
        (True, Invalid, "not a number"),
        ([1], Invalid, "not a number"),
        (None, NoData, "null"),
    ],
)
def test_number_names_what_is_wrong(raw: object, kind: type, reason: str) -> None:
    sample = number(raw)
    assert isinstance(sample, kind)
    assert reason in sample.reason  # type: ignore[union-attr]


def test_every_problem_describes_itself() -> None:
    assert NoData("x").describe() == "no data: x"
    assert Invalid("x").describe() == "invalid: x"
    assert Unavailable("x").describe() == "unavailable: x"
    assert BadQuery("x").describe() == "bad query: x"
    assert Value(2).describe() == "2"
    assert {NoData.kind, Invalid.kind, Unavailable.kind, BadQuery.kind, Value.kind} == {
        "nodata",
        "invalid",
        "unavailable",
        "bad_query",
        "value",
    }


def test_safe_query_turns_a_crashing_provider_into_unavailable() -> None:
    sample = safe_query(Raising(), "up")
    assert isinstance(sample, Unavailable)
    assert "RuntimeError: boom" in sample.reason


def test_recorded_provider_answers_by_text_or_by_profile_name() -> None:
    provider = RecordedProvider(
        {"rps": 120, "hit_ratio": "0.8", "sum(up)": 3, "gone": None, "broken": "NaN"},
        queries={"rps": "sum(rate(http_requests_total[5m]))"},
    )
    assert isinstance(provider, MetricsProvider)
    assert provider.query("sum(rate(http_requests_total[5m]))") == Value(120.0)
    assert provider.query("rps") == Value(120.0)
    assert provider.query("hit_ratio") == Value(0.8)
    assert provider.query("sum(up)") == Value(3.0)
    assert isinstance(provider.query("gone"), NoData)
    assert isinstance(provider.query("broken"), Invalid)
    missing = provider.query("sum(nothing)")
    assert isinstance(missing, NoData)
    assert "not in the recorded profile" in missing.reason


def test_provider_for_picks_prometheus_then_recorded() -> None:
    prometheus = provider_for("http://127.0.0.1:9", timeout=2)
    assert isinstance(prometheus, PrometheusProvider)
    assert prometheus.url == "http://127.0.0.1:9"
    recorded = provider_for(None, recorded={"rps": 1}, queries={"rps": "q"})
    assert recorded.query("q") == Value(1.0)
    with pytest.raises(ValueError, match="prometheusUrl"):
        provider_for(None)


def test_read_profile_names_every_problem_and_never_fills_in_zero() -> None:
    provider = Fixed(
        {
            "q_rps": Value(120.0),
            "q_zero": Value(0.0),
            "q_nan": Invalid("the value is NaN"),
            "q_down": Unavailable("connection refused"),
            "q_bad": BadQuery("parse error"),
        }
    )
    queries = {
        "rps": "q_rps",
        "zero": "q_zero",
        "empty": "q_empty",
        "nan": "q_nan",
        "down": "q_down",
        "bad": "q_bad",
    }
    reading = read_profile(provider, queries)
    assert reading.values == {"rps": 120.0, "zero": 0.0}
    assert list(reading.problems) == ["empty", "nan", "down", "bad"]
    assert isinstance(reading.problems["empty"], NoData)
    assert isinstance(reading.problems["bad"], BadQuery)
    assert not reading.complete
    assert "down: unavailable: connection refused" in reading.describe_problems()
    assert provider.asked == list(queries.values())


def test_read_profile_survives_a_crashing_provider() -> None:
    reading = read_profile(Raising(), {"rps": "q"})
    assert reading.values == {}
    assert isinstance(reading.problems["rps"], Unavailable)


def test_a_complete_profile() -> None:
    reading = read_profile(RecordedProvider({"a": 1, "b": 2}), {"a": "a", "b": "b"})
    assert reading.complete
    assert reading.values == {"a": 1.0, "b": 2.0}
    assert reading.describe_problems() == ""
