"""``kubectl retune`` against the real control plane: a target in the middle of a canary,
read and steered with the plugin as a person would, through a kubeconfig.

No operator runs here: the status is written as the operator would have written it, and
the controls are checked by the annotations they leave, which the operator's own tests
(``tests/test_controller_rollout.py``, ``tests/test_controller_approval.py``) take from
there.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from retune import kubectl
from retune.rollout import (
    ABORT_ANNOTATION,
    APPROVE_ANNOTATION,
    PAUSE_ANNOTATION,
    PROMOTE_ANNOTATION,
    RETUNE_ANNOTATION,
    UNDO_ANNOTATION,
)
from retune.spec import parse_target
from tests.cluster.controlplane import ControlPlane
from tests.test_spec import MINIMAL_CLUSTER

pytestmark = pytest.mark.cluster

COORDINATES = ("retune.dev", "v1alpha1")
NOW = datetime.now(UTC).replace(microsecond=0)


def stamp(minutes_ago: float, now: datetime = NOW) -> str:
    return (now - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")


# What the operator writes for a target whose second revision is at its second canary step.
CANARY_STATUS: dict[str, Any] = {
    "phase": "Canary",
    "bestScore": 0.5312,
    "seedScore": 0.46,
    "bestCandidate": "c7",
    "stableScore": 0.47,
    "stableRevision": "router-policy-aaaa",
    "canaryRevision": "router-policy-bbbb",
    "hardwareFingerprint": "hw-abc",
    "ledger": {
        "evaluations": 24,
        "failedEvaluations": 1,
        "wallSeconds": 96.0,
        "usd": 0.0123,
        "models": {"cheap": {"calls": 9, "failedCalls": 2, "rests": 1, "promptTokens": 9000, "completionTokens": 3000, "usd": 0.0123}},
    },
    "spend": {"totalUsd": 0.0523, "searches": [{"at": stamp(3000), "usd": 0.04}]},
    "search": {"startedAt": stamp(30), "finishedAt": stamp(5), "usdAllowance": 0.06},
    "validation": {
        "candidate": "c7",
        "passed": True,
        "candidateScore": 0.53,
        "stableScore": 0.47,
        "improvement": 0.1277,
    },
    "rollout": {
        "revision": "router-policy-bbbb",
        "step": 1,
        "share": 50,
        "analysis": {"error-rate": 0.004, "latency-p99": None},
        "verdicts": {"error-rate": "pass", "latency-p99": "nodata"},
        "stableAnalysis": {"error-rate": 0.005},
        "noDataIntervals": 1,
        "message": "analysis passed; waiting 60s",
    },
    "conditions": [
        {"type": "Ready", "status": "False", "reason": "RollingOut",
         "message": "rolling router-policy-bbbb out: step 2 at 50%", "lastTransitionTime": stamp(3)},
        {"type": "Searching", "status": "False", "reason": "Finished",
         "message": "evaluation budget reached", "lastTransitionTime": stamp(5)},
        {"type": "CanaryProgressing", "status": "True", "reason": "CanaryStep",
         "message": "step 2 at 50%", "lastTransitionTime": stamp(3)},
    ],
    "history": [
        {"revision": "router-policy-aaaa", "outcome": "Promoted", "score": 0.47,
         "finishedAt": stamp(120), "reason": "every step passed its analysis"},
        {"revision": "router-policy-9999", "outcome": "RolledBack", "score": 0.5,
         "finishedAt": stamp(60), "reason": "error-rate 0.2 above 0.05"},
    ],
}  # fmt: skip


class Shell:
    """A person with a kubeconfig, and the target ``router`` in their namespace."""

    def __init__(self, cluster: ControlPlane, namespace: str) -> None:
        self.namespace = namespace
        self.kubeconfig = str(cluster.kubeconfig)
        api = cluster.api()
        self.custom: Any = client.CustomObjectsApi(api)
        core: Any = client.CoreV1Api(api)
        target = parse_target(yaml.safe_load(MINIMAL_CLUSTER), "test").to_dict()
        target["metadata"] = {"name": "router"}
        target["spec"]["retune"] = {"spendLimit": {"maxUsd": 0.1, "window": "168h"}}
        self.custom.create_namespaced_custom_object(*COORDINATES, namespace, "optimizationtargets", target)  # fmt: skip
        self.set_status(CANARY_STATUS)
        # (stamped now, not at import: the control plane may take a minute to start, and
        # the status prints each Event's age)
        now = datetime.now(UTC).replace(microsecond=0)
        for minutes, reason, message in (
            (5, "SearchFinished", "evaluation budget reached: 24 evaluations"),
            (3, "CanaryStep", "canary of router-policy-bbbb at 50%"),
        ):
            core.create_namespaced_event(namespace, {
                "metadata": {"name": f"router.{reason.lower()}"},
                "involvedObject": {"apiVersion": "retune.dev/v1alpha1", "kind": "OptimizationTarget",
                                   "name": "router", "namespace": namespace},
                "reason": reason, "message": message, "type": "Normal",
                "lastTimestamp": stamp(minutes, now), "firstTimestamp": stamp(minutes, now),
                "source": {"component": "retune-operator"},
            })  # fmt: skip

    def set_status(self, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            *COORDINATES, self.namespace, "optimizationtargets", "router",
            [{"op": "add", "path": "/status", "value": status}],
            _content_type="application/json-patch+json",
        )  # fmt: skip

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        code = kubectl.main(
            [*argv, "router", "-n", self.namespace, "--kubeconfig", self.kubeconfig]
        )
        out, err = capsys.readouterr()
        return code, out, err

    def annotations(self) -> dict[str, str]:
        body = self.custom.get_namespaced_custom_object(
            *COORDINATES, self.namespace, "optimizationtargets", "router"
        )
        return cast(dict[str, str], body["metadata"].get("annotations") or {})


@pytest.fixture
def shell(cluster: ControlPlane, namespace: str) -> Shell:
    return Shell(cluster, namespace)


def test_status_says_what_the_target_does_and_history_what_it_did(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    # When a person asks for the status (through the console script, as kubectl runs it)
    script = Path(sys.executable).with_name("kubectl-retune")
    argv = [
        str(script),
        "status",
        "router",
        "-n",
        shell.namespace,
        "--kubeconfig",
        shell.kubeconfig,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # Then it reads as phase, scores, spend, the rollout step with its analysis, conditions
    # and the Events, oldest first
    assert out.startswith(
        f"OptimizationTarget {shell.namespace}/router: Canary, Ready False (RollingOut)"
    )
    assert "best 0.5312 (c7), seed 0.4600, stable 0.4700 (router-policy-aaaa)" in out
    assert "24 evaluations (1 failed), $0.0123" in out
    assert "cheap: 9 calls (2 without a usable program, rested 1x), 9000 prompt" in out
    # (the spend of all searches and the allowance survive the CRD's schema, and so does
    # the spec's spend limit)
    assert "Spend       $0.0523 by all searches; this search may spend $0.0600" in out
    body = shell.custom.get_namespaced_custom_object(
        *COORDINATES, shell.namespace, "optimizationtargets", "router"
    )
    assert body["spec"]["retune"]["spendLimit"] == {"maxUsd": 0.1, "window": "168h"}
    assert "c7: 0.5300 against the stable's 0.4700 (+12.77%), passed" in out
    assert "router-policy-bbbb: step 2 at 50%, 0 failed analyses, 1 without data" in out
    assert "error-rate: canary 0.004, stable 0.005 pass" in out
    assert "latency-p99: canary no data nodata" in out
    assert "CanaryProgressing" in out and "CanaryStep" in out
    events = out[out.index("Events") :]
    assert events.index("SearchFinished") < events.index("CanaryStep")
    assert "5m  Normal  SearchFinished" in events
    # When it asks for the history, the rollouts are listed oldest first, the stable marked
    code, out, _ = shell.run(capsys, "history")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["REVISION", "OUTCOME", "SCORE", "FINISHED", "REASON"]
    assert lines[1].split()[:5] == ["1", "router-policy-aaaa", "(stable)", "Promoted", "0.4700"]
    assert lines[2].split()[:4] == ["2", "router-policy-9999", "RolledBack", "0.5000"]
    assert lines[2].endswith("error-rate 0.2 above 0.05")


def test_the_controls_set_the_annotations_the_operator_reads(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    for command, key in (
        ("pause", PAUSE_ANNOTATION),
        ("abort", ABORT_ANNOTATION),
        ("promote", PROMOTE_ANNOTATION),
        ("retune", RETUNE_ANNOTATION),
    ):
        code, out, _ = shell.run(capsys, command)
        assert code == 0 and out == f"{shell.namespace}/router: {key}=true set\n"
        assert shell.annotations()[key] == "true"
    code, out, _ = shell.run(capsys, "resume")
    assert code == 0 and PAUSE_ANNOTATION not in shell.annotations()
    # A control the target cannot take now is refused, saying why, and nothing is set
    code, _, err = shell.run(capsys, "approve")
    assert code == 2 and "has no revision waiting for approval (phase Canary)" in err
    assert APPROVE_ANNOTATION not in shell.annotations()
    shell.set_status({**CANARY_STATUS, "phase": "Stable", "rollout": None})
    code, _, err = shell.run(capsys, "abort")
    assert code == 2 and "has no canary in flight (phase Stable)" in err
    # approve names the revision that waits
    shell.set_status({**CANARY_STATUS, "phase": "AwaitingApproval", "rollout": None, "approval": {
        "mode": "manual", "state": "Waiting", "revision": "router-policy-cccc",
        "candidateScore": 0.55, "stableScore": 0.47}})  # fmt: skip
    code, out, _ = shell.run(capsys, "status")
    assert "router-policy-cccc Waiting (manual): 0.5500 against 0.4700" in out
    assert "approve with: kubectl retune approve router" in out
    code, out, _ = shell.run(capsys, "approve")
    assert code == 0 and shell.annotations()[APPROVE_ANNOTATION] == "router-policy-cccc"


def test_undo_names_the_promoted_revision_before_the_stable(
    shell: Shell, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a Stable target whose only promoted revision is the stable one
    shell.set_status({**CANARY_STATUS, "phase": "Stable", "rollout": None})
    code, _, err = shell.run(capsys, "undo")
    assert code == 2 and "no earlier promoted revision to go back to" in err
    # When a second revision was promoted since
    later = {"revision": "router-policy-bbbb", "outcome": "Promoted", "score": 0.53}
    history = [*CANARY_STATUS["history"], later]
    shell.set_status({**CANARY_STATUS, "phase": "Stable", "rollout": None,
                      "stableRevision": "router-policy-bbbb", "history": history})  # fmt: skip
    # Then a revision that was rolled back is refused, by name or by its number
    code, _, err = shell.run(capsys, "undo", "--to-revision", "2")
    assert code == 2 and "router-policy-9999: this target never promoted it" in err
    assert UNDO_ANNOTATION not in shell.annotations()
    # And undo names the one promoted before the stable
    code, out, _ = shell.run(capsys, "undo")
    assert (
        code == 0 and out == f"{shell.namespace}/router: {UNDO_ANNOTATION}=router-policy-aaaa set\n"
    )
    assert shell.annotations()[UNDO_ANNOTATION] == "router-policy-aaaa"


def test_a_missing_target_is_named(shell: Shell, capsys: pytest.CaptureFixture[str]) -> None:
    code = kubectl.main(
        ["status", "nothing", "-n", shell.namespace, "--kubeconfig", shell.kubeconfig]
    )
    assert code == 2
    assert f"OptimizationTarget {shell.namespace}/nothing not found" in capsys.readouterr().err
