"""The operator's target gauges, and the chart's dashboard and alerts on what it exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from retune import __version__
from retune.controller.decision import Event
from retune.handlers.metrics import ALERTED_EVENTS, COUNTED_EVENTS, OperatorMetrics
from retune.search.ledger import LedgerState, ModelUsage
from retune.spec import Phase, SpendLimitSpec, TargetStatus
from retune.spec.events import WARNINGS, EventReason
from retune.spec.search import BudgetSpec
from retune.spec.status import (
    Condition,
    LedgerStatus,
    RolloutStatus,
    SearchStatus,
    SLOStatus,
    SpendStatus,
    SpentStatus,
    ValidationStatus,
    WatchStatus,
)

CHART = Path(__file__).resolve().parents[1] / "charts" / "retune"
DASHBOARD = CHART / "dashboards" / "retune.json"
RULES = CHART / "templates" / "prometheusrule.yaml"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum")}


def exported_names() -> set[str]:
    """Every series name the operator's registry can expose, read from the registry."""
    names = set()
    for family in OperatorMetrics().registry.collect():
        suffixes = _SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def _value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(
        name, {"target_namespace": "shop", "target": "cache", **labels}
    )


def _canary_status() -> TargetStatus:
    return TargetStatus(
        phase=Phase.CANARY,
        best_score=0.8,
        seed_score=0.5,
        conditions=[
            Condition(type="Ready", status="False", reason="RollingOut"),
            Condition(type="Degraded", status="False", reason="NoProblems"),
        ],
        validation=ValidationStatus(candidate="c7", passed=True, stable_score=0.6),
        rollout=RolloutStatus(
            revision="cache-abc",
            step=1,
            share=25,
            analysis={"errors": 0.01, "latency": None},
            stable_analysis={"errors": 0.02},
        ),
        watch=WatchStatus(slos={"p99": SLOStatus(state="pending", value=0.31)}),
        ledger=LedgerStatus(evaluations=30, usd=1.5, wall_seconds=600),
    )


def test_a_targets_status_becomes_gauges_and_stale_series_go() -> None:
    metrics = OperatorMetrics()
    budget = BudgetSpec(max_evaluations=100, max_usd=1.0, max_wall_seconds=3600)
    metrics.target_state("shop", "cache", _canary_status(), budget)
    assert _value(metrics, "retune_target_phase", phase="Canary") == 1
    assert _value(metrics, "retune_best_score") == 0.8
    assert _value(metrics, "retune_seed_score") == 0.5
    assert _value(metrics, "retune_stable_score") == 0.6
    assert _value(metrics, "retune_target_condition", type="Ready", reason="RollingOut") == 0
    assert _value(metrics, "retune_canary_weight") == 25
    assert _value(metrics, "retune_canary_step") == 1
    assert _value(metrics, "retune_canary_analysis", query="errors", track="canary") == 0.01
    assert _value(metrics, "retune_canary_analysis", query="errors", track="stable") == 0.02
    assert _value(metrics, "retune_canary_analysis", query="latency", track="canary") is None
    assert _value(metrics, "retune_slo_state", slo="p99", state="pending") == 1
    assert _value(metrics, "retune_slo_state", slo="p99", state="ok") == 0
    assert _value(metrics, "retune_slo_value", slo="p99") == 0.31
    assert _value(metrics, "retune_budget_remaining", resource="evaluations") == 70
    assert _value(metrics, "retune_budget_remaining", resource="usd") == 0  # never negative
    assert _value(metrics, "retune_budget_remaining", resource="wall_seconds") == 3000

    # The canary ends and a condition changes reason: the old series go, the weight is 0.
    stable = TargetStatus(
        phase=Phase.STABLE,
        conditions=[Condition(type="Ready", status="True", reason="Promoted")],
    )
    metrics.target_state("shop", "cache", stable)
    assert _value(metrics, "retune_canary_weight") == 0
    assert _value(metrics, "retune_canary_step") is None
    assert _value(metrics, "retune_canary_analysis", query="errors", track="canary") is None
    assert _value(metrics, "retune_target_condition", type="Ready", reason="RollingOut") is None
    assert _value(metrics, "retune_target_condition", type="Ready", reason="Promoted") == 1
    assert _value(metrics, "retune_slo_state", slo="p99", state="pending") is None
    assert _value(metrics, "retune_budget_remaining", resource="evaluations") is None
    assert _value(metrics, "retune_best_score") is None

    metrics.forget_target("shop", "cache")
    assert _value(metrics, "retune_canary_weight") is None
    assert _value(metrics, "retune_target_condition", type="Ready", reason="Promoted") is None


