"""One LEVI search, run by ``vs_peers.py`` inside LEVI's own venv.

    bench/.venv-levi/bin/python bench/levi_runner.py RUN_DIR \
        --api-base http://127.0.0.1:PORT/v1 --budget-usd 0.1 --seed 0

``RUN_DIR`` holds ``initial_program.py``, ``problem.json`` (for ``peer_evaluator.py``)
and ``levi.json`` (the problem description and the function signature). LEVI runs through
``levi.evolve_code`` at its defaults except the models, the budget and where it writes:
its strong role (``paradigm_model``: init-phase diverse seeds, paradigm shifts) is
``large`` and its cheap role (``mutation_model``: mutations, init variants, meta-advice)
is ``small``, both as ``openai/<name>`` LiteLLM models at the stand-in's ``api_base``.
LEVI's cost accounting asks LiteLLM what a call cost, so the stand-in's prices are
registered with LiteLLM first; its own USD budget then stops it (a call in flight when it
is reached still counts, so the spend may end a little above).

Two things around LEVI, neither part of its search:

- LEVI has no seed option; Python's and NumPy's global generators are seeded with
  ``--seed`` (its LLM calls and evaluations run concurrently, so a run still does not
  replay exactly).
- LEVI starts each evaluation in a fresh ``spawn`` process, which imports LEVI and
  LiteLLM again: about 6 s of CPU per evaluation on the benchmark machine, more than the
  evaluation itself. Its pool is given a ``forkserver`` context with those modules
  preloaded instead, so each evaluation forks from a process that has them. What runs in
  the process (LEVI's ``exec`` of the candidate, then its score function) is unchanged.

Writes ``RUN_DIR/result.json``: LEVI's result (best score and program, evaluations, its
own USD total and score history). Every evaluation is in the log ``peer_evaluator.py``
keeps.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# LiteLLM fetches its price list from GitHub at import unless told to use its bundled
# copy; the stand-in's prices are registered below either way.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import numpy
from levi import LM, evolve_code
from levi.utils import resilient_pool
from peer_evaluator import levi_score, runner_arguments
from server_process import litellm_prices

FORKSERVER_PRELOAD = ["levi.utils.resilient_pool", "levi.utils.evaluation", "peer_evaluator"]


def evaluate_from_a_forkserver() -> None:
    """Give LEVI's evaluation pool a forkserver context (see the module docstring)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    create = resilient_pool.ResilientProcessPool.__init__

    def create_with_forkserver(pool: Any, *args: Any, **kwargs: Any) -> None:
        create(pool, *args, **kwargs)
        pool._ctx = context

    resilient_pool.ResilientProcessPool.__init__ = create_with_forkserver  # type: ignore[method-assign]


def main() -> None:
    args, settings = runner_arguments(__doc__.split("\n\n")[0], "levi.json")
    run_dir: Path = args.run_dir
    random.seed(args.seed)
    numpy.random.seed(args.seed)
    litellm.register_model(litellm_prices())  # LiteLLM prices the calls for the peer
    evaluate_from_a_forkserver()

    def model(name: str) -> LM:
        return LM(f"openai/{name}", api_base=args.api_base, api_key="no-key")

    result = evolve_code(
        settings["problem_description"],
        function_signature=settings["function_signature"],
        seed_program=(run_dir / "initial_program.py").read_text(),
        score_fn=levi_score,
        paradigm_model=model("large"),
        mutation_model=model("small"),
        budget_dollars=args.budget_usd,
        budget_evals=args.max_evaluations,
        output_dir=str(run_dir / "levi_output"),
    )
    document = {
        "best_score": result.best_score,
        "best_code": result.best_program,
        "evaluations": result.total_evaluations,
        "usd": result.total_cost,  # LEVI's own accounting, at the registered prices
        "archive_size": result.archive_size,
        "wall_seconds": round(result.runtime_seconds, 3),
        "score_history": result.score_history,
    }
    (run_dir / "result.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
