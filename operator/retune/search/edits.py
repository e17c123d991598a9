"""The built-in mutator's edits of a policy's entrypoint, one function each.

Each edit changes the syntax tree of the entrypoint in place, drawing every choice from
the ``random.Random`` it is given, and says what it did (None: it found nothing to edit).
:data:`EDITS` are what every search uses; :data:`REFINE_EDITS` adds the conditional
bonus, dropping a clause and a conditional answer, which a search uses once it refines
(``search.explore``).
"""

from __future__ import annotations

import ast
import copy
import math
import random
from collections.abc import Callable

_ARITH_SWAPS: dict[type[ast.operator], list[type[ast.operator]]] = {
    ast.Add: [ast.Sub, ast.Mult],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.Div, ast.Add],
    ast.Div: [ast.Mult],
}
_COMPARE_SWAPS: dict[type[ast.cmpop], list[type[ast.cmpop]]] = {
    ast.Lt: [ast.LtE, ast.Gt],
    ast.LtE: [ast.Lt, ast.GtE],
    ast.Gt: [ast.GtE, ast.Lt],
    ast.GtE: [ast.Gt, ast.LtE],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
}


def find_function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def finish(child: ast.Module) -> str | None:
    """An edited tree as source (importing math if it now calls it); None if it does not
    compile."""
    if _uses_math(child) and not _imports_math(child):
        child.body.insert(0, ast.Import(names=[ast.alias(name="math")]))
    ast.fix_missing_locations(child)
    try:
        code = ast.unparse(child) + "\n"
        compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError):
        return None
    return code


def _uses_math(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "math"
        for n in ast.walk(tree)
    )


def _imports_math(tree: ast.Module) -> bool:
    return any(
        isinstance(n, ast.Import) and any(a.name == "math" and a.asname is None for a in n.names)
        for n in tree.body
    )


def nodes(function: ast.FunctionDef, kind: type | tuple[type, ...]) -> list[ast.AST]:
    return [n for n in ast.walk(function) if isinstance(n, kind)]


def numeric_terms(function: ast.FunctionDef) -> list[ast.expr]:
    """Names and attributes the program already does arithmetic or comparisons with."""
    seen: dict[str, ast.expr] = {}
    for node in ast.walk(function):
        operands: list[ast.expr] = []
        if isinstance(node, ast.BinOp):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in {"min", "max", "abs"}:
                operands = list(node.args)
        elif isinstance(node, ast.Return) and node.value is not None:
            operands = [node.value]
        for operand in operands:
            if isinstance(operand, ast.Name | ast.Attribute):
                seen.setdefault(ast.unparse(operand), operand)
    # Parameters are in scope even if unused so far.
    for arg in function.args.args:
        if arg.arg not in seen and not arg.arg.startswith("_"):
            seen[arg.arg] = ast.Name(id=arg.arg, ctx=ast.Load())
    return [seen[k] for k in sorted(seen)]


def numeric_expressions(function: ast.FunctionDef) -> list[ast.expr]:
    """Sites where an expression can be replaced by a larger one."""
    sites: list[ast.expr] = []
    for node in ast.walk(function):
        if isinstance(node, ast.BinOp):
            sites.append(node)
        elif isinstance(node, ast.Return) and node.value is not None:
            sites.append(node.value)
    return sites


def replace_expression(function: ast.FunctionDef, target: ast.AST, new: ast.expr) -> bool:
    for parent in ast.walk(function):
        for field, value in ast.iter_fields(parent):
            if value is target:
                setattr(parent, field, new)
                return True
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is target:
                        value[i] = new
                        return True
    return False


def _perturb_constant(function: ast.FunctionDef, rng: random.Random) -> str | None:
    constants = [
        n
        for n in nodes(function, ast.Constant)
        if isinstance(n, ast.Constant) and type(n.value) in (int, float)
    ]
    if not constants:
        return None
    node = rng.choice(constants)
    assert isinstance(node, ast.Constant)
    old = node.value
    assert isinstance(old, int | float)
    if isinstance(old, int) and rng.random() < 0.5:
        new: float = old + rng.choice([-2, -1, 1, 2])
    elif old == 0:
        new = round(rng.uniform(-1.0, 1.0), 4)
    else:
        new = round(old * math.exp(rng.gauss(0.0, 0.5)), 6)
    node.value = new
    return f"constant {old} -> {new}"


