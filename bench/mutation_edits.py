"""Seeded source-level edits of a Python program, for the stand-in model server.

Edits are made on the source text at AST node positions, so everything the edit does not
touch (comments, formatting) stays byte for byte the same and a SEARCH/REPLACE block
copied from the original always matches. Standard library only: the server must run
without retune installed.

Edits: perturb a numeric constant, swap an arithmetic or comparison operator (or
``min``/``max``), add a term built from numeric names in scope (``+ 0.3 * hits``), and --
for bold models -- add a branch that reweights an expression (``if size > 4: w1 = 1.5``).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_SWAPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+")}
_COMPARE_SWAPS = {"<": "<=", "<=": "<", ">": ">=", ">=": ">"}


@dataclass(frozen=True)
class Edit:
    start: int  # character offsets into the source; start == end is an insertion
    end: int
    text: str
    label: str


@dataclass(frozen=True)
class Hints:
    """What the prompt's signature says about types (``size: int``, ``-> float``)."""

    numeric_params: frozenset[str] = frozenset()
    numeric_return: bool | None = None  # None: the signature does not say


_NUMERIC_TYPES = {"int", "float"}


def hints_from_signature(signature: str) -> Hints:
    """Numeric parameters and return of a signature like ``f(a: int, b) -> float``."""
    text = signature.strip().removeprefix("def ").rstrip(":").strip()
    try:
        node = ast.parse(f"def {text}:\n    pass\n").body[0]
    except SyntaxError:
        return Hints()
    assert isinstance(node, ast.FunctionDef)
    numeric = frozenset(
        a.arg
        for a in node.args.posonlyargs + node.args.args
        if a.annotation is not None and ast.unparse(a.annotation) in _NUMERIC_TYPES
    )
    returns = None if node.returns is None else ast.unparse(node.returns) in _NUMERIC_TYPES
    return Hints(numeric, returns)


class Program:
    """A parsed program and the numeric places in it that edits may touch."""

    def __init__(self, source: str, hints: Hints | None = None) -> None:
        self.source = source
        self.hints = hints or Hints()
        self.tree = ast.parse(source)
        self._lines = source.splitlines(keepends=True)
        self._line_starts = [0]
        for line in self._lines:
            self._line_starts.append(self._line_starts[-1] + len(line))
        self.functions = [n for n in self.tree.body if isinstance(n, ast.FunctionDef)]
        self.module_names = {
            t.id
            for node in self.tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }

    # -- positions -----------------------------------------------------------------------
    def offset(self, lineno: int, col: int) -> int:
        line = self._lines[lineno - 1]
        return self._line_starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def segment(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.source[start:end]

    def line_start(self, lineno: int) -> int:
        return self._line_starts[lineno - 1]

    def indent_of(self, lineno: int) -> str:
        line = self._lines[lineno - 1]
        return line[: len(line) - len(line.lstrip(" \t"))]

    # -- places --------------------------------------------------------------------------
    def body_nodes(self) -> list[tuple[ast.FunctionDef, ast.stmt, ast.AST]]:
        """(function, top-level statement of its body, node) for every node in a body."""
        found = []
        for function in self.functions:
            for statement in function.body:
                for node in ast.walk(statement):
                    found.append((function, statement, node))
        return found

    def numeric_terms(self, function: ast.FunctionDef) -> list[str]:
        """Operands of arithmetic rooted at a parameter or a module-level name, then the
        parameters the signature calls numeric (or that are returned as a number)."""
        params = [a.arg for a in function.args.posonlyargs + function.args.args]
        visible = set(params) | self.module_names
        terms: list[str] = []
        for node in ast.walk(function):
            if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITHMETIC):
                for operand in (node.left, node.right):
                    root = _root_name(operand)
                    text = self.segment(operand)
                    if root in visible and text not in terms and "\n" not in text:
                        terms.append(text)
        returned = {
            node.value.id
            for node in ast.walk(function)
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Name)
        }
        objects = _used_as_objects(function)
        for name in params:
            numeric = (
                name in self.hints.numeric_params
                # A function declared to return a number, with unannotated parameters
                # never used as objects: take them as numbers, as the prompt's prose does.
                or (self.hints.numeric_return is True and name not in objects)
                or (name in returned and self.hints.numeric_return is not False)
            )
            if numeric and name not in terms:
                terms.append(name)
        return terms

    def parameter_terms(self, function: ast.FunctionDef) -> list[str]:
        params = {a.arg for a in function.args.args + function.args.posonlyargs}
        return [t for t in self.numeric_terms(function) if t.split(".")[0].split("[")[0] in params]