def test_events_are_counted_and_the_build_is_labelled() -> None:
    metrics = OperatorMetrics()
    metrics.decision_events(
        "shop", "cache", [Event("Warning", EventReason.CANARY_ABORTED, "x")] * 2
    )
    assert _value(metrics, "retune_events_total", type="Warning", reason="CanaryAborted") == 2
    text = generate_latest(metrics.registry).decode()
    assert f'version="{__version__}"' in text.split("retune_build_info{", 1)[1].splitlines()[0]


def test_no_operator_metric_has_a_label_the_scrape_overwrites() -> None:
    # Prometheus attaches these target labels itself; an exported one becomes exported_*.
    reserved = {"namespace", "pod", "container", "service", "endpoint", "instance", "job"}
    metrics = OperatorMetrics()
    metrics.target_state("shop", "cache", _canary_status(), BudgetSpec(max_evaluations=5))
    for family in metrics.registry.collect():
        for sample in family.samples:
            assert not reserved & set(sample.labels), (sample.name, sample.labels)


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bretune_[a-z_]+\b", expr))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    variables = dashboard["templating"]["list"]
    exprs += [v["query"]["query"] for v in variables if v["type"] == "query"]
    return exprs


def test_every_dashboard_query_names_metrics_the_operator_exports() -> None:
    exported = exported_names()
    exprs = _dashboard_exprs()
    assert len(json.loads(DASHBOARD.read_text())["panels"]) >= 8
    for expr in exprs:
        named = _metric_names(expr)
        assert named, f"a dashboard query names no retune metric: {expr}"
        assert named <= exported, f"{sorted(named - exported)} are not exported: {expr}"


def test_every_alert_names_metrics_the_operator_exports() -> None:
    exported = exported_names()
    exprs = re.findall(r"expr: \|?\s*(.+?)(?:\n\s+for:|\n\s+labels:)", RULES.read_text(), re.S)
    assert len(exprs) >= 5
    for expr in exprs:
        named = _metric_names(expr)
        assert named and named <= exported, (expr, sorted(named - exported))


def test_the_check_fails_on_a_metric_the_operator_does_not_export() -> None:
    assert not _metric_names("sum(retune_canary_wieght)") <= exported_names()


def test_a_spend_limit_shows_what_is_left_and_lowers_the_searchs_usd_budget() -> None:
    metrics = OperatorMetrics()
    now = datetime(2025, 1, 8, tzinfo=UTC)
    status = TargetStatus(
        phase=Phase.SEARCHING,
        search=SearchStatus(started_at=now, usd_allowance=0.4),
        ledger=LedgerStatus(usd=0.1),
        spend=SpendStatus(
            total_usd=0.8,
            searches=[
                SpentStatus(at=datetime(2025, 1, 6, tzinfo=UTC), usd=0.3),
                SpentStatus(at=datetime(2024, 12, 1, tzinfo=UTC), usd=0.4),  # out of the window
            ],
        ),
    )
    limit = SpendLimitSpec(max_usd=1.0, window_seconds=7 * 86400)
    metrics.target_state("shop", "cache", status, BudgetSpec(max_usd=2.0), limit, now)
    assert _value(metrics, "retune_spend_total_usd") == 0.8
    assert _value(metrics, "retune_spend_limit_remaining_usd") == pytest.approx(0.6)
    # the search's USD budget is its allowance, not the spec's 2.0
    assert _value(metrics, "retune_budget_remaining", resource="usd") == pytest.approx(0.3)
    metrics.target_state("shop", "cache", status, BudgetSpec(max_usd=2.0))
    assert _value(metrics, "retune_spend_limit_remaining_usd") is None
    metrics.forget_target("shop", "cache")
    assert _value(metrics, "retune_spend_total_usd") is None


