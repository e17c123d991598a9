"""``kubectl retune`` with an API double: what it prints and which annotations it sets (the
same commands run against the real control plane in tests/cluster/test_kubectl_plugin.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from retune.kubectl import PluginError, _parser, run
from retune.rollout import PAUSE_ANNOTATION, UNDO_ANNOTATION
from tests.cluster.test_kubectl_plugin import CANARY_STATUS, NOW


class FakeTargets:
    def __init__(self, status: dict[str, Any]) -> None:
        self.body: dict[str, Any] = {"metadata": {"name": "router"}, "status": status}
        self.written: list[dict[str, str | None]] = []

    def target(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body if name == "router" else None

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [{"type": "Normal", "reason": "CanaryStep", "message": "at 50%",
                 "lastTimestamp": "2020-01-01T00:00:00Z"}]  # fmt: skip

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        self.written.append(dict(annotations))


def call(api: FakeTargets, *argv: str) -> str:
    return run(api, _parser().parse_args([*argv, "router"]), "shop", NOW)


def test_status_and_history_read_the_status() -> None:
    api = FakeTargets(CANARY_STATUS)
    out = call(api, "status")
    assert out.startswith("OptimizationTarget shop/router: Canary, Ready False (RollingOut)")
    assert "Rollout     router-policy-bbbb: step 2 at 50%" in out
    assert out.rstrip().endswith("Normal  CanaryStep           at 50%")
    history = call(api, "history").splitlines()
    assert history[1].split()[:3] == ["1", "router-policy-aaaa", "(stable)"]
    assert history[2].endswith("  error-rate 0.2 above 0.05")


def test_controls_write_annotations_or_say_why_not() -> None:
    api = FakeTargets(CANARY_STATUS)
    assert call(api, "pause") == f"shop/router: {PAUSE_ANNOTATION}=true set\n"
    assert call(api, "resume") == f"shop/router: {PAUSE_ANNOTATION} removed\n"
    assert api.written == [{PAUSE_ANNOTATION: "true"}, {PAUSE_ANNOTATION: None}]
    with pytest.raises(PluginError, match="no earlier promoted revision"):
        call(api, "undo")
    later = {"revision": "router-policy-bbbb", "outcome": "Promoted", "score": 0.53}
    api.body["status"] = {**CANARY_STATUS, "stableRevision": "router-policy-bbbb",
                          "history": [*CANARY_STATUS["history"], later]}  # fmt: skip
    out = call(api, "undo")
    assert out.startswith(f"shop/router: {UNDO_ANNOTATION}=router-policy-aaaa set; it goes out")
    with pytest.raises(PluginError, match="not found"):
        run(api, _parser().parse_args(["status", "other"]), "shop", datetime.now(UTC))


def test_status_shows_what_all_searches_spent_and_the_allowance() -> None:
    status = {
        "phase": "Searching",
        "ledger": {"usd": 0.05},
        "spend": {"totalUsd": 0.35, "searches": [{"at": "2019-12-30T00:00:00Z", "usd": 0.3}]},
        "search": {"startedAt": "2019-12-31T23:00:00Z", "usdAllowance": 0.2},
    }
    out = call(FakeTargets(status), "status")
    assert "Spend       $0.3500 by all searches; this search may spend $0.2000" in out
    assert "Spend" not in call(FakeTargets({"phase": "Searching"}), "status")
