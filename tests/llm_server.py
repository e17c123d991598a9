"""Test helper: the stand-in model server (``bench/mutation_server.py``) as a subprocess.

    with running_mutation_server(seed=7) as server:
        client = OpenAI(base_url=server.base_url, api_key="x")
        ...
        assert ledger_tokens == server.stats()

The process management is the benchmarks' (``bench/server_process.py``); this module
only makes it importable from tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from server_process import MODELS, call_usd
from server_process import MutationServerProcess as MutationServer

REPO = Path(__file__).resolve().parents[1]

__all__ = ["MODELS", "REPO", "MutationServer", "call_usd", "running_mutation_server"]


@contextmanager
def running_mutation_server(**options: Any) -> Iterator[MutationServer]:
    """A server on a free loopback port, stopped on exit; ``options`` as for
    :class:`MutationServer` (``seed``, ``faults``, ``stall_seconds``, ``retry_after``)."""
    with MutationServer(**options) as server:
        yield server