def _swap_operator(function: ast.FunctionDef, rng: random.Random) -> str | None:
    ops: list[ast.AST] = [
        n
        for n in nodes(function, ast.BinOp)
        if isinstance(n, ast.BinOp) and type(n.op) in _ARITH_SWAPS
    ]
    calls: list[ast.AST] = [
        n
        for n in nodes(function, ast.Call)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in {"min", "max"}
    ]
    choices: list[ast.AST] = ops + calls
    if not choices:
        return None
    node = rng.choice(choices)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        old_name = node.func.id
        node.func.id = "max" if old_name == "min" else "min"
        return f"{old_name} -> {node.func.id}"
    assert isinstance(node, ast.BinOp)
    new_op = rng.choice(_ARITH_SWAPS[type(node.op)])
    old = type(node.op).__name__
    node.op = new_op()
    return f"operator {old} -> {new_op.__name__}"


def _change_comparison(function: ast.FunctionDef, rng: random.Random) -> str | None:
    compares = [n for n in nodes(function, ast.Compare) if isinstance(n, ast.Compare)]
    if not compares:
        return None
    node = rng.choice(compares)
    i = rng.randrange(len(node.ops))
    swaps = _COMPARE_SWAPS.get(type(node.ops[i]))
    if not swaps:
        return None
    old = type(node.ops[i]).__name__
    node.ops[i] = rng.choice(swaps)()
    return f"comparison {old} -> {type(node.ops[i]).__name__}"


def _make_term(terms: list[ast.expr], rng: random.Random) -> ast.expr:
    base = copy.deepcopy(rng.choice(terms))
    shape = rng.random()
    if shape < 0.5:
        return base
    if shape < 0.7:  # a damped version of the value: log(1 + |x|)
        return _call("math.log1p", [_call("abs", [base])])
    if shape < 0.85:  # a ratio of two values the program uses
        other = copy.deepcopy(rng.choice(terms))
        denominator = ast.BinOp(ast.Constant(1.0), ast.Add(), _call("abs", [other]))
        return ast.BinOp(base, ast.Div(), denominator)
    return _call("math.sqrt", [_call("abs", [base])])


def _call(name: str, args: list[ast.expr]) -> ast.Call:
    func: ast.expr
    if "." in name:
        module, attr = name.split(".")
        func = ast.Attribute(value=ast.Name(id=module, ctx=ast.Load()), attr=attr, ctx=ast.Load())
    else:
        func = ast.Name(id=name, ctx=ast.Load())
    return ast.Call(func=func, args=args, keywords=[])


def _insert_term(function: ast.FunctionDef, rng: random.Random) -> str | None:
    sites = numeric_expressions(function)
    terms = numeric_terms(function)
    if not sites or not terms:
        return None
    site = rng.choice(sites)
    term = _make_term(terms, rng)
    weight = ast.Constant(round(rng.choice([1, -1]) * 10 ** rng.uniform(-2, 1), 4))
    scaled = ast.BinOp(weight, ast.Mult(), term)
    combined = ast.BinOp(copy.deepcopy(site), rng.choice([ast.Add, ast.Sub])(), scaled)
    if not replace_expression(function, site, combined):
        return None
    return f"insert term {ast.unparse(scaled)}"


def _remove_term(function: ast.FunctionDef, rng: random.Random) -> str | None:
    ops = [n for n in nodes(function, ast.BinOp) if isinstance(n, ast.BinOp)]
    if not ops:
        return None
    node = rng.choice(ops)
    keep = node.left if rng.random() < 0.5 else node.right
    if not replace_expression(function, node, keep):
        return None
    return f"remove term from {ast.unparse(node)[:60]}"


def _wrap_bound(function: ast.FunctionDef, rng: random.Random) -> str | None:
    sites = numeric_expressions(function)
    if not sites:
        return None
    site = rng.choice(sites)
    name = rng.choice(["min", "max"])
    limit = round(rng.uniform(-2.0, 10.0), 3)
    wrapped = _call(name, [copy.deepcopy(site), ast.Constant(limit)])
    if not replace_expression(function, site, wrapped):
        return None
    return f"bound with {name}(..., {limit})"


def _conditional_return(function: ast.FunctionDef, rng: random.Random) -> str | None:
    returns = [n for n in nodes(function, ast.Return) if isinstance(n, ast.Return) and n.value]
    terms = numeric_terms(function)
    if not returns or not terms:
        return None
    node = rng.choice(returns)
    assert node.value is not None
    condition = ast.Compare(
        left=copy.deepcopy(rng.choice(terms)),
        ops=[rng.choice([ast.Gt, ast.Lt])()],
        comparators=[ast.Constant(round(10 ** rng.uniform(-1, 3), 3))],
    )
    factor = ast.Constant(round(rng.uniform(0.2, 3.0), 3))
    alternative = ast.BinOp(copy.deepcopy(node.value), ast.Mult(), factor)
    node.value = ast.IfExp(test=condition, body=alternative, orelse=node.value)
    return f"conditional return on {ast.unparse(condition)}"


