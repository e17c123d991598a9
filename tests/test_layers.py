"""The layer contract holds at run time too: the controller and the engine load no client of
the cluster, metrics or LLM, however they are reached (``.importlinter`` checks the import
graph; this checks what importing really loads, package ``__init__`` modules included)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLIENTS = ("kubernetes", "kopf", "openai", "prometheus_api_client")


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("retune.controller", ("kubernetes", "kopf")),
        ("retune.rollout", ("kubernetes", "kopf")),
        ("retune.search.engine", CLIENTS),
        ("retune.spec", CLIENTS),
    ],
)
def test_importing_a_pure_layer_loads_no_client(module: str, forbidden: tuple[str, ...]) -> None:
    probe = f"import sys, {module}\nprint(' '.join(m for m in {forbidden!r} if m in sys.modules))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == [], f"importing {module} loads {loaded}"


def test_the_probe_sees_a_client_when_one_is_loaded() -> None:
    probe = "import sys, retune.rollout.apps\nprint('kubernetes' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
