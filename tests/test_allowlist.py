"""The static allowlist: reasonable heuristic code passes, every escape hatch is refused
with a reason the author can act on, and the loader runs policies on restricted builtins."""

from __future__ import annotations

import textwrap

import pytest

from retune.evaluate.allowlist import MAX_CODE_CHARS, MAX_NODES, check_policy
from retune.evaluate.loader import PolicyRejected, compile_policy

HEURISTIC = '''
"""Evict the entry with the lowest value density."""
import math
from math import log as ln, sqrt

WEIGHT = 0.5
BANDS = ((0, 1.0), (10, 0.5))


def density(entry, now):
    age = max(now - entry.last_access, 1)
    return entry.hits * WEIGHT / age + ln(entry.size + 1) - sqrt(age)


def choose(entries, now, _=None):
    best, best_score = None, math.inf
    for index, entry in enumerate(entries):
        try:
            score = density(entry, now)
        except (ZeroDivisionError, OverflowError):
            score = 0.0
        if score < best_score:
            best, best_score = index, score
    counts = {}
    for entry in entries:
        counts[entry.kind] = counts.get(entry.kind, 0) + 1
    ranked = sorted(entries, key=lambda e: (-e.hits, e.size))
    total = sum(e.size for e in ranked if e.size > 0)
    label = f"{best!r}:{best_score:.2f}/{total}"
    while total > 100 and (half := total // 2):
        total = half
    assert best is not None, label
    del counts["x"]
    return best if best is not None else 0
'''


def reasons(code: str, entrypoint: str = "choose") -> list[str]:
    return [str(r) for r in check_policy(textwrap.dedent(code), entrypoint)]


def test_reasonable_heuristic_code_passes() -> None:
    assert reasons(HEURISTIC) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import os", "line 1: import of 'os' is not allowed: policies are pure computation"),
        ("from os import path", "import of 'os' is not allowed"),
        ("import math.os", "import of 'math.os' is not allowed"),
        ("from math import *", "'from math import *' is not allowed"),
        ("from math import _private", "name '_private' is not allowed"),
        ("from . import sibling", "import of '.' is not allowed"),
        ("x = (1).__class__", "attribute '__class__' is not allowed"),
        ("x = WEIGHTS._cache", "attribute '_cache' is not allowed"),
        ("_hidden = 1", "name '_hidden' is not allowed"),
        ("x = __builtins__", "name '__builtins__' is not allowed"),
        ("x = '{0.__class__}'.format(1)", "attribute '.format' is not allowed"),
        ("x = '{a}'.format_map({})", "attribute '.format_map' is not allowed"),
        ("x = (i for i in ()).gi_frame", "attribute '.gi_frame' is not allowed"),
        ("x = int.mro()", "attribute '.mro' is not allowed"),
        ("class Box: pass", "class definitions are not allowed"),
        ("async def f(): pass", "async code is not allowed"),
        ("with x: pass", "with-statements are not allowed"),
        ("match x:\n    case 1: pass", "match statements are not supported"),
        ("if True: pass", "module-level code must be 'import math', function definitions"),
        ("WEIGHTS[0] = 1", "module-level assignments must bind plain names"),
    ],
)
def test_module_level_escapes_are_refused(code: str, expected: str) -> None:
    found = reasons(code + "\ndef choose(x):\n    return x\n")
    assert any(expected in r for r in found), found


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("import math", "imports belong at the top of the policy"),
        ("global G", "'global' is not allowed"),
        ("def g():\n        nonlocal x", "'nonlocal' is not allowed"),
        ("yield x", "generators (yield) are not allowed"),
        ("return eval('1')", "'eval' is not allowed: policies cannot run generated code"),
        ("exec('x = 1')", "'exec' is not allowed"),
        ("compile('1', 'f', 'eval')", "'compile' is not allowed"),
        ("open('/etc/passwd')", "'open' is not allowed: policies cannot touch files"),
        ("getattr(x, 'a')", "'getattr' is not allowed: introspection"),
        ("setattr(x, 'a', 1)", "'setattr' is not allowed"),
        ("globals()", "'globals' is not allowed"),
        ("vars(x)", "'vars' is not allowed"),
        ("type(x)", "'type' is not allowed"),
        ("isinstance(x, int)", "'isinstance' is not allowed"),
        ("print(x)", "'print' is not allowed: policies have no console"),
        ("breakpoint()", "'breakpoint' is not allowed"),
        ("bytearray(10)", "'bytearray' is not available to policies"),
        ("raise SystemExit(1)", "'SystemExit' is not available to policies"),
        ("x.size = 1", "assigning to or deleting attribute 'size' is not allowed"),
        ("del x.size", "assigning to or deleting attribute 'size' is not allowed"),
        ("try:\n        pass\n    except:\n        pass", "a bare 'except:' is not allowed"),
        ("try:\n        pass\n    except BaseException:\n        pass", "except clauses"),
        ("@staticmethod\n    def g(): pass", "decorators are not allowed"),
        ("def g(__x): pass", "name '__x' is not allowed"),
        ("return dict(__x=1)", "name '__x' is not allowed"),
        ("try:\n        pass\n    except* ValueError:\n        pass", "except* is not"),
    ],
)
def test_escapes_inside_the_entrypoint_are_refused(body: str, expected: str) -> None:
    found = reasons(f"def choose(x):\n    {body}\n")
    assert any(expected in r for r in found), found
    assert all(r.startswith("line ") for r in found)