def _used_as_objects(function: ast.FunctionDef) -> set[str]:
    """Names that are indexed, have attributes read, are called or are iterated over."""
    used: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute | ast.Subscript):
            target: ast.AST = node.value
        elif isinstance(node, ast.Call):
            target = node.func
        elif isinstance(node, ast.For | ast.comprehension):
            target = node.iter
        else:
            continue
        if isinstance(target, ast.Name):
            used.add(target.id)
    return used


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    if isinstance(node, ast.Name):
        return node.id
    return None


def _number(value: float) -> str:
    text = repr(round(value, 4))
    return text if any(c in text for c in ".e") else text + ".0"


# -- edit operations ---------------------------------------------------------------------
EditOp = Callable[[Program, random.Random], list[Edit]]


def perturb_constant(program: Program, rng: random.Random) -> list[Edit]:
    in_slices = {
        id(n)
        for _f, _s, node in program.body_nodes()
        if isinstance(node, ast.Subscript)
        for n in ast.walk(node.slice)
    }
    constants = [
        node
        for _f, _s, node in program.body_nodes()
        if isinstance(node, ast.Constant)
        and type(node.value) in (int, float)
        and id(node) not in in_slices
    ]
    floats = [c for c in constants if isinstance(c.value, float)]
    pool = floats or constants
    if not pool:
        return []
    node = rng.choice(pool)
    old = node.value
    assert isinstance(old, int | float)
    if isinstance(old, float):
        new_text = _number(old * rng.choice([0.5, 0.8, 1.25, 1.5, 2.0]) if old else 0.1)
    else:
        new_text = str(max(0, old + rng.choice([-2, -1, 1, 2])) if old >= 0 else old - 1)
    if new_text == program.segment(node):
        return []
    start, end = program.span(node)
    return [
        Edit(start, end, new_text, f"change the constant {program.segment(node)} to {new_text}")
    ]


def swap_operator(program: Program, rng: random.Random) -> list[Edit]:
    places: list[Edit] = []
    for _f, _s, node in program.body_nodes():
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
            old, new = _SWAPS[type(node.op)]
            places += _between(program, node.left, node.right, re.escape(old), new)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1:
            places += _between(program, node.left, node.comparators[0], r"<=|>=|<|>", None)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("min", "max")
        ):
            start, end = program.span(node.func)
            new = "max" if node.func.id == "min" else "min"
            places.append(Edit(start, end, new, f"use {new} instead of {node.func.id}"))
    return [rng.choice(places)] if places else []


def _between(
    program: Program, left: ast.AST, right: ast.AST, pattern: str, new: str | None
) -> list[Edit]:
    gap_start = program.span(left)[1]
    gap = program.source[gap_start : program.span(right)[0]]
    match = re.search(pattern, gap)
    if match is None:
        return []
    old = match.group(0)
    replacement = new if new is not None else _COMPARE_SWAPS[old]
    start = gap_start + match.start()
    return [Edit(start, start + len(old), replacement, f"use {replacement} instead of {old}")]


def _numeric_expressions(program: Program) -> list[tuple[ast.FunctionDef, ast.stmt, ast.expr]]:
    """Arithmetic, and returned values that are plainly numbers (``return last_access``)."""
    found: list[tuple[ast.FunctionDef, ast.stmt, ast.expr]] = []
    for function, statement, node in program.body_nodes():
        if isinstance(node, ast.BinOp) and isinstance(node.op, _ARITHMETIC):
            found.append((function, statement, node))
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            numeric_constant = isinstance(value, ast.Constant) and type(value.value) in (int, float)
            numeric_name = isinstance(value, ast.Name) and value.id in program.numeric_terms(
                function
            )
            if numeric_constant or numeric_name:
                found.append((function, statement, value))
    return [(f, s, n) for f, s, n in found if "\n" not in program.segment(n)]