def test_outcome_counters_start_at_zero_when_a_target_is_first_seen() -> None:
    # Prometheus' increase() sees no increase in a series born at 1: an alert on the first
    # rollback (or search without a winner) of a target needs the series at 0 before it.
    metrics = OperatorMetrics()
    assert _value(metrics, "retune_rollouts_total", outcome="RolledBack") is None
    metrics.target_state("shop", "cache", TargetStatus(phase=Phase.PROFILING))
    assert _value(metrics, "retune_rollouts_total", outcome="RolledBack") == 0
    assert _value(metrics, "retune_retunes_total", trigger="SLOViolation") == 0
    search_ended = {"type": "Normal", "reason": "NoImprovement"}
    assert _value(metrics, "retune_events_total", **search_ended) == 0
    metrics.outcomes("shop", "cache", ["RolledBack"], None)
    metrics.decision_events("shop", "cache", [Event("Normal", EventReason.NO_IMPROVEMENT, "kept")])
    metrics.target_state("shop", "cache", TargetStatus(phase=Phase.STABLE))  # not reset
    assert _value(metrics, "retune_rollouts_total", outcome="RolledBack") == 1
    assert _value(metrics, "retune_events_total", **search_ended) == 1


def test_a_searchs_tiers_and_every_evaluation_count_start_at_zero() -> None:
    # The dashboard's spend, token and evaluation panels are rate()s: a series' first
    # increase shows only after a sample of it at 0
    metrics = OperatorMetrics()
    metrics.target_state("shop", "cache", TargetStatus(phase=Phase.SEARCHING))
    for stage in ("quick", "full", "holdout"):
        assert _value(metrics, "retune_evaluations_total", stage=stage, result="failed") == 0
    assert _value(metrics, "retune_llm_cost_usd_total", model="small") is None
    metrics.search_tiers("shop", "cache", ["small", "large"])
    for tier in ("small", "large"):
        assert _value(metrics, "retune_llm_cost_usd_total", model=tier) == 0
        assert _value(metrics, "retune_llm_tokens_total", model=tier, kind="completion") == 0
    spent = LedgerState(models={"small": ModelUsage(prompt_tokens=900, usd=0.002)})
    metrics.ledger("shop", "cache", spent)
    assert _value(metrics, "retune_llm_cost_usd_total", model="small") == 0.002
    assert _value(metrics, "retune_llm_tokens_total", model="small", kind="prompt") == 900
    assert _value(metrics, "retune_llm_tokens_total", model="small", kind="completion") == 0


def test_a_deleted_targets_counters_go_with_it() -> None:
    metrics = OperatorMetrics()
    metrics.target_state("shop", "cache", TargetStatus(phase=Phase.SEARCHING))
    metrics.decision_events(
        "shop", "cache", [Event("Warning", EventReason.SPEND_LIMIT_REACHED, "no room")]
    )
    metrics.abandoned_usd("shop", "cache", "small", 0.01)
    metrics.forget_target("shop", "cache")
    exposed = generate_latest(metrics.registry).decode()
    assert 'target="cache"' not in exposed
    metrics.target_state("shop", "cache", TargetStatus(phase=Phase.PROFILING))  # made again
    assert _value(metrics, "retune_rollouts_total", outcome="Promoted") == 0


def test_every_event_an_alert_counts_starts_at_zero() -> None:
    """An alert on increase() of Events sees the first one only if its series started at 0."""
    counted = re.findall(r'increase\(retune_events_total\{reason=~"([^"]+)"', RULES.read_text())
    assert counted, "no alert counts Events: this check has nothing to check"
    reasons = {reason for found in counted for reason in found.split("|")}
    assert reasons <= set(ALERTED_EVENTS) <= set(COUNTED_EVENTS)


def test_every_warning_starts_at_zero_so_the_dashboard_counts_its_first() -> None:
    metrics = OperatorMetrics()
    metrics.target_state("shop", "cache", TargetStatus(phase=Phase.PROFILING))
    for reason in WARNINGS:
        assert _value(metrics, "retune_events_total", type="Warning", reason=reason) == 0
    assert _value(metrics, "retune_events_total", type="Normal", reason="SearchStarted") is None
