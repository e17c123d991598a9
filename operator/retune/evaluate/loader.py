"""How an evaluator module and a policy are loaded.

Evaluators are trusted code written by the target's author; policies are not. An
evaluator loads the candidate it scores with::

    from retune.evaluate.loader import load_policy

    def evaluate(policy_path, profile, stage):
        choose = load_policy(policy_path)   # the entrypoint the target declares
        ...

:func:`load_policy` always checks the policy against the allowlist and runs it with
restricted builtins (the safe set, the safe exceptions, and an ``__import__`` that
yields only ``math``), so an evaluator cannot forget to. Inside the harness the policy
text is read before the candidate process drops its privileges, so the file's
permissions do not matter and the text cannot change under it.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import math
import os
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from retune.evaluate.allowlist import (
    ALLOWED_MODULES,
    SAFE_BUILTIN_NAMES,
    SAFE_EXCEPTION_NAMES,
    Rejection,
    check_policy,
)

# Compiling a policy needs every module the compiler imports lazily, imported here, in the
# trusted process, before a candidate's privileges drop: a non-ASCII identifier is
# NFKC-normalised through ``unicodedata``, which a confined candidate cannot import. Without
# it such a policy scored or failed depending on what its worker had run before.
_COMPILER_NEEDS = (unicodedata,)


class PolicyRejected(Exception):
    """The policy failed the allowlist (or does not parse); ``rejections`` says where."""

    def __init__(self, rejections: list[Rejection]) -> None:
        self.rejections = rejections
        self.syntax = any(r.syntax for r in rejections)
        super().__init__("; ".join(str(r) for r in rejections[:10]))


class EvaluatorLoadError(Exception):
    """The evaluator module cannot be imported or has no ``evaluate`` function."""


@dataclass
class _ActivePolicy:
    """The candidate the harness is running in this process (set only in candidates).

    The harness has already checked ``code`` against the allowlist (unless the escape
    tests told it not to), so loading it again skips a second, identical check.
    """

    path: str
    code: str
    entrypoint: str


_active: _ActivePolicy | None = None


def activate(path: str, code: str, entrypoint: str) -> None:
    """Harness-only: pin the candidate's checked text and entrypoint in its process."""
    global _active
    _active = _ActivePolicy(os.path.abspath(path), code, entrypoint)


def load_policy(policy_path: str | os.PathLike[str], entrypoint: str | None = None) -> Any:
    """Load a policy file and return its entrypoint function, sandboxed.

    ``entrypoint`` defaults to the one declared for the candidate being evaluated. The
    policy is checked against the allowlist and runs with restricted builtins; raises
    :class:`PolicyRejected` if the allowlist refuses it.
    """
    path = os.path.abspath(os.fspath(policy_path))
    name = entrypoint or (_active.entrypoint if _active is not None else None)
    if name is None:
        raise ValueError("load_policy needs the entrypoint name outside the harness")
    if _active is not None and _active.path == path:
        return compile_policy(_active.code, name, filename=path, enforce_allowlist=False)
    code = Path(path).read_text(encoding="utf-8")
    return compile_policy(code, name, filename=path)


def compile_policy(
    code: str, entrypoint: str, *, filename: str = "<policy>", enforce_allowlist: bool = True
) -> Any:
    """Check ``code``, run it with restricted builtins and return its entrypoint."""
    if enforce_allowlist:
        rejections = check_policy(code, entrypoint)
        if rejections:
            raise PolicyRejected(rejections)
    namespace: dict[str, Any] = {
        "__builtins__": restricted_builtins(),
        "__name__": "retune_policy",
        "math": math,
    }
    exec(compile(code, filename, "exec", dont_inherit=True), namespace)
    function = namespace.get(entrypoint)
    if not callable(function):
        raise PolicyRejected([Rejection(1, 0, f"the entrypoint '{entrypoint}' is not defined")])
    return function


def restricted_builtins() -> dict[str, Any]:
    """The builtins a policy runs with: the safe set, safe exceptions, guarded import."""
    names = SAFE_BUILTIN_NAMES | SAFE_EXCEPTION_NAMES | {"True", "False", "None"}
    table: dict[str, Any] = {name: getattr(builtins, name) for name in names}
    table["__import__"] = _guarded_import
    return table


def _guarded_import(
    name: str,
    globals: Any = None,
    locals: Any = None,
    fromlist: Any = (),
    level: int = 0,
) -> ModuleType:
    if level != 0 or name not in ALLOWED_MODULES:
        raise ImportError(f"import of '{name}' is not allowed in a policy")
    if any(str(item).startswith("_") for item in fromlist or ()):
        raise ImportError("names starting with '_' cannot be imported")
    return math


def load_evaluator(spec: str | os.PathLike[str]) -> ModuleType:
    """Import the evaluator named by a file path or a dotted module name.

    A file is imported under its own name (or a unique one if that is taken), with its
    directory first on ``sys.path`` so it can import sibling modules.
    """
    text = os.fspath(spec)
    try:
        if text.endswith(".py") or os.sep in text:
            module = _import_file(Path(text).resolve())
        else:
            module = importlib.import_module(text)
    except EvaluatorLoadError:
        raise
    except SystemExit as exc:
        raise EvaluatorLoadError(
            f"evaluator {text!r} exited while it was imported (exit status {exc.code!r})"
        ) from exc
    except Exception as exc:  # the evaluator's own import error, reported whole
        raise EvaluatorLoadError(f"cannot import evaluator {text!r}: {exc!r}") from exc
    if not callable(getattr(module, "evaluate", None)):
        raise EvaluatorLoadError(
            f"evaluator {text!r} has no evaluate(policy_path, profile, stage) function"
        )
    return module


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise EvaluatorLoadError(f"evaluator file {str(path)!r} does not exist")
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = path.stem if path.stem not in sys.modules else f"retune_evaluator_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EvaluatorLoadError(f"cannot import evaluator file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