def _swap_branches(function: ast.FunctionDef, rng: random.Random) -> str | None:
    branches = [
        n for n in nodes(function, (ast.If, ast.IfExp)) if not isinstance(n, ast.If) or n.orelse
    ]
    if not branches:
        return None
    node = rng.choice(branches)
    assert isinstance(node, ast.If | ast.IfExp)
    # Swapping the branches under the same test inverts the decision.
    if isinstance(node, ast.If):
        node.body, node.orelse = node.orelse, node.body
    else:
        node.body, node.orelse = node.orelse, node.body
    return "swap branches"


def _conditional_bonus(function: ast.FunctionDef, rng: random.Random) -> str | None:
    """``return v`` -> ``return v + bonus if term > t else v``: a step added for one
    class of inputs (objects accessed more than once, say), the shape of most hand-written
    rules. Thresholds between small integers come up half the time, as counts are common
    arguments and a threshold no input crosses changes nothing."""
    returns = [n for n in nodes(function, ast.Return) if isinstance(n, ast.Return) and n.value]
    terms = numeric_terms(function)
    if not returns or not terms:
        return None
    node = rng.choice(returns)
    assert node.value is not None
    if rng.random() < 0.5:
        threshold = rng.choice([0.5, 1.5, 2.5, 4.5])
    else:
        threshold = round(10 ** rng.uniform(-1, 3), 3)
    condition = ast.Compare(
        left=copy.deepcopy(rng.choice(terms)),
        ops=[rng.choice([ast.Gt, ast.Lt])()],
        comparators=[ast.Constant(threshold)],
    )
    amount = round(10 ** rng.uniform(0, 3.5), 3)
    shifted = ast.BinOp(
        copy.deepcopy(node.value), rng.choice([ast.Add, ast.Sub])(), ast.Constant(amount)
    )
    node.value = ast.IfExp(test=condition, body=shifted, orelse=node.value)
    sign = "+" if isinstance(shifted.op, ast.Add) else "-"
    return f"conditional bonus {sign}{amount} on {ast.unparse(condition)}"


def _drop_operand(function: ast.FunctionDef, rng: random.Random) -> str | None:
    """``a or b`` -> ``b`` (or ``a``): a clause dropped from a condition. Often it never
    decided anything, and the smaller program is what a second edit builds on."""
    bools = [n for n in nodes(function, ast.BoolOp) if isinstance(n, ast.BoolOp)]
    if not bools:
        return None
    node = rng.choice(bools)
    assert isinstance(node, ast.BoolOp)
    dropped = node.values.pop(rng.randrange(len(node.values)))
    if len(node.values) == 1 and not replace_expression(function, node, node.values[0]):
        return None
    return f"drop clause {ast.unparse(dropped)[:60]}"


def _conditional_answer(function: ast.FunctionDef, rng: random.Random) -> str | None:
    """``return a`` -> ``return b if term < t else a``, where ``a`` and ``b`` are two of
    the constants the function returns: for policies whose answer is a choice (run
    nothing, spot, on-demand), another choice under a threshold."""
    returns = [
        n
        for n in nodes(function, ast.Return)
        if isinstance(n, ast.Return) and isinstance(n.value, ast.Constant)
    ]
    answers = sorted({repr(n.value.value) for n in returns if isinstance(n.value, ast.Constant)})
    terms = numeric_terms(function)
    if len(answers) < 2 or not terms:
        return None
    node = rng.choice(returns)
    assert isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)
    others = [a for a in answers if a != repr(node.value.value)]
    other = ast.literal_eval(rng.choice(others))
    condition = ast.Compare(
        left=copy.deepcopy(rng.choice(terms)),
        ops=[rng.choice([ast.Gt, ast.Lt])()],
        comparators=[ast.Constant(round(10 ** rng.uniform(-1, 2), 3))],
    )
    node.value = ast.IfExp(test=condition, body=ast.Constant(other), orelse=node.value)
    return f"answer {other!r} on {ast.unparse(condition)}"


Edit = Callable[[ast.FunctionDef, random.Random], str | None]

# Drawn from uniformly (a repeated edit is drawn more often).
EDITS: list[Edit] = [
    _perturb_constant,
    _perturb_constant,
    _perturb_constant,
    _swap_operator,
    _change_comparison,
    _insert_term,
    _insert_term,
    _insert_term,
    _remove_term,
    _wrap_bound,
    _conditional_return,
    _swap_branches,
]
# Once a search refines (past ``search.explore``), the conditional bonus, dropping a
# clause and a conditional answer join the edits.
REFINE_EDITS: list[Edit] = [
    *EDITS,
    _conditional_bonus,
    _drop_operand,
    _drop_operand,
    _conditional_answer,
    _conditional_answer,
    _conditional_answer,
]
