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
- A builtin outside the safe set may still be used as a name where the policy binds it
  itself (``def f(type): ...``), per scope as Python resolves names: a parameter called
  ``type`` in one function does not let ``type`` through in another. At run time the
  builtins are the safe set only.

The check is also the first layer of a deeper defence: the harness runs the policy with
restricted builtins in a fresh, resource-limited process (see ``docs/sandbox.md``).
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

from retune.evaluate import syntax

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
    "open": "policies cannot touch files; pass what you need through the function's arguments",
    **dict.fromkeys(
        (
            "getattr",
            "setattr",
            "delattr",
            "hasattr",
            "globals",
            "locals",
            "vars",
            "dir",
            "type",
            "object",
            "super",
            "id",
            "isinstance",
            "issubclass",
            "classmethod",
            "staticmethod",
            "property",
            "memoryview",
            "callable",
        ),
        "introspection can reach interpreter internals; use plain attribute access "
        "(obj.name) and the values you are given",
    ),
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
    ast.ClassDef: "class definitions are not allowed: use functions, and dicts or tuples for data",
    ast.AsyncFunctionDef: "async code is not allowed: policies are plain functions",
    ast.AsyncFor: "async code is not allowed: policies are plain functions",
    ast.AsyncWith: "async code is not allowed: policies are plain functions",
    ast.Await: "async code is not allowed: policies are plain functions",
    ast.With: "with-statements are not allowed: policies hold no resources (files, locks)",
    ast.Global: "'global' is not allowed: policies keep no state between calls; return "
    "the value instead",
    ast.Nonlocal: "'nonlocal' is not allowed: return the value from the inner function instead",
    ast.Yield: "generators (yield) are not allowed: build and return a list instead",
    ast.YieldFrom: "generators (yield from) are not allowed: build and return a list instead",
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

    ``entrypoint`` is the name of the top-level function the workload calls. Rejections
    come sorted by position; a syntax error is reported alone, with ``syntax=True``.
    """
    if len(code) > MAX_CODE_CHARS:
        reason = f"the policy is {len(code)} characters long; the limit is {MAX_CODE_CHARS}"
        return [Rejection(1, 0, reason)]
    try:
        tree = syntax.parse(code, filename="<policy>")
    except SyntaxError as exc:
        line, col = exc.lineno or 1, max((exc.offset or 1) - 1, 0)
        return [Rejection(line, col, f"syntax error: {exc.msg}", syntax=True)]
    except ValueError as exc:  # e.g. null bytes in the source
        return [Rejection(1, 0, f"syntax error: {exc}", syntax=True)]
    except (MemoryError, RecursionError):
        reason = "the code is nested too deeply to parse: split it into helper functions"
        return [Rejection(1, 0, reason, syntax=True)]
    nodes = _flatten(tree)
    if isinstance(nodes, Rejection):
        return [nodes]
    rejections = _check_module_level(tree, entrypoint)
    checker = _NodeChecker(tree)
    for node in nodes:
        rejections.extend(checker.check(node))
    return sorted(set(rejections), key=lambda r: (r.line, r.col, r.reason))


def _at(node: ast.AST | None, reason: str) -> Rejection:
    return Rejection(getattr(node, "lineno", 1), getattr(node, "col_offset", 0), reason)


def _flatten(tree: ast.Module) -> list[ast.AST] | Rejection:
    """All nodes, in one pass without recursion (a hostile tree cannot blow the stack),
    or the size limit it breaks."""
    nodes: list[ast.AST] = []
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        nodes.append(node)
        if len(nodes) > MAX_NODES:
            return _at(None, f"the policy has more than {MAX_NODES} syntax nodes; keep it small")
        if depth > MAX_DEPTH:
            reason = f"the code is nested more than {MAX_DEPTH} levels deep: split it up"
            return _at(node, reason)
        for field in node._fields:
            value = getattr(node, field, None)
            if isinstance(value, ast.AST):
                stack.append((value, depth + 1))
            elif isinstance(value, list):
                stack.extend((v, depth + 1) for v in value if isinstance(v, ast.AST))
    return nodes


_MODULE_LEVEL_OK = (ast.FunctionDef, ast.Import, ast.ImportFrom, *_REFUSED_STATEMENTS)


def _check_module_level(tree: ast.Module, entrypoint: str) -> list[Rejection]:
    out: list[Rejection] = []
    defined = False
    for index, stmt in enumerate(tree.body):
        if isinstance(stmt, ast.FunctionDef) and stmt.name == entrypoint:
            defined = True
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if not all(_is_plain_target(t) for t in targets):
                out.append(_at(stmt, "module-level assignments must bind plain names"))
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if entrypoint in names:
                reason = f"the entrypoint '{entrypoint}' must be a top-level 'def', not an "
                out.append(_at(stmt, reason + "assignment"))
        elif isinstance(stmt, ast.Expr) and index == 0 and isinstance(stmt.value, ast.Constant):
            continue  # the module docstring
        elif not isinstance(stmt, _MODULE_LEVEL_OK):
            reason = "module-level code must be 'import math', function definitions and "
            out.append(_at(stmt, reason + "constants (WEIGHT = 0.5): move this into a function"))
    if not defined:
        reason = f"the entrypoint '{entrypoint}' is not defined: define it as a top-level "
        out.append(_at(None, reason + f"function, 'def {entrypoint}(...):'"))
    return out


def _is_plain_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, ast.Tuple | ast.List) and all(map(_is_plain_target, target.elts))


class _Scope:
    """The names one function, lambda, comprehension or the module binds."""

    def __init__(self, parent: _Scope | None, comprehension: bool = False) -> None:
        self.parent = parent
        self.comprehension = comprehension
        self.names: set[str] = set()

    def binds(self, name: str) -> bool:
        """Whether ``name`` resolves to a binding of the policy's, here or enclosing."""
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return True
            scope = scope.parent
        return False

    def bind(self, name: str, walrus: bool = False) -> None:
        scope = self
        while walrus and scope.comprehension and scope.parent is not None:
            scope = scope.parent  # ':=' in a comprehension binds in the enclosing function
        scope.names.add(name)


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _scopes(tree: ast.Module) -> dict[int, _Scope]:
    """The scope each node is evaluated in, with the names every scope binds.

    Python's rules, as far as a policy can use them: parameters belong to their function
    or lambda, while defaults, annotations and decorators are evaluated outside it; a
    comprehension's targets are its own, its first iterable is evaluated outside it; ':='
    binds in the enclosing function. Iterative, like :func:`_flatten`.
    """
    where: dict[int, _Scope] = {}
    walrus_targets: set[int] = set()
    outer_iterables: set[int] = set()
    stack: list[tuple[ast.AST, _Scope]] = [(tree, _Scope(None))]
    while stack:
        node, scope = stack.pop()
        where[id(node)] = scope
        outer = scope.parent or scope
        if isinstance(node, ast.FunctionDef | ast.Lambda):
            inner = _Scope(scope)
            if isinstance(node, ast.FunctionDef):
                scope.bind(node.name)
                stack.extend((d, scope) for d in node.decorator_list)
                stack.extend((r, scope) for r in [node.returns] if r is not None)
                stack.extend((b, inner) for b in node.body)
            else:
                stack.append((node.body, inner))
            stack.append((node.args, inner))
            continue
        if isinstance(node, _COMPREHENSIONS):
            inner = _Scope(scope, comprehension=True)
            outer_iterables.add(id(node.generators[0].iter))
            stack.extend((child, inner) for child in ast.iter_child_nodes(node))
            continue
        if isinstance(node, ast.arguments):  # its scope is the function's
            for default in [*node.defaults, *node.kw_defaults]:
                if default is not None:
                    stack.append((default, outer))
            every = [*node.posonlyargs, *node.args, *node.kwonlyargs, node.vararg, node.kwarg]
            stack.extend((arg, scope) for arg in every if arg is not None)
            continue
        if isinstance(node, ast.arg):
            scope.bind(node.arg)
            stack.extend((a, outer) for a in [node.annotation] if a is not None)
            continue
        if isinstance(node, ast.comprehension):
            iter_scope = outer if id(node.iter) in outer_iterables else scope
            stack.append((node.iter, iter_scope))
            stack.extend((child, scope) for child in (node.target, *node.ifs))
            continue
        if isinstance(node, ast.NamedExpr):
            walrus_targets.add(id(node.target))
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            scope.bind(node.id, walrus=id(node) in walrus_targets)
        elif isinstance(node, ast.alias):
            scope.bind((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            scope.bind(node.name)
        stack.extend((child, scope) for child in ast.iter_child_nodes(node))
    return where


class _NodeChecker:
    """Per-node rules; needs to know the names each scope binds and the top-level imports."""

    def __init__(self, tree: ast.Module) -> None:
        self.top_level_imports = {
            id(s) for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)
        }
        self.scopes = _scopes(tree)

    def check(self, node: ast.AST) -> list[Rejection]:
        kind = type(node)
        if kind in _PLAIN_NODES:
            return []
        refused = _REFUSED_STATEMENTS.get(kind)
        if refused is not None:
            return [_at(node, refused)]
        if isinstance(node, _PARTS_OF_REFUSED):
            return []  # the statement they belong to is already refused
        if not isinstance(node, _ALLOWED_NODES):
            return [_at(node, f"{kind.__name__} is not allowed in a policy")]
        if isinstance(node, ast.Name):
            return _identifier(node, node.id) or self._name(node)
        if isinstance(node, ast.Attribute):
            return _attribute(node)
        if isinstance(node, ast.Import | ast.ImportFrom):
            return self._import(node)
        if isinstance(node, ast.FunctionDef):
            found = _identifier(node, node.name)
            if node.decorator_list:
                found.append(_at(node, "decorators are not allowed: call the helper directly"))
            return found
        if isinstance(node, ast.arg):
            return _identifier(node, node.arg)
        if isinstance(node, ast.keyword) and node.arg is not None:
            return _identifier(node, node.arg)
        if isinstance(node, ast.alias):
            return _identifier(node, node.name) or _identifier(node, node.asname or "")
        if isinstance(node, ast.ExceptHandler):
            return _handler(node)
        if isinstance(node, ast.Delete):
            reason = "only local names and items can be deleted"
            return [_at(t, reason) for t in node.targets if isinstance(t, ast.Attribute)]
        return []

    def _name(self, node: ast.Name) -> list[Rejection]:
        name = node.id
        if (
            self.scopes[id(node)].binds(name)
            or name in SAFE_BUILTIN_NAMES
            or name in SAFE_EXCEPTION_NAMES
        ):
            return []
        if name in _BUILTIN_REASONS:
            return [_at(node, f"'{name}' is not allowed: {_BUILTIN_REASONS[name]}")]
        if hasattr(builtins, name):
            return [_at(node, f"'{name}' is not available to policies: {_AVAILABLE}")]
        return []  # an unknown name fails at run time with a NameError the user can read

    def _import(self, node: ast.Import | ast.ImportFrom) -> list[Rejection]:
        if id(node) not in self.top_level_imports:
            return [_at(node, "imports belong at the top of the policy: 'import math'")]
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            modules = ["." * node.level + (node.module or "")]
            if any(a.name == "*" for a in node.names):
                return [_at(node, "'from math import *' is not allowed: name what you use")]
        return [
            _at(node, f"import of '{m}' is not allowed: {_WHY_PURE} (only 'math' is available)")
            for m in modules
            if m not in ALLOWED_MODULES
        ]


# Allowed nodes with no rule of their own: skipped by exact type, which is fast.
_PLAIN_NODES = frozenset(
    kind
    for base in (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)
    for kind in base.__subclasses__()
) | {
    ast.Module, ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.While,
    ast.If, ast.Raise, ast.Try, ast.Assert, ast.Expr, ast.Pass, ast.Break, ast.Continue,
    ast.BoolOp, ast.NamedExpr, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict,
    ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Compare,
    ast.Call, ast.FormattedValue, ast.JoinedStr, ast.Constant, ast.Subscript, ast.Starred,
    ast.List, ast.Tuple, ast.Slice, ast.comprehension, ast.arguments,
}  # fmt: skip

_PARTS_OF_REFUSED = (ast.withitem, ast.match_case, ast.pattern)

_AVAILABLE = (
    f"the builtins are {', '.join(sorted(SAFE_BUILTIN_NAMES))}; the exceptions are "
    f"{', '.join(sorted(SAFE_EXCEPTION_NAMES))}; and 'math'"
)


def _identifier(node: ast.AST, name: str) -> list[Rejection]:
    if name.startswith("_") and name != "_":
        reason = f"name '{name}' is not allowed: names starting with '_' are reserved for "
        return [_at(node, reason + "interpreter internals; rename it")]
    return []


def _attribute(node: ast.Attribute) -> list[Rejection]:
    name = node.attr
    if name.startswith("_"):
        reason = f"attribute '{name}' is not allowed: attributes starting with '_' reach "
        return [_at(node, reason + "interpreter internals; use the object's public attributes")]
    denied = _DENIED_ATTRIBUTES.get(name)
    if denied is None and name.startswith(_DENIED_ATTRIBUTE_PREFIXES):
        denied = "generators, coroutines, tracebacks and code objects are interpreter internals"
    if denied is not None:
        return [_at(node, f"attribute '.{name}' is not allowed: {denied}")]
    if not isinstance(node.ctx, ast.Load):
        reason = f"assigning to or deleting attribute '{name}' is not allowed: policies must "
        return [_at(node, reason + "not change the objects they are given; return a value")]
    return []


def _handler(node: ast.ExceptHandler) -> list[Rejection]:
    if node.type is None:
        reason = "a bare 'except:' is not allowed: name the exception you expect, e.g. "
        return [_at(node, reason + "'except ZeroDivisionError:'")]
    kinds = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
    if all(isinstance(k, ast.Name) and k.id in SAFE_EXCEPTION_NAMES for k in kinds):
        return []
    names = ", ".join(sorted(SAFE_EXCEPTION_NAMES))
    return [_at(node, f"except clauses may name only these exceptions: {names}")]
