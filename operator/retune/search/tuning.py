"""Numbers from an optimiser: the built-in mutator's constant-tuning kind.

Structure comes from edits (a new term, a new branch); the numbers in it are better set
by an optimiser that learns from the scores of the programs that share the structure than
by random perturbation. The engine keeps, per skeleton, the constants and quick scores of
every program it scored (``EngineState.trials``) and hands the parent's to the mutator
(``MutationRequest.relatives``); this module fits them and proposes the next constants.

The optimiser is Optuna's TPE sampler. Why TPE, and why Optuna:

- It proposes one point at a time from however many scored points there are, from one
  or two upwards. CMA-ES (Optuna's or nevergrad's) wants a population per generation and
  dozens of evaluations before its covariance means anything, more than a 300-evaluation
  search spends on one structure.
- It is rebuilt from the scored points on every call (``add_trial``), so the mutator
  keeps no state of its own: the request alone decides the proposal (seeded from the
  request), a run replays exactly, and a resumed run proposes what the killed one would
  have. An ask/tell optimiser holding its state in memory (nevergrad) would need its
  state checkpointed beside the engine's.
- Optuna is widely used, maintained, pure Python, and its samplers take a seed.

Optuna takes about a second to import, so it is imported on first use.
"""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from retune.search.constants import Trial, numeric_constants

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# How far a tuned constant may move from the parent's value: a factor of this either way
# (log scale); integers of magnitude below SMALL_INT move by up to SMALL_INT_STEP.
SPAN = 4.0
SMALL_INT = 4
SMALL_INT_STEP = 2
# Proposals tried per request before giving up on finding a new program.
ATTEMPTS = 6


def tune_constants(
    tree: ast.Module,
    relatives: list[Trial],
    seed: int,
    is_new: Callable[[str], bool],
) -> tuple[str, str] | None:
    """A copy of ``tree`` with its numeric constants set by TPE fitted to ``relatives``
    (programs of the same skeleton and their scores), as (code, description); None when
    the program has no constants or no new program was proposed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    child = copy.deepcopy(tree)
    nodes = numeric_constants(child)
    if not nodes:
        return None
    literals = [_number(node) for node in nodes]
    parent = [float(value) for value in literals]
    space = {f"c{i}": _distribution(value) for i, value in enumerate(literals)}
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed % 2**32, n_startup_trials=0),
    )
    for trial in relatives:
        params = _params(trial.values, parent, space)
        if params is None:
            continue
        state = (
            optuna.trial.TrialState.COMPLETE
            if trial.score is not None and math.isfinite(trial.score)
            else optuna.trial.TrialState.FAIL
        )
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=space,
                value=trial.score if state is optuna.trial.TrialState.COMPLETE else None,
                state=state,
            )
        )
    fitted = len(study.trials)
    for _ in range(ATTEMPTS):
        proposal = study.ask(space)
        changes = []
        for i, node in enumerate(nodes):
            value = _value(proposal.params[f"c{i}"], literals[i])
            if value != literals[i]:
                changes.append(f"{literals[i]} -> {value}")
            node.value = value
        study.tell(proposal, state=optuna.trial.TrialState.PRUNED)  # not scored here
        if not changes:
            continue
        code = ast.unparse(child) + "\n"
        if is_new(code):
            shown = ", ".join(changes[:4]) + (", ..." if len(changes) > 4 else "")
            return code, f"tune constants (TPE on {fitted} relatives): {shown}"
    return None


def _number(node: ast.Constant) -> int | float:
    value = node.value
    assert isinstance(value, int | float)
    return value


def _distribution(value: int | float) -> BaseDistribution:
    """Where a constant may go: within a factor ``SPAN`` either way, log-scaled; zero
    anywhere in [0, 1]; small integers a few steps either way (not below zero)."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(value, int):
        if value < SMALL_INT:
            return IntDistribution(max(0, value - SMALL_INT_STEP), value + SMALL_INT_STEP)
        return IntDistribution(max(1, int(value / SPAN)), int(value * SPAN), log=True)
    if value <= 0:
        return FloatDistribution(0.0, 1.0)
    return FloatDistribution(value / SPAN, value * SPAN, log=True)


def _params(
    values: list[float], parent: list[float], space: dict[str, BaseDistribution]
) -> dict[str, float | int] | None:
    """A relative's constants as parameters of ``space``; None if one is outside it.
    (Parsed literals are never negative: a minus sign is an operator of its own.)"""
    if len(values) != len(parent):
        return None
    params: dict[str, float | int] = {}
    for i, value in enumerate(values):
        distribution = space[f"c{i}"]
        param: float | int = int(value) if _is_int(distribution) else value
        if param != value or not _contains(distribution, param):
            return None
        params[f"c{i}"] = param
    return params


def _contains(distribution: BaseDistribution, param: float | int) -> bool:
    low = getattr(distribution, "low", None)
    high = getattr(distribution, "high", None)
    return low is not None and high is not None and low <= param <= high


def _is_int(distribution: BaseDistribution) -> bool:
    from optuna.distributions import IntDistribution

    return isinstance(distribution, IntDistribution)


def _value(param: float | int, literal: int | float) -> int | float:
    """The literal for a proposed parameter: floats to 4 significant digits, so programs
    stay readable and near-equal proposals become duplicates."""
    if isinstance(literal, int):
        return int(param)
    return float(f"{float(param):.4g}")
