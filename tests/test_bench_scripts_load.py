"""Every benchmark script loads and answers ``--help``: one whose imports broke (a helper
moved, say) fails here, not on the day someone runs it (operator_scale.py went unnoticed so
once). The peers' runners are left out: they run inside the peers' own environments."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.llm_server import REPO

IN_PEER_ENVIRONMENTS = {"gepa_runner.py", "levi_runner.py", "openevolve_runner.py"}
SCRIPTS = sorted(
    path.name for path in (REPO / "bench").glob("*.py") if path.name not in IN_PEER_ENVIRONMENTS
)


def test_the_list_of_scripts_is_not_empty() -> None:
    assert "operator_scale.py" in SCRIPTS and "vs_peers.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_benchmark_script_loads(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
