"""The Prometheus backend's mapping of answers and HTTP failures to outcomes.

A small stdlib HTTP server stands in for Prometheus, to produce the failures a real
server will not produce on demand (401, 404, 503, HTML from a proxy, a hung answer). The
real server is exercised in test_signals_prometheus.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from retune.signals import BadQuery, Invalid, NoData, Unavailable, Value
from retune.signals.prometheus import PrometheusProvider, reduce_result


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    delay: float = 0.0


@dataclass
class FakePrometheus:
    url: str
    reply: Reply = field(default_factory=Reply)
    requests: list[tuple[dict[str, list[str]], dict[str, str]]] = field(default_factory=list)


def vector(*values: str) -> str:
    result = [
        {"metric": {"pod": f"p{i}"}, "value": [1700000000.0, v]} for i, v in enumerate(values)
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


def error(status: str, error_type: str, message: str) -> str:
    return json.dumps({"status": status, "errorType": error_type, "error": message})


@pytest.fixture
def fake() -> Iterator[FakePrometheus]:
    state = FakePrometheus(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(
                (parse_qs(urlparse(self.path).query), {k: v for k, v in self.headers.items()})
            )
            reply = state.reply
            time.sleep(reply.delay)
            body = reply.body.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


# -- reducing a result to one number ----------------------------------------------------------


def test_one_series_is_a_value() -> None:
    assert reduce_result([{"metric": {}, "value": [1.0, "42.5"]}]) == Value(42.5)


def test_a_scalar_is_a_value_and_a_nan_scalar_is_invalid() -> None:
    assert reduce_result([1.0, "7"]) == Value(7.0)
    nan = reduce_result([1.0, "NaN"])
    assert isinstance(nan, Invalid) and "NaN" in nan.reason


def test_an_empty_result_is_no_data() -> None:
    assert isinstance(reduce_result([]), NoData)


def test_several_series_are_invalid_and_named() -> None:
    result = [{"metric": {"pod": f"p{i}"}, "value": [1.0, "1"]} for i in range(5)]
    sample = reduce_result(result)
    assert isinstance(sample, Invalid)
    assert "5 series" in sample.reason
    assert '{pod="p0"}' in sample.reason and ", ..." in sample.reason
    assert "sum(" in sample.reason


def test_a_range_vector_a_string_and_garbage_are_invalid() -> None:
    assert isinstance(reduce_result([{"metric": {}, "values": [[1.0, "1"]]}]), Invalid)
    assert isinstance(reduce_result([1.0, "hello"]), Invalid)
    assert isinstance(reduce_result({"unexpected": True}), Invalid)
    assert isinstance(reduce_result([{"metric": {}, "value": "1"}]), Invalid)
    assert isinstance(reduce_result([1.0, "1", "2"]), Invalid)


# -- HTTP ---------------------------------------------------------------------------------------


def test_a_successful_query_sends_the_query_and_its_timeout(fake: FakePrometheus) -> None:
    fake.reply = Reply(body=vector("3"))
    assert PrometheusProvider(fake.url, timeout=4).query("sum(up)") == Value(3.0)
    params, _ = fake.requests[0]
    assert params["query"] == ["sum(up)"]
    assert params["timeout"] == ["4"]  # seconds; Prometheus also parses fractions


def test_several_series_over_http_are_invalid(fake: FakePrometheus) -> None:
    fake.reply = Reply(body=vector("1", "2"))
    assert isinstance(PrometheusProvider(fake.url).query("up"), Invalid)


@pytest.mark.parametrize("status", [400, 422])
def test_a_rejected_query_is_a_bad_query(fake: FakePrometheus, status: int) -> None:
    fake.reply = Reply(status, error("error", "bad_data", "1:5: parse error: unclosed paren"))
    sample = PrometheusProvider(fake.url).query("sum(")
    assert isinstance(sample, BadQuery)
    assert "parse error: unclosed paren" in sample.reason
    assert "bad_data" in sample.reason


def test_a_server_error_is_retried_then_unavailable(fake: FakePrometheus) -> None:
    fake.reply = Reply(503, error("error", "timeout", "query timed out in expression evaluation"))
    sample = PrometheusProvider(fake.url, retries=1).query("up")
    assert isinstance(sample, Unavailable)
    assert "timed out in Prometheus" in sample.reason
    assert len(fake.requests) == 2


def test_a_500_is_unavailable_without_retry(fake: FakePrometheus) -> None:
    fake.reply = Reply(500, "internal error")
    sample = PrometheusProvider(fake.url).query("up")
    assert isinstance(sample, Unavailable)
    assert "HTTP 500: internal error" in sample.reason
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "hint"), [(401, "credentials"), (403, "credentials"), (404, "check the URL")]
)
def test_auth_and_path_errors_are_unavailable_with_a_hint(
    fake: FakePrometheus, status: int, hint: str
) -> None:
    fake.reply = Reply(status, "nope")
    sample = PrometheusProvider(fake.url).query("up")
    assert isinstance(sample, Unavailable)
    assert hint in sample.reason


def test_a_non_prometheus_answer_is_unavailable(fake: FakePrometheus) -> None:
    fake.reply = Reply(200, "<html>login</html>")
    sample = PrometheusProvider(fake.url).query("up")
    assert isinstance(sample, Unavailable)
    assert "Prometheus API" in sample.reason


def test_a_hung_server_times_out(fake: FakePrometheus) -> None:
    fake.reply = Reply(body=vector("1"), delay=2.0)
    started = time.monotonic()
    sample = PrometheusProvider(fake.url, timeout=0.3, retries=3).query("up")
    assert isinstance(sample, Unavailable)
    assert "within 0.3s" in sample.reason
    assert time.monotonic() - started < 1.5  # a read timeout is not retried


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sample = PrometheusProvider(f"http://127.0.0.1:{port}", retries=0).query("up")
    assert isinstance(sample, Unavailable)
    assert "connection refused" in sample.reason


def test_tls_failure_is_unavailable(fake: FakePrometheus) -> None:
    fake.reply = Reply(body=vector("1"))
    url = fake.url.replace("http://", "https://")
    sample = PrometheusProvider(url, retries=0, timeout=2).query("up")
    assert isinstance(sample, Unavailable)
    assert "TLS" in sample.reason


def test_bearer_token_and_headers_are_sent(fake: FakePrometheus) -> None:
    fake.reply = Reply(body=vector("1"))
    PrometheusProvider(fake.url, bearer_token="s3cret", headers={"X-Scope-OrgID": "team-a"}).query(
        "up"
    )
    _, headers = fake.requests[0]
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Scope-OrgID"] == "team-a"


def test_the_token_file_is_reread_on_every_query(fake: FakePrometheus, tmp_path: Path) -> None:
    fake.reply = Reply(body=vector("1"))
    token = tmp_path / "token"
    token.write_text("first\n")
    provider = PrometheusProvider(fake.url, bearer_token_file=token)
    provider.query("up")
    token.write_text("rotated")
    provider.query("up")
    assert [h["Authorization"] for _, h in fake.requests] == ["Bearer first", "Bearer rotated"]
    token.unlink()
    sample = provider.query("up")
    assert isinstance(sample, Unavailable) and "token file" in sample.reason


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        PrometheusProvider("http://x", timeout=0)
    with pytest.raises(ValueError, match="not both"):
        PrometheusProvider("http://x", bearer_token="a", bearer_token_file="/t")
