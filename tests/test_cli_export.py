"""``retune export NAME``: a recommended revision, its evidence and diff, written as files.

The cluster is a stub at the client boundary (:class:`retune.handlers.export.ClusterReads`);
the end-to-end path runs in tests/e2e/test_approval.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from retune import cli
from retune.handlers import export
from tests.test_spec import MINIMAL_CLUSTER

SEED = "def route(request, *, alpha, depth):\n    return 'a'\n"
STABLE = "def route(request, *, alpha, depth):\n    return 'b'\n"
WINNER = "def route(request, *, alpha, depth):\n    return 'b' if alpha > 0.5 else 'c'\n"


class StubCluster:
    """The target and ConfigMaps of namespace ``shop``; records what was read."""

    def __init__(self, status: dict[str, Any] | None) -> None:
        body = yaml.safe_load(MINIMAL_CLUSTER)
        body["metadata"].update(uid="1234", generation=2)
        if status is not None:
            body["status"] = status
        self.body: dict[str, Any] | None = body
        self.config_maps: dict[str, dict[str, Any]] = {
            "router-seed": {"data": {"policy.py": SEED}},
            "router-policy-stable": {"data": {"policy.py": STABLE}},
            "router-policy-winner": {
                "metadata": {"annotations": {"retune.dev/validated-at": "2026-12-01T00:00:00Z"}},
                "data": {"policy.py": WINNER},
            },
        }
        self.reads: list[str] = []

    def target(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"target {namespace}/{name}")
        return self.body if (namespace, name) == ("shop", "router") else None

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"configmap {namespace}/{name}")
        return self.config_maps.get(name) if namespace == "shop" else None


RECOMMENDED = {
    "phase": "Stable",
    "stableRevision": "router-policy-stable",
    "profile": {"rps": 120.0},
    "hardwareFingerprint": "hw-abc",
    "approval": {
        "mode": "recommend",
        "state": "Recommended",
        "revision": "router-policy-winner",
        "stableRevision": "router-policy-stable",
        "candidate": "c7",
        "candidateScore": 0.53,
        "stableScore": 0.47,
        "improvement": 0.1277,
        "subscores": {"scan": {"candidate": 0.41, "stable": 0.30}},
    },
}


def run(stub: StubCluster, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setattr(export, "open_cluster", lambda kubeconfig: stub)
    return cli.main(["export", *argv])


def test_export_writes_the_policy_the_evidence_and_the_diff_against_the_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = StubCluster(RECOMMENDED)
    out = tmp_path / "gitops" / "router"
    assert run(stub, monkeypatch, "router", "-n", "shop", "--output", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["evidence.json", "policy.diff", "policy.py"]
    assert (out / "policy.py").read_text() == WINNER
    evidence = json.loads((out / "evidence.json").read_text())
    assert evidence["revision"] == "router-policy-winner"
    assert evidence["stableRevision"] == "router-policy-stable"
    assert evidence["approval"]["state"] == "Recommended"
    assert evidence["approval"]["subscores"] == {"scan": {"candidate": 0.41, "stable": 0.30}}
    assert evidence["approval"]["candidateScore"] == 0.53
    assert evidence["revisionAnnotations"]["retune.dev/validated-at"].startswith("2026-12-01")
    assert evidence["profile"] == {"rps": 120.0}
    diff = (out / "policy.diff").read_text()
    assert "--- router-policy-stable/policy.py" in diff
    assert "+++ router-policy-winner/policy.py" in diff
    assert "-    return 'b'\n" in diff and "+    return 'b' if alpha > 0.5 else 'c'\n" in diff
    assert str(out / "policy.py") in capsys.readouterr().out
    assert not any(read.startswith("configmap shop/router-seed") for read in stub.reads)


def test_without_a_stable_revision_the_diff_is_against_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = {key: value for key, value in RECOMMENDED.items() if key != "stableRevision"}
    stub = StubCluster(status)
    assert run(stub, monkeypatch, "router", "-n", "shop", "--output", str(tmp_path)) == 0
    diff = (tmp_path / "policy.diff").read_text()
    assert "--- seed/policy.py" in diff and "-    return 'a'\n" in diff


def test_the_default_directory_is_named_by_target_and_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(StubCluster(RECOMMENDED), monkeypatch, "router", "-n", "shop") == 0
    assert (tmp_path / "router-router-policy-winner" / "policy.py").read_text() == WINNER


@pytest.mark.parametrize(
    ("status", "name", "message"),
    [
        (RECOMMENDED, "missing", "OptimizationTarget shop/missing not found"),
        ({"phase": "Searching"}, "router", "has no validated revision to export"),
        (
            {**RECOMMENDED, "approval": {**RECOMMENDED["approval"], "revision": "router-gone"}},
            "router",
            "the revision router-gone (ConfigMap in shop) is gone",
        ),
    ],
)
def test_what_cannot_be_exported_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: dict[str, Any],
    name: str,
    message: str,
) -> None:
    code = run(StubCluster(status), monkeypatch, name, "-n", "shop", "--output", str(tmp_path))
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
