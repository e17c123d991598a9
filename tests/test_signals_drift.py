"""Profile drift: relative change per metric, sustained for a duration."""

from __future__ import annotations

import pytest

from retune.signals import DriftDetector, NoData, ProfileReading
from retune.spec import DriftSpec

BASELINE = {"rps": 100.0, "hit_ratio": 0.8, "errors": 0.0}
SPEC = DriftSpec(threshold=0.2, for_seconds=600)


def detector(**kwargs: float) -> DriftDetector:
    return DriftDetector(BASELINE, SPEC, **kwargs)


def test_a_profile_within_the_threshold_is_stable() -> None:
    verdict = detector().observe(0, {"rps": 119.0, "hit_ratio": 0.7, "errors": 0.0})
    assert verdict.status == "stable" and not verdict.drifted
    assert verdict.metrics["rps"].change == pytest.approx(0.19)
    assert verdict.message == "profile within 20% of the tuned one"


def test_drift_must_be_sustained() -> None:
    drift = detector()
    first = drift.observe(0, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0})
    assert first.status == "drifting" and first.metrics["rps"].since == 0
    assert "rps +50% (100 -> 150)" in first.message
    assert drift.observe(300, {"rps": 160.0, "hit_ratio": 0.8, "errors": 0.0}).status == "drifting"
    verdict = drift.observe(600, {"rps": 145.0, "hit_ratio": 0.8, "errors": 0.0})
    assert verdict.status == "drifted" and verdict.drifted
    assert list(verdict.drifted_metrics) == ["rps"]
    assert verdict.drifted_metrics["rps"].change == pytest.approx(0.45)
    assert verdict.message == "drifted beyond 20%: rps +45% (100 -> 145) for 10m"


def test_returning_within_the_threshold_resets_a_metric() -> None:
    drift = detector()
    drift.observe(0, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0})
    drift.observe(300, {"rps": 110.0, "hit_ratio": 0.8, "errors": 0.0})
    verdict = drift.observe(600, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0})
    assert verdict.status == "drifting" and verdict.metrics["rps"].since == 600


def test_decreases_drift_too_and_every_drifted_metric_is_named() -> None:
    drift = DriftDetector(BASELINE, DriftSpec(threshold=0.2, for_seconds=0))
    verdict = drift.observe(0, {"rps": 50.0, "hit_ratio": 0.5, "errors": 0.0})
    assert verdict.drifted
    assert set(verdict.drifted_metrics) == {"rps", "hit_ratio"}
    assert verdict.drifted_metrics["hit_ratio"].change == pytest.approx(-0.375)
    assert "rps -50%" in verdict.message and "hit_ratio -38%" in verdict.message


def test_a_zero_baseline_uses_epsilon() -> None:
    drift = DriftDetector({"errors": 0.0}, DriftSpec(threshold=0.2, for_seconds=0), eps=1.0)
    assert drift.observe(0, {"errors": 0.1}).status == "stable"
    assert drift.observe(1, {"errors": 0.5}).drifted
    assert DriftDetector({"errors": 0.0}, SPEC).change("errors", 1e-3) == pytest.approx(1000)


def test_missing_metrics_hold_their_clock_and_are_never_stable() -> None:
    drift = detector(max_gap_seconds=900)
    drift.observe(0, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0})
    reading = ProfileReading(values={"hit_ratio": 0.8, "errors": 0.0}, problems={"rps": NoData()})
    held = drift.observe(300, reading)
    assert held.status == "nodata" and held.metrics["rps"].since == 0
    assert held.message == "profile within 20% where known; no data for rps"
    assert drift.observe(700, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0}).drifted


def test_a_long_blind_spot_restarts_a_metric() -> None:
    drift = detector(max_gap_seconds=120)
    drift.observe(0, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0})
    drift.observe(60, {"hit_ratio": 0.8, "errors": 0.0})
    verdict = drift.observe(700, {"rps": 150.0, "hit_ratio": 0.8, "errors": 0.0})
    assert verdict.status == "drifting" and verdict.metrics["rps"].since == 700


def test_metrics_not_in_the_baseline_are_ignored() -> None:
    verdict = detector().observe(0, {**BASELINE, "new_metric": 1e9})
    assert verdict.status == "stable" and "new_metric" not in verdict.metrics


def test_epsilon_must_be_positive() -> None:
    with pytest.raises(ValueError, match="eps"):
        DriftDetector(BASELINE, SPEC, eps=0)
