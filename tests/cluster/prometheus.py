"""A real Prometheus server (Debian's ``prometheus``), for the test suite.

It listens on every address of the host, so that pods on the real node reach it at the
bridge's gateway (:attr:`PrometheusServer.pod_url`); tests use loopback (``url``).
The server scrapes static targets that tests register (typically a ``MetricsExporter``
from ``tests.cluster.exporter``) every second. Targets are changed by rewriting the
config file and POSTing ``/-/reload`` (the server runs with ``--web.enable-lifecycle``).
Tests can stop and start the server to see how code behaves while Prometheus is down;
its data directory survives a restart.
"""

from __future__ import annotations

import json
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.node import HOST_FROM_PODS
from tests.cluster.processes import ManagedProcess, wait_until

SCRAPE_INTERVAL = "1s"
STARTUP_TIMEOUT = 30.0
INSTALL_HINT = "run 'tests/cluster/install-prometheus' as root (or apt-get install prometheus)"


class PrometheusMissing(RuntimeError):
    """No prometheus binary; the message says how to install one."""


def find_prometheus() -> Path:
    path = shutil.which("prometheus")
    if path is None:
        raise PrometheusMissing(f"prometheus is not installed: {INSTALL_HINT}")
    return Path(path)


class PrometheusServer:
    """One Prometheus process with a config file that tests edit through this object."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.pod_url = f"http://{HOST_FROM_PODS}:{self.port}"
        """Where pods on the real node reach this server."""
        self.rules_dir = workdir / "rules"
        self._jobs: dict[str, dict[str, Any]] = {}
        self._process: ManagedProcess | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    def start(self) -> None:
        """Start the server (again, after ``stop``) and wait until it is ready."""
        if self.running:
            return
        self._write_config()
        self._process = ManagedProcess(
            "prometheus",
            [
                str(self.binary),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=0.0.0.0:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2h",
            ],
            self.workdir / "prometheus.log",
        )
        self._process.start()
        process = self._process

        def died() -> str | None:
            return None if process.running else process.describe_exit()

        wait_until(
            lambda: self._get("/-/ready", parse=False),
            STARTUP_TIMEOUT,
            "prometheus to be ready",
            abort=died,
        )

    def stop(self) -> None:
        """Stop the server; queries fail with connection refused until ``start``."""
        if self._process is not None:
            self._process.stop(timeout=10)
            self._process = None

    # -- scrape targets ------------------------------------------------------------------
    def add_target(
        self,
        job: str,
        address: str,
        labels: dict[str, str] | None = None,
        metrics_path: str = "/metrics",
    ) -> None:
        """Scrape ``address`` (host:port) under ``job`` from now on; waits for the reload."""
        entry = self._jobs.setdefault(
            job, {"job_name": job, "metrics_path": metrics_path, "static_configs": []}
        )
        entry["static_configs"].append({"targets": [address], "labels": dict(labels or {})})
        self._apply()

    def add_job(self, job: str, scrape_config: dict[str, Any]) -> None:
        """A whole scrape config (service discovery, relabelling) under ``job``."""
        self._jobs[job] = {**scrape_config, "job_name": job}
        self._apply()

    def remove_job(self, job: str) -> None:
        if self._jobs.pop(job, None) is not None:
            self._apply()

    def clear_targets(self) -> None:
        if self._jobs:
            self._jobs.clear()
            self._apply()

    # -- rules --------------------------------------------------------------------------
    def set_rules(self, name: str, groups: list[dict[str, Any]]) -> None:
        """Load a rule file (``groups`` as in a PrometheusRule's spec) under ``name``;
        evaluated every second; waits for the reload, which fails on a rule it refuses."""
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.rules_dir / f"{name}.tmp"
        temporary.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        temporary.replace(self.rules_dir / f"{name}.yml")
        self._apply()

    def remove_rules(self, name: str) -> None:
        (self.rules_dir / f"{name}.yml").unlink(missing_ok=True)
        self._apply()

    def alerts(self) -> list[dict[str, Any]]:
        """The active alerts (pending or firing): each with ``labels`` and ``state``."""
        return list(self._get("/api/v1/alerts")["data"]["alerts"])

    def _write_config(self) -> None:
        settings = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                       "evaluation_interval": SCRAPE_INTERVAL},
            "rule_files": [str(self.rules_dir / "*.yml")],
            "scrape_configs": list(self._jobs.values()),
        }  # fmt: skip
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump(settings, sort_keys=False))
        temporary.replace(self.config_path)

    def _apply(self) -> None:
        self._write_config()
        if not self.running:
            return  # read at the next start
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as error:
            raise RuntimeError(
                f"prometheus rejected its new config: {error.read().decode(errors='replace')}"
            ) from None

    # -- queries -------------------------------------------------------------------------
    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; returns the result vector (empty when there is no data)."""
        payload = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if payload.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {payload.get('error')}")
        data = payload["data"]
        return (
            list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data["result"]]
        )

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """A range query, as a dashboard panel sends it: the result matrix."""
        params = {"query": promql, "start": start, "end": end, "step": step}
        payload = self._get("/api/v1/query_range?" + urllib.parse.urlencode(params))
        if payload.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {payload.get('error')}")
        return list(payload["data"]["result"])

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        """Values of ``label`` on the series ``match`` selects (Grafana's ``label_values``)."""
        params = {"match[]": match, "start": start, "end": end}
        path = f"/api/v1/label/{label}/values?" + urllib.parse.urlencode(params)
        return list(self._get(path)["data"])

    def wait_for_query(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``promql`` returns data, and return it."""
        return wait_until(
            lambda: self.query(promql), timeout, f"data for {promql!r}", interval=0.25
        )  # type: ignore[return-value]

    def targets_up(self) -> dict[str, str]:
        """scrapeUrl -> health (up/down/unknown) of the active targets."""
        payload = self._get("/api/v1/targets")
        return {t["scrapeUrl"]: t["health"] for t in payload["data"]["activeTargets"]}

    def _get(self, path: str, parse: bool = True) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            if not parse:
                raise
            body = error.read()  # the API's {"status": "error", "error": ...}: says what was wrong
            return json.loads(body)
        return json.loads(body) if parse else response.status == 200

    # -- diagnostics ---------------------------------------------------------------------
    def diagnostics(self, lines: int = 15) -> str:
        log = self.workdir / "prometheus.log"
        state = "running" if self.running else "stopped"
        tail = (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )
        return f"prometheus at {self.url} ({state}); config {self.config_path}; log {log}:\n{tail}"
