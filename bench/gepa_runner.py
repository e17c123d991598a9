"""One GEPA search, run by ``vs_peers.py`` inside GEPA's own venv.

    bench/.venv-gepa/bin/python bench/gepa_runner.py RUN_DIR \
        --api-base http://127.0.0.1:PORT/v1 --budget-usd 0.1 --seed 0

``RUN_DIR`` holds ``initial_program.py``, ``problem.json`` (for ``peer_evaluator.py``)
and ``gepa.json`` (the problem statement). GEPA runs through
``gepa.optimize_anything.optimize_anything`` in its single-task mode (the candidate is
the program's text; no dataset) at its defaults except the model, the budget, the seed
and where it writes. It has one model role, ``reflection_lm`` (documented default
``openai/gpt-5.1``, a strong model), so it gets ``large``, as the LiteLLM model
``openai/large`` at the stand-in's ``api_base``. GEPA prices its calls by asking
LiteLLM, so the stand-in's prices are registered with LiteLLM first, and
``max_reflection_cost`` stops it on USD (checked between iterations: the call that
crosses the budget still counts).

The evaluator returns ``(score, side_info)``: the full score and the subscores, or 0.0
and the sandbox's reason for a candidate that fails. Writes ``RUN_DIR/result.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# LiteLLM fetches its price list from GitHub at import unless told to use its bundled
# copy; the stand-in's prices are registered below either way.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from gepa.optimize_anything import EngineConfig, GEPAConfig, ReflectionConfig, optimize_anything
from peer_evaluator import runner_arguments, sandboxed_score
from server_process import litellm_prices


def evaluate(candidate: str) -> tuple[float, dict[str, Any]]:
    """GEPA's evaluator: the candidate scored in retune's sandbox."""
    scored = sandboxed_score(candidate)
    if isinstance(scored, str):
        return 0.0, {"error": scored}
    score, subscores = scored
    return score, {"subscores": subscores}


def main() -> None:
    args, settings = runner_arguments(__doc__.split("\n\n")[0], "gepa.json")
    run_dir: Path = args.run_dir
    litellm.register_model(litellm_prices())  # LiteLLM prices the calls for the peer
    reflection = ReflectionConfig(
        reflection_lm="openai/large",
        reflection_lm_kwargs={"api_base": args.api_base, "api_key": "no-key"},
    )
    engine = EngineConfig(
        run_dir=str(run_dir / "gepa_output"),
        seed=args.seed,
        max_reflection_cost=args.budget_usd,
        max_metric_calls=args.max_evaluations,
    )
    result = optimize_anything(
        seed_candidate=(run_dir / "initial_program.py").read_text(),
        evaluator=evaluate,
        objective=settings["objective"],
        config=GEPAConfig(engine=engine, reflection=reflection),
    )
    lm = reflection.reflection_lm
    document = {
        "best_score": result.val_aggregate_scores[result.best_idx],
        "best_code": result.best_candidate,
        "candidates": len(result.candidates),
        "evaluations": result.total_metric_calls,
        "usd": getattr(lm, "total_cost", None),  # GEPA's own accounting
    }
    (run_dir / "result.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
