"""Crossover: a term of another elite's entrypoint grafted into the parent's.

The built-in mutator's edits only recombine what the parent already computes; a term
another elite found useful (``return ... + access_count / (1 + size)``) reaches the parent
only by chance. Crossover takes one from an inspiration and adds it at one of the
parent's sites, or puts it in place of one of the parent's terms.
"""

from __future__ import annotations

import ast
import copy
import random

from retune.evaluate import syntax
from retune.search.edits import find_function, finish, numeric_expressions, replace_expression
from retune.search.mutation import Inspiration


def graft_term(
    tree: ast.Module, entrypoint: str, inspirations: list[Inspiration], rng: random.Random
) -> tuple[str, str] | None:
    """A copy of ``tree`` with a term of an inspiration's ``entrypoint`` added at one of
    its sites, or put in place of one of its terms, as (code, description); None when
    there is nothing to graft or nowhere to graft it."""
    inspiration = rng.choice(inspirations)
    try:
        donor = find_function(syntax.parse(inspiration.code), entrypoint)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    child = copy.deepcopy(tree)
    function = find_function(child, entrypoint)
    if function is None or donor is None:
        return None
    # Only terms that read nothing but the entrypoint's own arguments (and math) mean the
    # same in the parent as in the donor.
    arguments = {a.arg for a in function.args.args} | {"math"}
    terms = [
        node
        for node in ast.walk(donor)
        if isinstance(node, ast.BinOp | ast.Call | ast.IfExp)
        and {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} <= arguments
        and any(isinstance(n, ast.Name) and n.id != "math" for n in ast.walk(node))
    ]
    sites = numeric_expressions(function)
    if not terms or not sites:
        return None
    term = copy.deepcopy(rng.choice(terms))
    site = rng.choice(sites)
    if rng.random() < 0.5 and isinstance(site, ast.BinOp):
        setattr(site, rng.choice(["left", "right"]), term)
        described = f"crossover: {ast.unparse(term)[:60]} in place of a term"
    else:
        combined = ast.BinOp(copy.deepcopy(site), ast.Add(), term)
        if not replace_expression(function, site, combined):
            return None
        described = f"crossover: + {ast.unparse(term)[:60]}"
    code = finish(child)
    return (code, described) if code is not None else None
