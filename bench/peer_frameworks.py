"""The peers ``vs_peers.py`` runs against retune: OpenEvolve, LEVI and GEPA.

Each peer is installed from PyPI into a venv of its own on first use
(``bench/.venv-<peer>``) and runs there through a runner script of its own
(``openevolve_runner.py``, ``levi_runner.py``, ``gepa_runner.py``) that scores candidates
with ``peer_evaluator.py`` (retune's sandbox), against a fresh stand-in server. What a run
records comes from the server's ``/calls`` (every answer, its tokens and the digest of
the program it wrote) and the log ``peer_evaluator.py`` keeps of every evaluation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_runs import BENCH, Plan, Run
from retune_search import Setup
from server_process import MutationServerProcess, call_usd, program_digest, usd_of_stats

PEER_TIMEOUT_SECONDS = 3600.0  # a runaway guard; the USD budget stops a peer long before


@dataclass(frozen=True)
class Peer:
    """A peer framework: its PyPI package, pinned, and its venv."""

    name: str
    requirements: tuple[str, ...]  # the peer, pinned, first
    version_probe: str  # prints the installed version
    version: str

    @property
    def venv(self) -> Path:
        return BENCH / f".venv-{self.name}"


PEERS = {
    "openevolve": Peer(
        "openevolve",
        ("openevolve==0.4.0",),
        "import openevolve; print(openevolve.__version__)",
        "0.4.0",
    ),
    "levi": Peer(
        "levi",
        ("levi-evolve==0.1.1",),
        "import importlib.metadata as m; print(m.version('levi-evolve'))",
        "0.1.1",
    ),
    # GEPA's own dependencies are all optional; optimize_anything needs LiteLLM (at the
    # versions its "full" extra names) and cloudpickle, not the rest of that extra
    # (MLflow, W&B, datasets).
    "gepa": Peer(
        "gepa",
        ("gepa==0.1.4", "litellm>=1.83.0,<1.92", "cloudpickle>=3.0.0", "tqdm>=4.66.1"),
        "import importlib.metadata as m; print(m.version('gepa'))",
        "0.1.4",
    ),
}


def peer_python(peer: Peer) -> Path:
    """The peer's venv interpreter, creating the venv and installing the peer if needed."""
    python = peer.venv / "bin" / "python"
    if python.exists():
        probe = [str(python), "-c", peer.version_probe]
        found = subprocess.run(probe, capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip().endswith(peer.version):
            return python
    print(f"bootstrapping {peer.requirements[0]} in {peer.venv} ...", flush=True)
    shutil.rmtree(peer.venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(peer.venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", *peer.requirements]
    subprocess.run(pip, check=True)
    return python


def prepare_peer_run(run_dir: Path, setup: Setup) -> None:
    """A fresh run directory with the seed program and ``peer_evaluator.py``'s problem."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "initial_program.py").write_text(setup.seed_code)
    problem_card = {
        "retune_evaluate": str(Path(sys.executable).with_name("retune-evaluate")),
        "evaluator": str(setup.evaluator_path),
        "entrypoint": setup.entrypoint,
        "limits": setup.limits.model_dump(),
        "context": setup.context.model_dump(mode="json"),
        "log": str(run_dir / "evaluations.jsonl"),
    }
    (run_dir / "problem.json").write_text(json.dumps(problem_card, indent=2))


def problem_statement(setup: Setup) -> str:
    """The problem as every framework is told it: the target's description and the
    signature (retune's prompts state both the same way)."""
    policy = setup.target.spec.policy
    return (
        f"{policy.description.strip()}\n"
        f"The program must define `{policy.entrypoint}` with exactly this signature: "
        f"`{policy.signature}`."
    )


OPENEVOLVE_DEFAULT_SYSTEM_MESSAGE = (
    "You are an expert coder helping to improve programs through evolution."
)


def openevolve_config(setup: Setup, seed: int, base_url: str, max_iterations: int) -> dict:
    """OpenEvolve's documented default configuration (its ``configs/default_config.yaml``)
    with the endpoint, the models, the problem description, the seed and the cap set."""
    system_message = f"{OPENEVOLVE_DEFAULT_SYSTEM_MESSAGE}\n\n{problem_statement(setup)}"
    models = [{"name": "small", "weight": 0.8}, {"name": "large", "weight": 0.2}]
    return {
        "max_iterations": max_iterations,
        "checkpoint_interval": 10,
        "log_level": "INFO",
        "random_seed": seed,
        "diff_based_evolution": True,
        "max_code_length": 10000,
        "llm": {
            "models": models,
            "evaluator_models": models,
            "api_base": base_url,
            "api_key": "no-key",
            "temperature": 0.7,
            "top_p": 0.95,
            "max_tokens": 4096,
            "timeout": 60,
            "retries": 3,
            "retry_delay": 5,
        },
        "prompt": {
            "system_message": system_message,
            "evaluator_system_message": "You are an expert code reviewer.",
            "num_top_programs": 3,
            "num_diverse_programs": 2,
            "use_template_stochasticity": True,
            "include_artifacts": True,
            "max_artifact_bytes": 20480,
        },
        "database": {
            "in_memory": True,
            "population_size": 1000,
            "archive_size": 100,
            "num_islands": 5,
            "migration_interval": 50,
            "migration_rate": 0.1,
            "elite_selection_ratio": 0.1,
            "exploration_ratio": 0.2,
            "exploitation_ratio": 0.7,
            "feature_dimensions": ["complexity", "diversity"],
            "feature_bins": 10,
            "diversity_reference_size": 20,
        },
        "evaluator": {
            "timeout": 300,
            "max_retries": 3,
            "cascade_evaluation": True,
            "cascade_thresholds": [0.5, 0.75, 0.9],
            "parallel_evaluations": 4,
            "use_llm_feedback": False,
        },
    }


def run_openevolve(problem: str, setup: Setup, seed: int, plan: Plan, work: Path) -> Run:
    python = peer_python(PEERS["openevolve"])
    run_dir = work / problem / f"openevolve-seed{seed}"
    prepare_peer_run(run_dir, setup)
    with MutationServerProcess(seed=0, fresh_repeats=True) as server:
        config = openevolve_config(setup, seed, server.base_url, plan.openevolve_max_iterations)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [str(python), str(BENCH / "openevolve_runner.py"), str(run_dir)]
        command += ["--server-root", server.root, "--max-usd", str(plan.budget_usd)]
        wall = run_logged(command, run_dir / "openevolve.log")
        stats, calls = server.stats(), server.calls()
    result = json.loads((run_dir / "result.json").read_text())
    stop = f"{result['iterations']} iterations" + (
        ", USD budget reached" if result["stopped_by_budget"] else ""
    )
    return peer_run("openevolve", problem, setup, seed, run_dir, stats, calls, wall, stop)


def run_levi(problem: str, setup: Setup, seed: int, plan: Plan, work: Path) -> Run:
    policy = setup.target.spec.policy
    settings = {
        "problem_description": problem_statement(setup),
        "function_signature": f"def {policy.signature}:",
    }
    run, result = run_litellm_peer("levi", problem, setup, seed, plan, work, settings)
    run.stop = f"{result['evaluations']} evaluations by LEVI's count" + (
        ", USD budget reached" if result["usd"] >= plan.budget_usd else ""
    )
    return run


def run_gepa(problem: str, setup: Setup, seed: int, plan: Plan, work: Path) -> Run:
    settings = {"objective": problem_statement(setup)}
    run, result = run_litellm_peer("gepa", problem, setup, seed, plan, work, settings)
    run.stop = f"{result['evaluations']} evaluations, {result['candidates']} candidates kept"
    return run


def run_litellm_peer(
    name: str,
    problem: str,
    setup: Setup,
    seed: int,
    plan: Plan,
    work: Path,
    settings: dict[str, str],
) -> tuple[Run, dict[str, Any]]:
    """A peer that reaches models through LiteLLM (LEVI, GEPA), by its runner
    ``<name>_runner.py``: the run, and the result the runner wrote (``usd`` in it is the
    peer's own accounting)."""
    python = peer_python(PEERS[name])
    run_dir = work / problem / f"{name}-seed{seed}"
    prepare_peer_run(run_dir, setup)
    (run_dir / f"{name}.json").write_text(json.dumps(settings, indent=2))
    with MutationServerProcess(seed=0, fresh_repeats=True) as server:
        command = [str(python), str(BENCH / f"{name}_runner.py"), str(run_dir)]
        command += ["--api-base", server.base_url, "--budget-usd", str(plan.budget_usd)]
        command += ["--seed", str(seed), "--max-evaluations", str(plan.peer_max_evaluations)]
        wall = run_logged(command, run_dir / f"{name}.log")
        stats, calls = server.stats(), server.calls()
    result: dict[str, Any] = json.loads((run_dir / "result.json").read_text())
    run = peer_run(name, problem, setup, seed, run_dir, stats, calls, wall, "")
    own = result["usd"]
    run.own_usd = None if own is None else round(float(own), 6)
    if run.own_usd is not None and abs(run.own_usd - run.usd) > 1e-6:
        run.notes.append(
            f"{name}'s own accounting says ${run.own_usd:.6f}, the server ${run.usd:.6f}"
        )
    return run, result


def run_logged(command: list[str], log_path: Path) -> float:
    """Run ``command`` with its output in ``log_path``; its wall seconds."""
    started = time.monotonic()
    with log_path.open("w") as log:
        subprocess.run(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=PEER_TIMEOUT_SECONDS,
        )
    return round(time.monotonic() - started, 1)


def peer_run(
    framework: str,
    problem: str,
    setup: Setup,
    seed: int,
    run_dir: Path,
    stats: dict[str, dict[str, int]],
    calls: list[dict[str, Any]],
    wall: float,
    stop: str,
) -> Run:
    """A peer's run, from the server's calls and the evaluator's log."""
    log = run_dir / "evaluations.jsonl"
    evaluations = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    seed_digest = program_digest(setup.seed_code)
    points, unmatched = peer_points(evaluations, calls, seed_digest)
    evaluated = {e["sha256"] for e in evaluations}
    notes = [f"{unmatched} evaluated programs not traced to a call"] if unmatched else []
    scored = [e for e in evaluations if not e.get("failed")]
    return Run(
        framework=framework,
        problem=problem,
        seed=seed,
        seed_score=next(e["score"] for e in evaluations if e["sha256"] == seed_digest),
        best_score=max(float(e["score"]) for e in scored),
        usd=usd_of_stats(stats),
        own_usd=None,
        tokens=stats,
        calls=len(calls),
        **no_program(calls, evaluated),
        evaluations=len(evaluations),
        failed_evaluations=len(evaluations) - len(scored),
        wall_seconds=wall,
        stop=stop,
        points=points,
        notes=notes,
    )


def peer_points(
    evaluations: list[dict[str, Any]], calls: list[dict[str, Any]], seed_digest: str
) -> tuple[list[tuple[float, float, float]], int]:
    """(USD spent when written, the same without no-program calls, score) per program a
    peer evaluated successfully.

    A program is traced to the first call whose answer wrote exactly its text; the spend
    is every call up to and including that one. The seed program cost nothing. A program
    no call wrote (a diff that applied only in part) is left out and counted.
    """
    written: dict[str, tuple[float, float]] = {seed_digest: (0.0, 0.0)}
    total = net = 0.0
    for call in calls:
        usd = call_usd(call["model"], call["prompt_tokens"], call["completion_tokens"])
        digest = call["program_sha256"]
        total += usd
        if digest and digest not in written:
            net += usd
            written[digest] = (total, net)
    points, unmatched = [], 0
    for evaluation in evaluations:
        spent = written.get(evaluation["sha256"])
        if spent is None:
            unmatched += 1
        elif not evaluation.get("failed"):
            points.append((*spent, float(evaluation["score"])))
    return points, unmatched


def no_program(calls: list[dict[str, Any]], evaluated: set[str]) -> dict[str, Any]:
    """Calls that gave a peer nothing new to evaluate: no program in the answer, one an
    earlier answer already wrote, or one the peer never evaluated (its diff did not
    apply, it was never scheduled before the budget ran out...)."""
    seen: set[str] = set()
    count, usd = 0, 0.0
    for call in calls:
        digest = call["program_sha256"]
        if digest is None or digest in seen or digest not in evaluated:
            count += 1
            usd += call_usd(call["model"], call["prompt_tokens"], call["completion_tokens"])
        seen.add(digest)
    return {"no_program_calls": count, "no_program_usd": round(usd, 6)}
