"""A parameters policy's values, read from its program's syntax, never by running it.

A ``parameters`` policy (``spec.policy.kind``) is a program whose declared parameters
(``spec.policy.parameters``) are module-level constants, ``ALPHA = 0.5``; the search moves
their values and nothing else. :func:`read_values` reads them (for the revision's JSON
file, and to check a seed); :func:`values_only_problem` says why a candidate is more than
its parent with values moved, or within bounds no longer (a model's answer can be
anything). Both are pure and work on the syntax tree: a generated program is never run
outside the sandbox.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence

from retune.evaluate.syntax import parse
from retune.spec import ParameterSpec, PolicySpec

Value = int | float


class ParameterError(ValueError):
    """The program does not hold its declared parameters as the contract says."""


def read_values(code: str, parameters: Sequence[ParameterSpec]) -> dict[str, Value]:
    """Each declared parameter's value, in declaration order; :class:`ParameterError`
    names the first one that is not a module-level numeric constant within its bounds."""
    try:
        tree = parse(code)
    except SyntaxError as error:
        raise ParameterError(f"the program does not parse: {error.msg}") from None
    except (ValueError, MemoryError, RecursionError) as error:  # too deep, or NUL bytes
        raise ParameterError(f"the program does not parse: {type(error).__name__}") from None
    assigned = _assignments(tree)
    values: dict[str, Value] = {}
    for parameter in parameters:
        nodes = assigned.get(parameter.name, [])
        if len(nodes) != 1:
            how = "is not assigned" if not nodes else f"is assigned {len(nodes)} times"
            raise ParameterError(
                f"parameter {parameter.name!r} {how} at module level (write it once, as "
                f"`{parameter.name} = <number>`)"
            )
        value = number_literal(nodes[0]) if nodes[0] is not None else None
        if value is None:
            raise ParameterError(
                f"parameter {parameter.name!r} must be assigned a number literal, as "
                f"`{parameter.name} = <number>`"
            )
        values[parameter.name] = _within(parameter, value)
    return values


def seed_problem(policy: PolicySpec, code: str) -> str | None:
    """Why the seed of ``policy`` cannot start a parameters search; None when it can (and
    for a code policy)."""
    if policy.kind != "parameters":
        return None
    try:
        read_values(code, policy.parameters)
    except ParameterError as error:
        return f"the seed program does not hold its declared parameters: {error}"
    return None


def values_only_problem(parent: str, code: str, parameters: Sequence[ParameterSpec]) -> str | None:
    """Why ``code`` is not ``parent`` with only its parameters' values moved (within their
    bounds); None when it is."""
    try:
        read_values(code, parameters)
        if _shape(parse(code), parameters) != _shape(parse(parent), parameters):
            names = ", ".join(p.name for p in parameters)
            return (
                f"only the values of the parameters ({names}) may change; every other line "
                "must stay as it is"
            )
    except (ParameterError, SyntaxError, ValueError, MemoryError, RecursionError) as error:
        return str(error) or type(error).__name__
    return None


def _assignments(tree: ast.Module) -> dict[str, list[ast.expr | None]]:
    """Per module-level name, the values assigned to it (None: an annotated or augmented
    assignment, which is not a plain constant)."""
    assigned: dict[str, list[ast.expr | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            assigned.setdefault(node.target.id, []).append(None)
    return assigned


def number_literal(node: ast.expr) -> Value | None:
    """The number a literal (or a signed literal) holds; None for anything else."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    if not isinstance(node.value, (int, float)):
        return None
    return sign * node.value


def _within(parameter: ParameterSpec, value: Value) -> Value:
    name = parameter.name
    if not math.isfinite(value):
        raise ParameterError(f"parameter {name!r} must be a finite number (got {value!r})")
    if parameter.integer and not float(value).is_integer():
        raise ParameterError(f"parameter {name!r} must be a whole number (got {value!r})")
    if not parameter.min <= value <= parameter.max:
        raise ParameterError(
            f"parameter {name!r} must lie in [{parameter.min:g}, {parameter.max:g}] (got {value!r})"
        )
    step = parameter.step
    if step is not None:
        steps = (value - parameter.min) / step
        if abs(steps - round(steps)) > 1e-6:
            raise ParameterError(
                f"parameter {name!r} must be {parameter.min:g} plus a whole number of steps "
                f"of {step:g} (got {value!r})"
            )
    return int(value) if parameter.integer else value


def _shape(tree: ast.Module, parameters: Sequence[ParameterSpec]) -> str:
    """The program with the parameters' values blanked out, as a comparable string."""
    names = {p.name for p in parameters}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in names
        ):
            node.value = ast.Constant(value=None)
    return ast.dump(tree, include_attributes=False)
