"""Test helper: a proxy in front of the stand-in model server that bills like a provider
and fails in the ways that cost money.

The stand-in's own faults (429, 5xx, stall, drop, malformed, truncate...) pass through.
The proxy adds the faults where an answer is served, and billed, but does not reach the
client as it should:

* ``absurd`` -- the usage block reports ten million prompt tokens (and that is billed);
* ``late`` -- the answer is sent after ``late_seconds`` (past the client's timeout);
* ``cut`` -- the body is cut off halfway and the connection closed.

Every answer that carries a ``usage`` block is recorded in :attr:`FaultProxy.served`
with the ``X-Retune-Call`` header it came with: what a provider would bill, per call.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ABSURD_PROMPT_TOKENS = 10_000_000


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, faults: dict[str, float], late_seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream.rstrip("/").removesuffix("/v1")  # requests carry /v1/...
        self.faults = faults
        self.late_seconds = late_seconds
        self.served: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()

    def pick(self, body: bytes) -> str | None:
        """A fault for this request, drawn from its content (so a replay draws the same)."""
        draw = int.from_bytes(hashlib.sha256(b"proxy:" + body).digest()[:8], "big") / 2**64
        cumulative = 0.0
        for kind, probability in sorted(self.faults.items()):
            cumulative += probability
            if draw < cumulative:
                return kind
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = urllib.request.Request(
            self.server.upstream + self.path,
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, answer = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, answer = error.code, error.read()
        except OSError:  # the stand-in dropped the connection: so do we
            self.close_connection = True
            return
        payload = _json(answer)
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if status != 200 or not isinstance(usage, dict):
            self._send(status, answer)
            return
        fault = self.server.pick(body)
        if fault == "absurd":
            usage["prompt_tokens"] = ABSURD_PROMPT_TOKENS
            answer = json.dumps(payload).encode()
        with self.server.lock:
            self.server.served.append(
                {
                    "call": self.headers.get("X-Retune-Call", ""),
                    "model": json.loads(body)["model"],
                    "prompt_tokens": int(usage["prompt_tokens"]),
                    "completion_tokens": int(usage["completion_tokens"]),
                    "fault": fault,
                }
            )
        if fault == "late":
            time.sleep(self.server.late_seconds)
        if fault == "cut":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(200, answer)

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (a late answer)
            self.close_connection = True


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
