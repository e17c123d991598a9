"""One OpenEvolve search, run by ``vs_peers.py`` inside OpenEvolve's own venv.

    bench/.venv-openevolve/bin/python bench/openevolve_runner.py RUN_DIR \
        --server-root http://127.0.0.1:PORT --max-usd 0.05

``RUN_DIR`` holds ``initial_program.py``, ``config.yaml`` (OpenEvolve's configuration)
and ``problem.json`` (for ``peer_evaluator.py``). OpenEvolve has no USD budget, so
a watcher thread reads the mutation server's ``/stats`` and asks OpenEvolve to shut down
once the spend reaches ``--max-usd``; answers already in flight still count, so the spend
ends slightly above the budget. ``max_iterations`` in the config is only a safety cap.

Writes ``RUN_DIR/result.json``: the best score and program and the iterations run.
(Every evaluation is in the log ``peer_evaluator.py`` keeps.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openevolve.config import load_config
from openevolve.controller import OpenEvolve
from peer_evaluator import PROBLEM_ENV
from server_process import fetch_json, usd_of_stats

POLL_SECONDS = 0.1


def watch_budget(
    controller: OpenEvolve, server_root: str, max_usd: float, done: threading.Event
) -> dict[str, float | bool]:
    """Start a thread that stops ``controller`` once the server has served ``max_usd``."""
    state: dict[str, float | bool] = {"stopped_by_budget": False}

    def loop() -> None:
        while not done.wait(POLL_SECONDS):
            if usd_of_stats(fetch_json(server_root + "/stats")) < max_usd:
                continue
            parallel = controller.parallel_controller
            if parallel is not None:
                parallel.request_shutdown()
                state["stopped_by_budget"] = True
                return

    threading.Thread(target=loop, name="budget-watcher", daemon=True).start()
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--server-root", required=True, help="the mutation server, no /v1")
    parser.add_argument("--max-usd", type=float, required=True)
    args = parser.parse_args()
    run_dir: Path = args.run_dir.resolve()
    os.environ[PROBLEM_ENV] = str(run_dir / "problem.json")  # the workers inherit it
    config = load_config(str(run_dir / "config.yaml"))
    evaluator_file = Path(__file__).resolve().parent / "peer_evaluator.py"
    controller = OpenEvolve(
        str(run_dir / "initial_program.py"),
        str(evaluator_file),
        config,
        output_dir=str(run_dir / "openevolve_output"),
    )
    done = threading.Event()
    budget = watch_budget(controller, args.server_root, args.max_usd, done)
    started = time.monotonic()
    best = asyncio.run(controller.run(iterations=config.max_iterations))
    done.set()
    result = {
        "best_score": best.metrics.get("combined_score") if best else None,
        "best_code": best.code if best else None,
        "iterations": controller.database.last_iteration,
        "stopped_by_budget": budget["stopped_by_budget"],
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
