"""The local run's progress: one live line that never wraps a terminal, however narrow,
and plain whole lines without one."""

from __future__ import annotations

import io
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

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
FINISHED = PROGRESS.model_copy(update={"evaluations": 40, "wall_seconds": 95})
TOKEN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\r\n]|[^\x1b\r\n]")


def terminal(columns: int) -> Console:
    return Console(
        file=io.StringIO(),
        force_terminal=True,
        force_interactive=True,
        width=columns,
        color_system="truecolor",
    )


def screen(console: Console, columns: int) -> list[str]:
    """What a terminal ``columns`` wide shows after the console's output: characters past
    the last column wrap to a new row; carriage return, newline, erase-line and cursor-up
    act as a terminal's do; colours and cursor visibility change nothing visible."""
    rows, row, column = [""], 0, 0
    for token in TOKEN.findall(console.file.getvalue()):  # type: ignore[attr-defined]
        if token == "\r":
            column = 0
        elif token == "\n" or (not token.startswith("\x1b") and column >= columns):
            row, column = row + 1, 0
            rows.extend([""] * (row + 1 - len(rows)))
        if token.startswith("\x1b["):
            if token.endswith("K"):
                rows[row] = ""
            elif token.endswith("A"):
                row -= int(token[2:-1] or 1)
        elif token not in "\r\n":
            rows[row] = rows[row][:column].ljust(column) + token + rows[row][column + 1 :]
            column += cell_len(token)
    return rows


@pytest.mark.parametrize("columns", [200, 80, 60, 20, 5])
def test_the_live_line_never_wraps_a_terminal(columns: int) -> None:
    console = terminal(columns)
    bar = ProgressBar(console)
    assert bar.interactive
    bar(PROGRESS)
    bar(FINISHED)
    bar.close()
    # One line, redrawn in place, and the cursor below it, shown again.
    line, after = screen(console, columns)
    assert after == "" and console.file.getvalue().endswith("\n\x1b[?25h")  # type: ignore[attr-defined]
    assert cell_len(line) <= columns
    if columns == 200:  # room for the bar
        assert (
            line == "━" * 28 + " evals 40/40  best 0.5123 (seed 0.4600)  $0.0123  coverage 25%  95s"
        )
    if columns == 80:  # the bar goes first
        assert line == "evals 40/40  best 0.5123 (seed 0.4600)  $0.0123  coverage 25%  95s"
    if columns == 20:  # then the text is cut
        assert line == "evals 40/40  best 0…"


def test_what_the_run_prints_meanwhile_goes_above_the_line() -> None:
    console = terminal(100)
    bar = ProgressBar(console)
    bar(PROGRESS)
    console.print("retune: warning: sandbox layer missing: seccomp")
    bar(FINISHED)
    bar.close()
    assert screen(console, 100) == [
        "retune: warning: sandbox layer missing: seccomp",
        "━" * 28 + " evals 40/40  best 0.5123 (seed 0.4600)  $0.0123  coverage 25%  95s",
        "",
    ]


def test_the_screen_model_sees_a_line_that_wraps() -> None:
    console = terminal(200)
    console.print("x" * 30, end="\r")
    console.print("y" * 10)
    # The carriage return goes back to the start of the last row only: a broken copy stays.
    assert screen(console, 20) == ["x" * 20, "y" * 10, ""]


def test_without_a_terminal_it_writes_whole_plain_lines() -> None:
    console = Console(file=io.StringIO(), width=20)  # a pipe: not a terminal, 80 columns
    bar = ProgressBar(console)
    assert not bar.interactive
    bar(PROGRESS)
    bar(PROGRESS.model_copy(update={"evaluations": 13}))  # within 5 s: not written
    bar(FINISHED)  # the last one always is
    bar.close()
    assert console.file.getvalue() == (  # type: ignore[attr-defined]
        "[########....................] evals 12/40  best 0.5123 (seed 0.4600)  $0.0123  "
        "coverage 25%  31s\n"
        "[############################] evals 40/40  best 0.5123 (seed 0.4600)  $0.0123  "
        "coverage 25%  95s\n"
    )


def test_an_interactive_terminal_can_be_told_to_print_plain_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TTY_INTERACTIVE", "0")  # rich's switch, for CI that fakes a TTY
    console = Console(file=io.StringIO(), force_terminal=True, width=60)
    bar = ProgressBar(console)
    bar(PROGRESS)
    assert not bar.interactive
    assert console.file.getvalue().startswith("[########")  # type: ignore[attr-defined]
