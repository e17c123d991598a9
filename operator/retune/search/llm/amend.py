"""What a model's program needs before the evaluator sees it: mended where that is safe,
refused with the exact problem where it is not.

Mended (the model's intent is plain and nothing it wrote is lost):

* an import of a module the allowlist refuses, which the program never uses, is dropped
  (models add ``import heapq`` "just in case");
* an answer that holds only the functions it changed, using constants or helpers that
  only the program being changed defines, is merged into that program: its definitions
  replace the same-named ones, the rest of the program stays.

Refused, with the reason a repair round hands back to the model: anything the sandbox's
allowlist refuses (the allowlist's own message, with its line), and a call to a name the
program never defines (it would only fail at run time, after an evaluation was paid for).
"""

from __future__ import annotations

import ast
import builtins

from retune.evaluate import syntax
from retune.evaluate.allowlist import (
    ALLOWED_MODULES,
    SAFE_BUILTIN_NAMES,
    SAFE_EXCEPTION_NAMES,
    check_policy,
)


def drop_unused_foreign_imports(code: str) -> str:
    """``code`` without top-level imports of refused modules whose names it never uses."""
    try:
        tree = syntax.parse(code)
    except (SyntaxError, ValueError):
        return code
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {_root(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    drop: set[int] = set()
    for stmt in tree.body:
        if not isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        modules = (
            [a.name for a in stmt.names] if isinstance(stmt, ast.Import) else [stmt.module or ""]
        )
        if all(m in ALLOWED_MODULES for m in modules):
            continue
        bound = {(a.asname or a.name).split(".")[0] for a in stmt.names}
        if not bound & used and stmt.end_lineno is not None:
            drop.update(range(stmt.lineno, stmt.end_lineno + 1))
    if not drop:
        return code
    lines = code.split("\n")
    return "\n".join(line for number, line in enumerate(lines, 1) if number not in drop)


def merge_fragment(fragment: str, parent_code: str, entrypoint: str) -> str | None:
    """``parent_code`` with the top-level definitions of ``fragment`` put in place of its
    own, if ``fragment`` is a piece of it: it uses names only the parent defines, or it
    redefines the parent's helpers without the entrypoint (an answer that holds just the
    changed functions). Else ``None``."""
    try:
        piece, whole = syntax.parse(fragment), syntax.parse(parent_code)
    except (SyntaxError, ValueError):
        return None
    parent_names = _top_level_names(whole)
    missing = undefined_names(piece)
    own = _top_level_names(piece)
    uses_parent = bool(missing) and missing <= parent_names
    helpers_only = entrypoint not in own and entrypoint in parent_names and own & parent_names
    if not (uses_parent or helpers_only):
        return None
    replaced: dict[str, ast.stmt] = {}
    extra: list[ast.stmt] = []
    for stmt in piece.body:
        names = _defined_by(stmt)
        if names and names <= parent_names:
            for name in names:
                replaced[name] = stmt
        elif not isinstance(stmt, ast.Expr):  # a stray docstring is not worth keeping
            extra.append(stmt)
    if not replaced:
        return None
    lines = parent_code.rstrip("\n").split("\n")
    out: list[str] = []
    emitted: set[int] = set()
    cursor = 1
    for stmt in whole.body:
        start, end = _span(stmt)
        out.extend(lines[cursor - 1 : start - 1])
        cursor = end + 1
        names = _defined_by(stmt)
        new = next((replaced[n] for n in sorted(names) if n in replaced), None)
        if new is None:
            out.extend(lines[start - 1 : end])
        elif id(new) not in emitted:
            emitted.add(id(new))
            out.extend(_source(fragment, new))
    out.extend(lines[cursor - 1 :])
    for stmt in extra:
        out.extend(["", *_source(fragment, stmt)])
    return "\n".join(out) + "\n"


def refusal(code: str, entrypoint: str) -> str | None:
    """Why the sandbox would refuse ``code`` or it would fail on an undefined name, as a
    failure (``"refused: ..."``, ``"undefined: ..."``); ``None`` if neither."""
    rejections = [r for r in check_policy(code, entrypoint) if not r.syntax]
    if rejections:
        shown = "; ".join(str(r) for r in rejections[:3])
        more = f" (and {len(rejections) - 3} more)" if len(rejections) > 3 else ""
        return f"refused: the sandbox's allowlist refuses the program: {shown}{more}"
    missing = undefined_names(syntax.parse(code))
    if missing:
        names = ", ".join(f"`{name}`" for name in sorted(missing))
        return (
            f"undefined: the program uses {names} but never defines it; define every helper "
            "in the program itself"
        )
    return None


def undefined_names(tree: ast.Module) -> set[str]:
    """Names read in ``tree`` that nothing binds and that are no builtin a policy has."""
    bound: set[str] = set()
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    known = bound | SAFE_BUILTIN_NAMES | SAFE_EXCEPTION_NAMES
    # Other builtins get the allowlist's own, more specific message.
    return {name for name in loaded - known if not hasattr(builtins, name)}


def _top_level_names(tree: ast.Module) -> set[str]:
    return {name for stmt in tree.body for name in _defined_by(stmt)}


def _defined_by(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    if isinstance(stmt, ast.Assign | ast.AnnAssign):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    return set()


def _span(stmt: ast.stmt) -> tuple[int, int]:
    start = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
    return start, stmt.end_lineno or stmt.lineno


def _source(code: str, stmt: ast.stmt) -> list[str]:
    start, end = _span(stmt)
    return code.split("\n")[start - 1 : end]


def _root(node: ast.Attribute) -> str:
    value: ast.expr = node
    while isinstance(value, ast.Attribute):
        value = value.value
    return value.id if isinstance(value, ast.Name) else ""
