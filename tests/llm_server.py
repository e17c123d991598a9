"""Test helper: the stand-in model server (``bench/mutation_server.py``) as a subprocess.

    with running_mutation_server(seed=7) as server:
        client = OpenAI(base_url=server.base_url, api_key="x")
        ...
        assert ledger_tokens == server.stats()

The server listens on a free loopback port; the helper reads the port from its first line
of output and stops the process on exit.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "bench" / "mutation_server.py"
START_TIMEOUT_SECONDS = 15.0


@dataclass
class MutationServer:
    """A running stand-in server."""

    process: subprocess.Popen[str]
    base_url: str  # the OpenAI base URL, ending in /v1

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, dict[str, int]]:
        """Tokens served per model: ``{model: {"prompt_tokens": n, "completion_tokens": m}}``."""
        result: dict[str, dict[str, int]] = self._request("GET", "/stats")
        return result

    def set_faults(self, spec: str) -> None:
        """Replace the fault spec, e.g. ``"429:#1"`` or ``"500@small:1.0"``."""
        self._request("POST", "/admin/faults", {"faults": spec})

    def reset(self) -> None:
        """Zero the token counts and clear the faults."""
        self._request("POST", "/admin/reset", {})
        self.set_faults("")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _request(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def start_mutation_server(
    *,
    seed: int = 0,
    faults: str = "",
    stall_seconds: float = 30.0,
    retry_after: float = 1.0,
) -> MutationServer:
    """Start the server on a free loopback port; the caller must ``stop()`` it."""
    command = [
        sys.executable,
        str(SERVER_SCRIPT),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--seed",
        str(seed),
        "--faults",
        faults,
        "--stall-seconds",
        str(stall_seconds),
        "--retry-after",
        str(retry_after),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    line = ""
    while not line and time.monotonic() < deadline and process.poll() is None:
        if selector.select(timeout=0.1):
            line = process.stdout.readline()
    selector.close()
    url = next((word for word in line.split() if word.startswith("http://")), None)
    if url is None:
        process.kill()
        process.wait()
        raise RuntimeError(f"the mutation server did not start (said {line!r})")
    return MutationServer(process, url)


@contextmanager
def running_mutation_server(**options: Any) -> Iterator[MutationServer]:
    """:func:`start_mutation_server` as a context manager."""
    server = start_mutation_server(**options)
    try:
        yield server
    finally:
        server.stop()
