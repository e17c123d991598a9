"""The local run's progress line: fitted to a narrow terminal, plain lines without one."""

from __future__ import annotations

import io
import os

import pytest

from retune.local.progress import ProgressBar
from retune.search.engine import Progress

PROGRESS = Progress(
    evaluations=12,
    max_evaluations=40,
    best_score=0.5123,
    seed_score=0.46,
    usd=0.0123,
    coverage=0.25,
    wall_seconds=31,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", [200, 80, 60, 20])
def test_the_line_never_wraps_a_terminal(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((columns, 24)))
    stream = Terminal()
    ProgressBar(stream)(PROGRESS)
    written = stream.getvalue()
    assert written.startswith("\r\x1b[2K") and "\n" not in written
    line = written.removeprefix("\r\x1b[2K")
    assert len(line) < columns
    if columns == 200:
        assert line.startswith("[") and "evals 12/40" in line
    if columns == 80:  # the bar goes first
        assert line.startswith("evals 12/40  best 0.5123 (seed 0.4600)")


def test_without_a_terminal_it_writes_whole_lines() -> None:
    stream = io.StringIO()
    ProgressBar(stream)(PROGRESS)
    assert stream.getvalue().endswith("coverage 25%  31s\n")
    assert stream.getvalue().startswith("[")
