"""The stand-in model server (``mutation_server.py``) as a child process, for benchmarks
and tests (``tests/llm_server.py`` is a thin wrapper of this module).

    with MutationServerProcess(seed=0, fresh_repeats=True) as server:
        ...  # point a framework at server.base_url
        spent = server.usd()          # from GET /stats, at the server's own prices
        calls = server.calls()        # GET /calls: every counted answer, in order
        server.set_faults("429:#1")   # replace the fault spec while it runs
        server.reset()                # zero the stats and calls, clear the faults

Standard library only: the OpenEvolve runner, which has no retune installed, imports the
pricing from here too.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_server import MODELS, program_digest

SERVER_SCRIPT = Path(__file__).resolve().parent / "mutation_server.py"
START_TIMEOUT_SECONDS = 15.0

__all__ = [
    "MODELS",
    "MutationServerProcess",
    "call_usd",
    "litellm_prices",
    "program_digest",
    "usd_of_stats",
]


def call_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """What one answer costs at the server's listed prices (a zoo model,
    ``small:drift``, at its base model's)."""
    card = MODELS[model.partition(":")[0]]
    return (
        prompt_tokens * card.input_per_million + completion_tokens * card.output_per_million
    ) / 1e6


def litellm_prices() -> dict[str, dict[str, Any]]:
    """The server's models and prices as ``litellm.register_model`` takes them, under
    every name LiteLLM may look them up by (``small``, ``openai/small``...): the peers that
    price their calls through LiteLLM (LEVI, GEPA) then see the server's prices."""
    return {
        f"{prefix}{card.name}": {
            "input_cost_per_token": card.input_per_million / 1e6,
            "output_cost_per_token": card.output_per_million / 1e6,
            "litellm_provider": "openai",
            "mode": "chat",
        }
        for card in MODELS.values()
        for prefix in ("", "openai/")
    }


def usd_of_stats(stats: dict[str, dict[str, int]]) -> float:
    """Total USD of a ``GET /stats`` document."""
    return sum(
        call_usd(model, used["prompt_tokens"], used["completion_tokens"])
        for model, used in stats.items()
    )


def fetch_json(url: str, body: object | None = None) -> Any:
    """GET (or POST ``body``) ``url`` and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class MutationServerProcess:
    """A mutation server on a free loopback port, stopped on exit."""

    def __init__(
        self,
        seed: int = 0,
        *,
        fresh_repeats: bool = False,
        faults: str = "",
        stall_seconds: float = 30.0,
        retry_after: float = 1.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Start the server; the options are its command-line flags (``--help``); ``host``
        is the address it listens on (``0.0.0.0`` for clients in pods)."""
        command = [sys.executable, str(SERVER_SCRIPT), "--host", host, "--port", "0"]
        command += ["--seed", str(seed), "--faults", faults]
        command += ["--stall-seconds", str(stall_seconds), "--retry-after", str(retry_after)]
        if fresh_repeats:  # see mutation_server.py: fair to clients that fix their seed
            command.append("--fresh-repeats")
        if api_key is not None:
            command += ["--api-key", api_key]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        line = self._first_line()
        url = next((word for word in line.split() if word.startswith("http://")), None)
        if url is None:
            self.stop()
            raise RuntimeError(f"the mutation server did not start (it said {line!r})")
        self.base_url: str = url  # ends in /v1, as an OpenAI client wants it
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.root: str = url.removesuffix("/v1")

    def _first_line(self) -> str:
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        line = ""
        while not line and time.monotonic() < deadline and self.process.poll() is None:
            if selector.select(timeout=0.1):
                line = self.process.stdout.readline()
        selector.close()
        return line

    def stats(self) -> dict[str, dict[str, int]]:
        """Tokens served per model since the last reset."""
        result: dict[str, dict[str, int]] = fetch_json(self.root + "/stats")
        return result

    def calls(self) -> list[dict[str, Any]]:
        """Every counted answer since the last reset, in the order it was counted."""
        result: list[dict[str, Any]] = fetch_json(self.root + "/calls")
        return result

    def usd(self) -> float:
        """USD served since the last reset."""
        return usd_of_stats(self.stats())

    def set_faults(self, spec: str) -> None:
        """Replace the fault spec, e.g. ``"429:#1"`` or ``"500@small:1.0"``."""
        fetch_json(self.root + "/admin/faults", {"faults": spec})

    def reset(self) -> None:
        """Zero the stats, forget the calls and the repeats, and clear the faults."""
        fetch_json(self.root + "/admin/reset", {})
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

    def __enter__(self) -> MutationServerProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
