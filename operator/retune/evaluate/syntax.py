"""Parsing Python source safely from several threads.

CPython before 3.11.8 and 3.12.1 keeps the AST constructor's recursion counter in
module-wide state. Two threads building syntax trees at once (the search thread hashing a
candidate while an evaluation thread checks another against the allowlist) can corrupt
it, and ``ast.parse`` then fails with ``SystemError: AST constructor recursion depth
mismatch`` on perfectly good code (python/cpython#106905). Every parse in retune goes
through :func:`parse`, which serialises them; a parse is fast, so the lock costs nothing
measurable next to an evaluation.
"""

from __future__ import annotations

import ast
import threading

_LOCK = threading.Lock()


def parse(code: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse`` under one process-wide lock; raises what ``ast.parse`` raises."""
    with _LOCK:
        return ast.parse(code, filename=filename, mode="exec")
