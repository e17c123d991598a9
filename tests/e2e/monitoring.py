"""The operator watched as its users watch it: Prometheus scrapes the operator's pod, loads
the chart's alerting rules, and answers the chart's Grafana dashboard's queries.

- :class:`OperatorMonitoring` finds the operator's pods every second (a killed pod's
  successor too) and describes them to Prometheus as its Kubernetes pod discovery would,
  relabelled with :data:`OPERATOR_RELABEL_CONFIGS` (docs/operator.md shows it); it loads the
  PrometheusRule the real helm renders for the release (``metrics.prometheusRule``) as a
  rule file, evaluated every second.
- :func:`dashboard_queries` is each panel's query as Grafana sends it for one namespace and
  target: the dashboard's variables replaced, ``$__rate_interval`` as Grafana computes it.

Grafana itself does not run here (its server is AGPL-licensed, so not one of the test's
binaries); what it adds to a panel's query is its variables, which this module replaces the
way Grafana does, and the panels' queries run on the real Prometheus.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.cluster.controlplane import ControlPlane
from tests.cluster.helm import find_manifest, render_chart
from tests.cluster.prometheus import PrometheusServer
from tests.e2e.operator_pod import RELEASE
from tests.e2e.workload import write_pod_targets

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "retune" / "dashboards" / "retune.json"
JOB = "retune-operator"
RULES = "retune-chart"

OPERATOR_RELABEL_CONFIGS: list[dict[str, Any]] = [
    {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "regex": "retune", "action": "keep"},
    {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "metrics", "action": "keep"},
    {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
]  # fmt: skip
"""How a Prometheus without the Prometheus Operator scrapes the operator through its
Kubernetes pod discovery: the chart's pods, their ``metrics`` port, and the ``namespace``
label the chart's alerts expect (a ServiceMonitor adds it by itself)."""

GRAFANA_SCRAPE_INTERVAL = 15.0
"""Grafana's default for a Prometheus data source's scrape interval, in seconds."""


def rate_interval(step: float, scrape_interval: float = GRAFANA_SCRAPE_INTERVAL) -> str:
    """Grafana's ``$__rate_interval``: the larger of four scrape intervals and the panel's
    interval (its step) plus one scrape interval."""
    return f"{int(max(4 * scrape_interval, step + scrape_interval))}s"


def dashboard_queries(
    namespace: str, target: str = ".*", step: float = 15.0, dashboard: Path = DASHBOARD
) -> list[tuple[str, str]]:
    """(panel title, query) for every query of every panel, for one namespace and a
    target (``.*``: Grafana's "All", the variable's ``allValue``)."""
    panels = json.loads(dashboard.read_text())["panels"]
    values = {
        "namespace": grafana_regex_escape(namespace),
        "target": target,
        "__rate_interval": rate_interval(step),
    }
    return [
        (panel["title"], _substitute(query["expr"], values))
        for panel in panels
        for query in panel.get("targets", [])
    ]


def grafana_regex_escape(value: str) -> str:
    """A variable's value as Grafana's Prometheus data source writes it into a regex
    matcher: regex metacharacters escaped, and the escape escaped for PromQL's string."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda match: "\\\\" + match.group(0), value)


def variable_queries(dashboard: Path = DASHBOARD) -> dict[str, tuple[str, str]]:
    """The dashboard's query variables: name -> (label, series selector) of their
    ``label_values(selector, label)``."""
    variables = json.loads(dashboard.read_text())["templating"]["list"]
    found = {}
    for variable in variables:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), *(\w+)\)", variable["query"]["query"])
        assert match, f"variable {variable['name']}: not a label_values query"
        found[variable["name"]] = (match.group(2), match.group(1))
    return found


def _substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"the dashboard uses ${name}, which the test does not set: {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


class OperatorMonitoring:
    """Prometheus scraping the operator's pods and evaluating the chart's alerts."""

    def __init__(
        self,
        cluster: ControlPlane,
        prometheus: PrometheusServer,
        namespace: str,
        log_dir: Path,
    ) -> None:
        self.cluster, self.prometheus, self.namespace = cluster, prometheus, namespace
        self.sd_file = log_dir / "operator-pods.json"
        self.core = client.CoreV1Api(cluster.api())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="operator-discovery", daemon=True)

    def start(self) -> OperatorMonitoring:
        self._discover()
        self.prometheus.add_job(
            JOB,
            {
                "file_sd_configs": [{"files": [str(self.sd_file)]}],
                "relabel_configs": OPERATOR_RELABEL_CONFIGS,
            },
        )
        self.prometheus.set_rules(RULES, chart_rules(self.namespace))
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.prometheus.remove_job(JOB)
        self.prometheus.remove_rules(RULES)

    def alerts(self, target_namespace: str) -> dict[str, set[str]]:
        """Alert name -> the targets of ``target_namespace`` it is active for (pending or
        firing); the operator's own alerts under the target ``""``."""
        found: dict[str, set[str]] = {}
        for alert in self.prometheus.alerts():
            labels = alert["labels"]
            if labels.get("target_namespace", target_namespace) != target_namespace:
                continue
            found.setdefault(labels["alertname"], set()).add(labels.get("target", ""))
        return found

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._discover()
            except Exception:  # the API server restarting: look again
                time.sleep(0.5)

    def _discover(self) -> None:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        write_pod_targets(self.sd_file, [p for p in pods if not p.metadata.deletion_timestamp])


def chart_rules(namespace: str) -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule the real helm renders for a release in
    ``namespace`` (what the Prometheus Operator would load)."""
    values = {"metrics": {"prometheusRule": True}}
    rule = find_manifest(
        render_chart(values, release=RELEASE, namespace=namespace), "PrometheusRule"
    )
    return list(rule["spec"]["groups"])
