"""The harness snapshots trusted code while other threads import: it must not race them.

``SandboxHarness.__init__`` records the functions of the evaluator, its sibling modules
and ``retune.evaluate`` so that a candidate that replaces one is caught. It used to walk
``sys.modules`` and each module's namespace while other threads could change them (a
garbage collection in the middle of the walk runs Python code, and the interpreter may
switch threads there): ``RuntimeError: dictionary changed size during iteration``.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from retune.evaluate.contract import SandboxLimits
from retune.evaluate.loader import load_evaluator
from retune.evaluate.sandbox import SandboxHarness

LIMITS = SandboxLimits(wall_seconds=5, cpu_seconds=5, memory_mb=256)


@pytest.fixture
def switching_collector() -> Iterator[None]:
    """Collect garbage on almost every allocation and let other threads run during each
    collection, as a loaded machine eventually does."""

    def let_others_run(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            time.sleep(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(let_others_run)
    gc.set_threshold(1, 1_000_000, 1_000_000)  # young generation only: cheap
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(let_others_run)


def test_harness_starts_while_threads_import(tmp_path: Path, switching_collector: None) -> None:
    evaluator_path = tmp_path / "evaluator.py"
    evaluator_path.write_text("def evaluate(policy_path, profile, stage):\n    return {}\n")
    for index in range(8):  # siblings of the evaluator: their namespaces are watched
        # A module whose namespace grows all through its (slow) import.
        body = "for _i in range(2000):\n    globals()[f'g{_i}'] = _i\n"
        (tmp_path / f"sibling_{index}.py").write_text(body)
    sys.path.insert(0, str(tmp_path))
    evaluator = load_evaluator(evaluator_path)
    stop = threading.Event()

    def import_siblings(indices: range) -> None:
        while not stop.is_set():
            for index in indices:
                name = f"sibling_{index}"
                sys.modules.pop(name, None)
                importlib.import_module(name)

    importers = [
        threading.Thread(target=import_siblings, args=(range(start, start + 4),), daemon=True)
        for start in (0, 4)
    ]
    for thread in importers:
        thread.start()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            SandboxHarness(evaluator, "choose", LIMITS).close()
    finally:
        stop.set()
        for thread in importers:
            thread.join()
        sys.path.remove(str(tmp_path))
        for index in range(8):
            sys.modules.pop(f"sibling_{index}", None)
