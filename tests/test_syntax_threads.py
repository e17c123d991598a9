"""Parsing policies from several threads at once never fails on good code.

CPython 3.11.7 (the interpreter CI uses) keeps the AST constructor's recursion counter in
module-wide state; a thread switch in the middle of one ``ast.parse`` (a garbage
collection runs Python code there) lets another thread's parse reset it, and the first
fails with ``SystemError: AST constructor recursion depth mismatch``. A benchmark run
died of it while its search thread hashed a candidate and a worker thread checked another
against the allowlist.
"""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import retune
from retune.evaluate import syntax

PACKAGE = Path(retune.__file__).parent
CODE = (PACKAGE / "search" / "engine.py").read_text()


class _Cyclic:
    """Garbage only the cycle collector frees: its finalizer is Python code."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(0)  # let another thread run, as a loaded machine eventually does


@pytest.fixture
def switching_collector() -> Iterator[None]:
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(50, 1_000_000, 1_000_000)
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


def test_parses_from_many_threads_at_once_all_succeed(switching_collector: None) -> None:
    failures: list[str] = []

    def parse_repeatedly() -> None:
        for _ in range(60):
            garbage = [_Cyclic() for _ in range(50)]
            del garbage
            try:
                syntax.parse(CODE)
            except SystemError as error:
                failures.append(str(error))
                return

    threads = [threading.Thread(target=parse_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_no_module_parses_python_without_the_lock() -> None:
    direct = re.compile(r"\bast\.parse\(")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "syntax.py" and direct.search(path.read_text())
    ]
    assert offenders == []
