"""A program's numeric constants, and its skeleton: the program with them left out.

Programs that share a skeleton differ only in their numbers, so their scores are samples
of one function of those numbers -- what the constant tuner (``search/tuning.py``) fits.
The engine keeps those samples per skeleton; the tuner reads them back in the order
:func:`numeric_constants` walks, which is the same for every program of a skeleton.
"""

from __future__ import annotations

import ast
import hashlib

from pydantic import BaseModel

from retune.evaluate import syntax

_PLACEHOLDER = "<number>"
# Quick-scored programs kept per skeleton, the latest ones: what the tuner learns from.
TRIALS_PER_SKELETON = 64


class Trial(BaseModel):
    """One scored program of a skeleton: its constants and its score (None: it failed)."""

    values: list[float]
    score: float | None


def numeric_constants(tree: ast.AST) -> list[ast.Constant]:
    """The int and float literals of ``tree`` (booleans are not numbers here), in walk
    order."""
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float)
    ]


def constant_values(code: str) -> list[float] | None:
    """The numeric constants of ``code``, or None if it does not parse."""
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return [float(node.value) for node in numeric_constants(tree)]  # type: ignore[arg-type]


def skeleton_hash(code: str) -> str | None:
    """A hash equal for programs that differ only in the values of their numeric
    constants; None for code that does not parse or has no numeric constants."""
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    constants = numeric_constants(tree)
    if not constants:
        return None
    for node in constants:
        node.value = _PLACEHOLDER
    canonical = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def record_trial(trials: dict[str, list[Trial]], code: str, score: float | None) -> None:
    """Keep a quick-scored program's constants and score (None: it failed) under its
    skeleton in ``trials``, the latest ``TRIALS_PER_SKELETON`` per skeleton."""
    skeleton = skeleton_hash(code)
    values = constant_values(code)
    if skeleton is None or values is None:
        return
    kept = trials.setdefault(skeleton, [])
    kept.append(Trial(values=values, score=score))
    del kept[:-TRIALS_PER_SKELETON]
