"""The chart's monitoring bundle and its peers' conventions, rendered by the real helm.

Needs only helm (the pinned test binaries) and promtool (Debian's prometheus), not the
control plane: run it alone with ``pytest tests/cluster/test_chart_options.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.helm import find_manifest, find_manifests, render_chart, require_helm

pytestmark = pytest.mark.cluster

MONITORING = {"metrics": {"dashboards": True, "prometheusRule": True}}
TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


@pytest.fixture(scope="module", autouse=True)
def _helm_built() -> None:
    require_helm()


def _pod(values: dict[str, Any] | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = find_manifest(render_chart(values), "Deployment")["spec"]["template"]
    return pod["spec"]


def test_the_monitoring_bundle_is_off_by_default() -> None:
    docs = render_chart()
    assert not find_manifests(docs, "PrometheusRule")
    assert not find_manifests(docs, "ConfigMap")


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar() -> None:
    configmap = find_manifest(render_chart(MONITORING), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["retune.json"])
    assert dashboard["uid"] == "retune-operator"
    assert len(dashboard["panels"]) >= 8
    moved = {"metrics": {"dashboards": True, "dashboardNamespace": "grafana"}}
    assert find_manifest(render_chart(moved), "ConfigMap")["metadata"]["namespace"] == "grafana"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add("".join(c for c in title if c.isalnum() or c in "-_ ").replace(" ", "-"))
    return anchors


def test_every_alert_has_a_summary_and_a_runbook_section(tmp_path: Path) -> None:
    rule = find_manifest(render_chart(MONITORING), "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(alerts) >= 6
    anchors = _anchors(TROUBLESHOOTING.read_text())
    for alert in alerts:
        annotations = alert["annotations"]
        assert annotations["summary"], alert["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page.endswith("docs/troubleshooting.md"), alert["alert"]
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in troubleshooting.md"
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}


def test_promtool_accepts_the_rendered_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make prometheus` installs it", pytrace=False)
    rule = find_manifest(render_chart(MONITORING), "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    # The check can fail: a rule with broken PromQL is refused.
    broken = rule["spec"]
    broken["groups"][0]["rules"][0]["expr"] = "sum(retune_build_info"
    rules.write_text(yaml.safe_dump(broken))
    refused = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True)
    assert refused.returncode != 0


def test_security_contexts_stay_restricted_by_default_and_can_be_overridden() -> None:
    pod = _pod()
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # OpenShift's restricted SCC picks the uid itself: null removes the chart's.
    openshift = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
    pod = _pod(openshift)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_extra_env_volumes_and_pull_secrets_reach_the_pod() -> None:
    values = {
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca"}],
        "imagePullSecrets": [{"name": "regcred"}],
    }
    pod = _pod(values)
    (container,) = pod["containers"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert {"name": "ca", "mountPath": "/etc/corp-ca"} in container["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_prometheus_credentials_come_from_secrets_as_files() -> None:
    values = {
        "prometheus": {
            "url": "https://mimir.monitoring:8080/prometheus",
            "bearerTokenSecret": {"name": "prom-token", "key": "token"},
            "caSecret": {"name": "prom-ca", "key": "ca.crt"},
            "tenant": "team-a",
            "headers": {"X-Team": "storage"},
        }
    }
    pod = _pod(values)
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    token = env["RETUNE_PROMETHEUS_BEARER_TOKEN_FILE"]
    assert token is not None and env["RETUNE_PROMETHEUS_CA_FILE"] is not None
    assert env["RETUNE_PROMETHEUS_TENANT"] == "team-a"
    assert json.loads(env["RETUNE_PROMETHEUS_HEADERS"] or "") == {"X-Team": "storage"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert token == f"{mounts['prometheus-token']}/token"
    assert volumes["prometheus-token"]["secret"]["secretName"] == "prom-token"
    assert volumes["prometheus-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert "RETUNE_PROMETHEUS_TENANT" not in str(_pod())


@pytest.mark.parametrize(
    ("budget", "spec"),
    [
        ({"enabled": True}, {"maxUnavailable": 1}),
        ({"enabled": True, "minAvailable": 1}, {"minAvailable": 1}),
    ],
)
def test_a_pod_disruption_budget_when_asked(budget: dict[str, Any], spec: dict[str, Any]) -> None:
    assert not find_manifests(render_chart(), "PodDisruptionBudget")
    pdb = find_manifest(render_chart({"podDisruptionBudget": budget}), "PodDisruptionBudget")
    selector = pdb["spec"].pop("selector")
    assert pdb["spec"] == spec
    deployment = find_manifest(render_chart(), "Deployment")
    assert selector == deployment["spec"]["selector"]