def add_term(program: Program, rng: random.Random) -> list[Edit]:
    places = [
        (f, node) for f, _s, node in _numeric_expressions(program) if program.numeric_terms(f)
    ]
    if not places:
        return []
    function, node = rng.choice(places)
    term = rng.choice(program.numeric_terms(function))
    weight = rng.choice([0.05, 0.1, 0.2, 0.3, 0.5])
    sign = rng.choice(["+", "+", "-"])
    start, end = program.span(node)
    text = f"({program.segment(node)} {sign} {weight} * {term})"
    return [Edit(start, end, text, f"add the term {sign} {weight} * {term}")]


def add_branch(program: Program, rng: random.Random) -> list[Edit]:
    places = []
    for function, statement, node in _numeric_expressions(program):
        decorated = (
            isinstance(statement, ast.FunctionDef | ast.ClassDef) and statement.decorator_list
        )
        if (
            program.parameter_terms(function)
            and statement.lineno != function.lineno
            and not decorated
        ):
            places.append((function, statement, node))
    if not places:
        return []
    function, statement, node = rng.choice(places)
    terms = program.parameter_terms(function)
    term = rng.choice(terms)
    constants = sorted(
        {
            float(n.value)
            for n in ast.walk(function)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, int | float)
            and not isinstance(n.value, bool)
            and n.value > 0
        }
    )
    others = [t for t in terms if t != term]
    if others and rng.random() < 0.5:
        threshold = rng.choice(others)  # compare two signals: "hits > evictions"
    else:
        threshold = _number(rng.choice(constants) if constants else 1.0)
    factor = _number(rng.choice([0.5, 0.75, 1.5, 2.0]))
    weight = _fresh_name(program)
    indent = program.indent_of(statement.lineno)
    inserted = (
        f"{indent}{weight} = 1.0\n"
        f"{indent}if {term} > {threshold}:\n"
        f"{indent}    {weight} = {factor}\n"
    )
    at = program.line_start(statement.lineno)
    start, end = program.span(node)
    label = f"reweight by {factor} when {term} > {threshold}"
    return [
        Edit(at, at, inserted, label),
        Edit(start, end, f"({program.segment(node)}) * {weight}", label),
    ]


def _fresh_name(program: Program) -> str:
    index = 1
    # No leading underscore: retune's allowlist refuses such names, as a sandbox should.
    while re.search(rf"\bw{index}\b", program.source):
        index += 1
    return f"w{index}"


# -- putting edits together --------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    """How bold a model's edits are."""

    min_edits: int
    max_edits: int
    structural: bool  # may add branches


SMALL_OPS: list[tuple[EditOp, float]] = [
    (perturb_constant, 0.5),
    (swap_operator, 0.2),
    (add_term, 0.3),
]
BOLD_OPS: list[tuple[EditOp, float]] = [*SMALL_OPS, (add_branch, 0.4)]


def mutate_source(
    source: str, style: Style, rng: random.Random, hints: Hints | None = None
) -> tuple[str, list[str]] | None:
    """``source`` with a few seeded edits, and what they were; ``None`` if nothing applies.

    Edits are made one after another, each on the program the previous one left, so a bold
    model can stack them (a term added inside a reweighted expression).
    """
    try:
        Program(source, hints)
    except SyntaxError:
        return None
    ops = BOLD_OPS if style.structural else SMALL_OPS
    wanted = rng.randint(style.min_edits, style.max_edits)
    current, labels = source, list[str]()
    first: list[EditOp] = [add_branch] if style.structural else []
    for _ in range(wanted * 4):
        if len(labels) >= wanted:
            break
        op = first.pop() if first else rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        edits = op(Program(current, hints), rng)
        new = _apply(current, edits)
        if edits and _valid_change(current, new):
            current = new
            labels.append(edits[0].label)
    return (current, labels) if labels else None


def _apply(source: str, edits: list[Edit]) -> str:
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        source = source[: edit.start] + edit.text + source[edit.end :]
    return source


def _valid_change(old: str, new: str) -> bool:
    try:
        return ast.dump(ast.parse(new)) != ast.dump(ast.parse(old))
    except SyntaxError:
        return False
