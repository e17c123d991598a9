"""Programs as the engine sees them: normalised for dedup, measured for descriptors."""

from __future__ import annotations

import ast
import hashlib

from retune.evaluate import syntax

STRUCTURAL_FEATURES = ("loops", "branches", "depth", "math_ops", "calls", "size")


class _Normaliser(ast.NodeTransformer):
    """Drops what does not change behaviour: docstrings and local variable names."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def _strip_docstring(self, body: list[ast.stmt]) -> list[ast.stmt]:
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            return body[1:] or [ast.Pass()]
        return body

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = self._strip_docstring(node.body)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.body = self._strip_docstring(node.body)
        # Parameters keep their names (the caller may pass them by keyword); locals do not.
        params = {a.arg for a in node.args.args + node.args.kwonlyargs}
        assigned = {
            t.id
            for stmt in ast.walk(node)
            for t in ast.walk(stmt)
            if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store) and t.id not in params
        }
        for name in sorted(assigned):
            self._names.setdefault(name, f"v{len(self._names)}")
        self.generic_visit(node)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self._names:
            return ast.copy_location(ast.Name(id=self._names[node.id], ctx=node.ctx), node)
        return node


def normalised_hash(code: str) -> str:
    """A hash equal for programs that differ only in comments, layout, docstrings or
    local variable names. Code that does not parse hashes its raw text."""
    try:
        tree = _Normaliser().visit(syntax.parse(code))
        canonical = ast.dump(tree, annotate_fields=False, include_attributes=False)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # too deep for the parser
        canonical = "unparsed:" + code
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def structural_features(code: str) -> dict[str, float]:
    """Counts describing a program's shape, used as archive descriptors."""
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return dict.fromkeys(STRUCTURAL_FEATURES, 0.0)
    loops = branches = math_ops = calls = size = 0
    for node in ast.walk(tree):
        size += 1
        if isinstance(node, ast.For | ast.While | ast.comprehension):
            loops += 1
        elif isinstance(node, ast.If | ast.IfExp):
            branches += 1
        elif isinstance(node, ast.BoolOp):
            branches += len(node.values) - 1
        elif isinstance(node, ast.BinOp | ast.UnaryOp):
            math_ops += 1
        elif isinstance(node, ast.Call):
            calls += 1
            if isinstance(node.func, ast.Attribute | ast.Name) and _is_math_call(node.func):
                math_ops += 1
    return {
        "loops": float(loops),
        "branches": float(branches),
        "depth": float(_depth(tree)),
        "math_ops": float(math_ops),
        "calls": float(calls),
        "size": float(size),
    }


def program_size(code: str) -> int:
    """The number of syntax-tree nodes of ``code`` (0 if it does not parse): how large a
    program is, for preferring the smaller of two that score the same."""
    return int(structural_features(code)["size"])


def _is_math_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return isinstance(func.value, ast.Name) and func.value.id == "math"
    return isinstance(func, ast.Name) and func.id in {"min", "max", "abs", "pow", "round"}


def _depth(node: ast.AST, level: int = 0) -> int:
    """Nesting depth of compound statements and expressions."""
    children = list(ast.iter_child_nodes(node))
    if not children:
        return level
    nests = isinstance(node, ast.stmt | ast.BinOp | ast.Call | ast.IfExp | ast.BoolOp)
    return max(_depth(child, level + int(nests)) for child in children)
