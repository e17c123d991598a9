"""The static allowlist every policy passes before it runs anywhere.

Policies are pure computation: they take what they need through their arguments and
return a value. The check is an allowlist over the syntax tree, so anything it does not
know is refused: imports other than ``math``, names and attributes starting with ``_``
(the way into interpreter internals), introspection builtins, generator/frame/traceback
attributes, ``str.format`` (it reads attributes by name), classes, ``global``, ``with``,
``async``, ``yield`` and decorators.

Decisions worth knowing:

- ``try``/``except`` is allowed, but each handler must name exceptions from
  :data:`SAFE_EXCEPTION_NAMES` (no bare ``except:``); ``raise`` of those is allowed too.
- The single name ``_`` (the usual throwaway variable) is allowed; every other name
  starting with ``_`` is not.
- Attributes may be read and called (``entry.size``, ``counts.get(k)``), never assigned or
  deleted: a policy returns its answer instead of writing it into the evaluator's objects.
- A builtin outside the safe set may still be used as a name if the policy binds it
  itself (``def f(type): ...``); at run time the builtins are the safe set only.

The check is also the first layer of a deeper defence: the harness runs the policy with
restricted builtins in a fresh, resource-limited process (see ``docs/sandbox.md``).
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

MAX_CODE_CHARS = 65_536
MAX_NODES = 20_000
MAX_DEPTH = 100

ALLOWED_MODULES = frozenset({"math"})

SAFE_BUILTIN_NAMES = frozenset(
    {
        "abs", "all", "any", "bool", "dict", "divmod", "enumerate", "filter", "float",
        "int", "len", "list", "map", "max", "min", "pow", "range", "reversed", "round",
        "set", "sorted", "str", "sum", "tuple", "zip",
    }
)  # fmt: skip

SAFE_EXCEPTION_NAMES = frozenset(
    {
        "ArithmeticError", "Exception", "IndexError", "KeyError", "LookupError",
        "OverflowError", "TypeError", "ValueError", "ZeroDivisionError",
    }
)  # fmt: skip

_WHY_PURE = "policies are pure computation; pass what you need through the function's arguments"

# Builtins refused with a specific reason; any other builtin gets the generic one.
_BUILTIN_REASONS = {
    **dict.fromkeys(
        ("exec", "eval", "compile", "__import__"),
        "policies cannot run generated code; write the computation directly",
    ),
    **dict.fromkeys(("open",), "policies cannot touch files; " + _WHY_PURE),
    **dict.fromkeys(
        (
            "getattr", "setattr", "delattr", "hasattr", "globals", "locals", "vars",
            "dir", "type", "object", "super", "id", "isinstance", "issubclass",
            "classmethod", "staticmethod", "property", "memoryview", "callable",
        ),
        "introspection can reach interpreter internals; use plain attribute access "
        "(obj.name) and the values you are given",
    ),  # fmt: skip
    **dict.fromkeys(
        ("print", "input", "breakpoint", "help", "exit", "quit"),
        "policies have no console; return values and let the evaluator report them",
    ),
}

# Attributes that lead from ordinary objects to frames, code or globals.
_DENIED_ATTRIBUTES = {
    "format": "format strings can read any attribute of their arguments; "
    "use an f-string or '+' instead",
    "format_map": "format strings can read any attribute of their arguments; "
    "use an f-string or '+' instead",
    "mro": "introspection of classes is not allowed; use the values you are given",
    "f_back": "frames are interpreter internals",
    "f_builtins": "frames are interpreter internals",
    "f_code": "frames are interpreter internals",
    "f_globals": "frames are interpreter internals",
    "f_locals": "frames are interpreter internals",
}
_DENIED_ATTRIBUTE_PREFIXES = ("gi_", "cr_", "ag_", "tb_", "co_")

_REFUSED_STATEMENTS: dict[type[ast.AST], str] = {
    ast.ClassDef: "class definitions are not allowed: use functions, and dicts or tuples "
    "for data",
    ast.AsyncFunctionDef: "async code is not allowed: policies are plain functions",
    ast.AsyncFor: "async code is not allowed: policies are plain functions",
    ast.AsyncWith: "async code is not allowed: policies are plain functions",
    ast.Await: "async code is not allowed: policies are plain functions",
    ast.With: "with-statements are not allowed: policies hold no resources (files, locks)",
    ast.Global: "'global' is not allowed: policies keep no state between calls; return "
    "the value instead",
    ast.Nonlocal: "'nonlocal' is not allowed: return the value from the inner function "
    "instead",
    ast.Yield: "generators (yield) are not allowed: build and return a list instead",
    ast.YieldFrom: "generators (yield from) are not allowed: build and return a list "
    "instead",
    ast.Match: "match statements are not supported: use if/elif",
    ast.TryStar: "except* is not supported: use a plain except clause",
}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Module, ast.FunctionDef, ast.Return, ast.Delete, ast.Assign, ast.AugAssign,
    ast.AnnAssign, ast.For, ast.While, ast.If, ast.Raise, ast.Try, ast.ExceptHandler,
    ast.Assert, ast.Import, ast.ImportFrom, ast.alias, ast.Expr, ast.Pass, ast.Break,
    ast.Continue, ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp,
    ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp,
    ast.Compare, ast.Call, ast.FormattedValue, ast.JoinedStr, ast.Constant, ast.Attribute,
    ast.Subscript, ast.Starred, ast.Name, ast.List, ast.Tuple, ast.Slice, ast.comprehension,
    ast.arguments, ast.arg, ast.keyword, ast.expr_context, ast.boolop, ast.operator,
    ast.unaryop, ast.cmpop,
)  # fmt: skip


@dataclass(frozen=True)
class Rejection:
    """One reason a policy was refused, with where it is (1-based line, 0-based column)."""

    line: int
    col: int
    reason: str
    syntax: bool = False  # the program does not parse at all

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def check_policy(code: str, entrypoint: str) -> list[Rejection]:
    """Check a policy against the allowlist; an empty list means it may run.

    ``entrypoint`` is the name of the top-level function the workload calls.
    """
    if len(code) > MAX_CODE_CHARS:
        return [_at(None, f"the policy is {len(code)} characters long; the limit is "
                          f"{MAX_CODE_CHARS}: keep policies small")]  # fmt: skip
    try:
        tree = ast.parse(code, filename="<policy>", mode="exec")
    except SyntaxError as exc:
        line, col = exc.lineno or 1, max((exc.offset or 1) - 1, 0)
        return [Rejection(line, col, f"syntax error: {exc.msg}", syntax=True)]
    except (ValueError, MemoryError, RecursionError) as exc:
        return [Rejection(1, 0, f"syntax error: {exc or 'the program is too complex'}", True)]
    size = _size_problem(tree)
    if size is not None:
        return [size]
    rejections = _check_module_level(tree, entrypoint)
    bound = _bound_names(tree)
    for node in ast.walk(tree):
        rejections.extend(_check_node(node, bound))
    return sorted(set(rejections), key=lambda r: (r.line, r.col, r.reason))


def _at(node: ast.AST | None, reason: str) -> Rejection:
    return Rejection(getattr(node, "lineno", 1), getattr(node, "col_offset", 0), reason)


def _size_problem(tree: ast.Module) -> Rejection | None:
    """Count nodes and depth without recursion, so a hostile tree cannot blow the stack."""
    count, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            return _at(None, f"the policy has more than {MAX_NODES} syntax nodes: keep "
                             "policies small")  # fmt: skip
        if depth > MAX_DEPTH:
            return _at(node, f"the code is nested more than {MAX_DEPTH} levels deep: split "
                             "it into helper functions")  # fmt: skip
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


def _check_module_level(tree: ast.Module, entrypoint: str) -> list[Rejection]:
    out: list[Rejection] = []
    found = False
    for index, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef):
            found = found or stmt.name == entrypoint
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if not all(_is_plain_target(t) for t in targets):
                out.append(_at(stmt, "module-level assignments must bind plain names "
                                     "(constants such as WEIGHT = 0.5)"))  # fmt: skip
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if entrypoint in names:
                out.append(_at(stmt, f"the entrypoint '{entrypoint}' must be a top-level "
                                     f"'def {entrypoint}(...)', not an assignment"))  # fmt: skip
        elif isinstance(stmt, ast.Expr) and index == 0 and isinstance(stmt.value, ast.Constant):
            continue  # module docstring
        elif not isinstance(stmt, ast.Import | ast.ImportFrom | *_REFUSED_STATEMENTS):
            out.append(_at(stmt, "module-level code must be 'import math', function "
                                 "definitions and constants: move this into a function"))  # fmt: skip
    if not found:
        out.append(_at(None, f"the entrypoint '{entrypoint}' is not defined: define it as a "
                             f"top-level function, 'def {entrypoint}(...):'"))  # fmt: skip
    # Imports anywhere but at module level are refused in _check_node.
    return out


def _is_plain_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, ast.Tuple | ast.List) and all(
        _is_plain_target(t) for t in target.elts
    )


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the policy binds itself (arguments, assignments, defs, imports, ...)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def _check_node(node: ast.AST, bound: set[str]) -> list[Rejection]:
    refused = _REFUSED_STATEMENTS.get(type(node))
    if refused is not None:
        return [_at(node, refused)]
    if not isinstance(node, _ALLOWED_NODES):
        return [_at(node, f"{type(node).__name__} is not allowed in a policy")]
    if isinstance(node, ast.Name):
        return _check_name(node, node.id, bound)
    if isinstance(node, ast.Attribute):
        return _check_attribute(node)
    if isinstance(node, ast.Import | ast.ImportFrom):
        return _check_import(node)
    if isinstance(node, ast.FunctionDef):
        found = _check_identifier(node, node.name)
        if node.decorator_list:
            found.append(_at(node, "decorators are not allowed: call the helper function "
                                   "explicitly"))  # fmt: skip
        return found
    if isinstance(node, ast.arg):
        return _check_identifier(node, node.arg)
    if isinstance(node, ast.keyword) and node.arg is not None:
        return _check_identifier(node, node.arg)
    if isinstance(node, ast.ExceptHandler):
        return _check_handler(node)
    if isinstance(node, ast.Delete):
        return [_at(t, "only local names and items can be deleted") for t in node.targets
                if not isinstance(t, ast.Name | ast.Subscript)]  # fmt: skip
    return []


def _check_identifier(node: ast.AST, name: str) -> list[Rejection]:
    if name.startswith("_") and name != "_":
        return [_at(node, f"name '{name}' is not allowed: names starting with '_' are "
                          "reserved for interpreter internals; rename it")]  # fmt: skip
    return []


def _check_name(node: ast.Name, name: str, bound: set[str]) -> list[Rejection]:
    found = _check_identifier(node, name)
    if found or name in bound or name in SAFE_BUILTIN_NAMES or name in SAFE_EXCEPTION_NAMES:
        return found
    if name in _BUILTIN_REASONS:
        return [_at(node, f"'{name}' is not allowed: {_BUILTIN_REASONS[name]}")]
    if hasattr(builtins, name):
        return [_at(node, f"'{name}' is not available to policies: the builtins are "
                          f"{', '.join(sorted(SAFE_BUILTIN_NAMES))}, the exceptions "
                          f"{', '.join(sorted(SAFE_EXCEPTION_NAMES))}, and 'math'")]  # fmt: skip
    return []  # an unknown name fails at run time with a NameError the user can read


def _check_attribute(node: ast.Attribute) -> list[Rejection]:
    name = node.attr
    if name.startswith("_"):
        return [_at(node, f"attribute '{name}' is not allowed: attributes starting with '_' "
                          "reach interpreter internals; use the object's public "
                          "attributes")]  # fmt: skip
    reason = _DENIED_ATTRIBUTES.get(name)
    if reason is None and name.startswith(_DENIED_ATTRIBUTE_PREFIXES):
        reason = "generators, coroutines, tracebacks and code objects are interpreter internals"
    if reason is not None:
        return [_at(node, f"attribute '.{name}' is not allowed: {reason}")]
    if not isinstance(node.ctx, ast.Load):
        return [_at(node, f"assigning to or deleting attribute '{name}' is not allowed: "
                          "policies must not change the objects they are given; return "
                          "the value instead")]  # fmt: skip
    return []


def _check_import(node: ast.Import | ast.ImportFrom) -> list[Rejection]:
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level or module not in ALLOWED_MODULES:
            return [_import_refused(node, "." * node.level + module)]
        return [_at(node, "'from math import *' is not allowed: name the functions you use")
                if alias.name == "*" else r
                for alias in node.names
                for r in (_check_identifier(node, alias.name) or [None])
                if alias.name == "*" or r is not None]  # fmt: skip
    return [_import_refused(node, a.name) for a in node.names if a.name not in ALLOWED_MODULES]


def _import_refused(node: ast.AST, module: str) -> Rejection:
    return _at(node, f"import of '{module}' is not allowed: {_WHY_PURE} (only 'import math' "
                     "is available)")  # fmt: skip


def _check_handler(node: ast.ExceptHandler) -> list[Rejection]:
    if node.type is None:
        return [_at(node, "a bare 'except:' is not allowed: name the exception you expect, "
                          "e.g. 'except ZeroDivisionError:'")]  # fmt: skip
    kinds = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
    if all(isinstance(k, ast.Name) and k.id in SAFE_EXCEPTION_NAMES for k in kinds):
        return []
    return [_at(node, "except clauses may name only "
                      f"{', '.join(sorted(SAFE_EXCEPTION_NAMES))}")]  # fmt: skip