def test_rejections_point_at_the_offending_line() -> None:
    code = "import math\n\ndef choose(x):\n    import os\n    return x\n"
    [rejection] = check_policy(code, "choose")
    assert (rejection.line, rejection.col) == (4, 4)
    assert str(rejection).startswith("line 4: imports belong at the top")


def test_the_entrypoint_must_be_a_top_level_def() -> None:
    assert reasons("def other(x):\n    return x\n") == [
        "line 1: the entrypoint 'choose' is not defined: define it as a top-level "
        "function, 'def choose(...):'"
    ]
    assert any("must be a top-level 'def'" in r for r in reasons("choose = lambda x: x\n"))


def test_shadowing_a_builtin_name_is_fine() -> None:
    assert reasons("def choose(type, id):\n    return type + id\n") == []


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (
            "def helper(getattr):\n    return getattr\ndef choose(x):\n    return getattr(x, 'a')",
            "getattr",
        ),
        ("def helper(type):\n    return type\ndef choose(x):\n    return type(x)", "type"),
        ("def choose(x):\n    f = lambda open: open\n    return open('/etc/hostname')", "open"),
        (
            "def choose(x):\n    y = [getattr for getattr in x]\n    return getattr(x, 'a')",
            "getattr",
        ),
        ("def choose(x):\n    return [1 for type in type(x)]", "type"),
        ("def choose(x, y=type):\n    type = 1\n    return y(x)", "type"),
        (
            "def choose(x):\n    def inner(open):\n        return open\n    return open('/f')",
            "open",
        ),
        (
            "def choose(x):\n    try:\n        pass\n    except ValueError as type:\n        pass\n"
            "    return x\ndef other(x):\n    return type(x)",
            "type",
        ),
    ],
)
def test_a_name_bound_in_one_scope_is_refused_in_another(code: str, name: str) -> None:
    found = reasons(code + "\n")
    assert any(f"'{name}' is not allowed" in r for r in found), found


@pytest.mark.parametrize(
    "code",
    [
        "type = 1\ndef choose(x):\n    return type + x",  # module level: visible everywhere
        "def choose(x):\n    type = 1\n    def inner(y):\n        return type + y\n    return inner(x)",
        "def choose(x):\n    return [type for type in x]",
        "def choose(x):\n    return [(open := y) for y in x] and open",  # := binds outside
        "def choose(x):\n    return (lambda open: open + 1)(x)",
    ],
)
def test_a_name_bound_in_an_enclosing_scope_may_be_used(code: str) -> None:
    assert reasons(code + "\n") == []


def test_syntax_errors_are_reported_as_such() -> None:
    [rejection] = check_policy("def choose(x:\n    return x\n", "choose")
    assert rejection.syntax and rejection.reason.startswith("syntax error")
    [nul] = check_policy("def choose(x):\n    return x\0\n", "choose")
    assert nul.syntax


def test_size_limits() -> None:
    too_long = "def choose(x):\n    return x\n" + "#" * MAX_CODE_CHARS
    assert "characters long" in check_policy(too_long, "choose")[0].reason
    many = "def choose(x):\n    return [" + "1," * MAX_NODES + "]\n"
    assert "syntax nodes" in check_policy(many, "choose")[0].reason
    deep = "def choose(x):\n    return " + "[" * 150 + "]" * 150 + "\n"
    assert "nested more than" in check_policy(deep, "choose")[0].reason
    chained = "def choose(x):\n    return x" + " + x" * 5000 + "\n"
    [rejection] = check_policy(chained, "choose")
    assert "nested" in rejection.reason


def test_loader_runs_policies_on_restricted_builtins() -> None:
    choose = compile_policy(HEURISTIC, "choose")
    assert "open" not in choose.__globals__["__builtins__"]
    assert choose.__globals__["math"].sqrt(4) == 2.0
    with pytest.raises(PolicyRejected) as refused:
        compile_policy("import os\ndef choose(x):\n    return x\n", "choose")
    assert "import of 'os' is not allowed" in str(refused.value)


def test_restricted_builtins_hold_even_without_the_allowlist() -> None:
    sneaky = "def choose(x):\n    return open('/etc/hostname').read()\n"
    with pytest.raises(NameError):
        compile_policy(sneaky, "choose", enforce_allowlist=False)(1)
    importer = "def choose(x):\n    import os\n    return os\n"
    with pytest.raises(ImportError):
        compile_policy(importer, "choose", enforce_allowlist=False)(1)
