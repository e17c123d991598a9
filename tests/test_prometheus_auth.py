"""The operator's Prometheus credentials: read from its environment (the chart's), sent to
its own Prometheus only."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from retune.handlers.gather import metrics_provider, operator_auth
from retune.handlers.prometheus_auth import PrometheusAuth, PrometheusAuthError
from retune.signals.metrics import Value
from retune.spec import OptimizationTarget
from tests.test_spec import MINIMAL_CLUSTER


class _Prometheus(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        body = {"status": "success", "data": {"resultType": "vector", "result": []}}
        body["data"]["result"] = [{"metric": {}, "value": [0, "1"]}]  # type: ignore[index]
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    _Prometheus.seen = []
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _target(own_url: str | None = None) -> OptimizationTarget:
    body = yaml.safe_load(MINIMAL_CLUSTER)
    if own_url is not None:
        body["spec"]["profile"] = {"prometheusUrl": own_url}
    return OptimizationTarget.model_validate(body)


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    monkeypatch.setenv("RETUNE_PROMETHEUS_BEARER_TOKEN_FILE", str(token))
    monkeypatch.setenv("RETUNE_PROMETHEUS_HEADERS", '{"X-Team": "storage"}')
    monkeypatch.setenv("RETUNE_PROMETHEUS_TENANT", "team-a")


def test_the_environment_becomes_credentials() -> None:
    auth = PrometheusAuth.from_env(
        {
            "RETUNE_PROMETHEUS_BEARER_TOKEN_FILE": "/var/run/retune/prometheus/token",
            "RETUNE_PROMETHEUS_CA_FILE": "/var/run/retune/prometheus-ca/ca.crt",
            "RETUNE_PROMETHEUS_HEADERS": '{"X-Team": "storage"}',
            "RETUNE_PROMETHEUS_TENANT": "team-a",
        }
    )
    assert auth.bearer_token_file == "/var/run/retune/prometheus/token"
    assert auth.ca_file == "/var/run/retune/prometheus-ca/ca.crt"
    assert auth.headers == {"X-Team": "storage", "X-Scope-OrgID": "team-a"}
    assert PrometheusAuth.from_env({}) == PrometheusAuth()


@pytest.mark.parametrize("headers", ["X-Team: a", '["a"]', '{"X-Team": 1}'])
def test_malformed_headers_are_refused_with_an_example(headers: str) -> None:
    with pytest.raises(PrometheusAuthError, match="RETUNE_PROMETHEUS_HEADERS"):
        PrometheusAuth.from_env({"RETUNE_PROMETHEUS_HEADERS": headers})


def test_the_operators_prometheus_gets_the_token_tenant_and_headers(
    prometheus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(tmp_path, monkeypatch)
    provider = metrics_provider(_target(), prometheus)
    assert provider.query("up") == Value(1.0)
    provider.close()
    (headers,) = _Prometheus.seen
    assert headers["Authorization"] == "Bearer s3cret"
    assert (headers["X-Scope-OrgID"], headers["X-Team"]) == ("team-a", "storage")


def test_a_target_with_its_own_prometheus_never_gets_the_operators_token(
    prometheus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(tmp_path, monkeypatch)
    target = _target(own_url=prometheus)
    assert operator_auth(target) is None
    provider = metrics_provider(target, "http://prometheus.monitoring:9090")
    assert provider.query("up") == Value(1.0)
    provider.close()
    (headers,) = _Prometheus.seen
    assert "Authorization" not in headers and "X-Scope-OrgID" not in headers
