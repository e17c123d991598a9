"""Live progress for a local run, through rich: one line redrawn in place on an interactive
terminal, whole plain lines every few seconds otherwise (CI, pipes, ``TTY_INTERACTIVE=0``).

The live line is laid out for the terminal's width at every refresh (the bar goes first,
then the text is cut with an ellipsis), because a line that wraps cannot be redrawn in
place: the terminal would fill with broken copies of it.
"""

from __future__ import annotations

import time

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar as Bar
from rich.table import Table
from rich.text import Text

from retune.search.engine import Progress

BAR_WIDTH = 28
PLAIN_INTERVAL_SECONDS = 5.0


def describe(progress: Progress) -> str:
    """Evaluations, best and seed scores, spend, coverage and wall time, on one line."""
    total = progress.max_evaluations
    count = f"{progress.evaluations}/{total}" if total else str(progress.evaluations)
    if progress.free_start:
        count = f"free start {count}"
    elif progress.free_evaluations:
        count = f"{count} (+{progress.free_evaluations} free)"
    best = f"{progress.best_score:.4f}" if progress.best_score is not None else "-"
    seed = f"{progress.seed_score:.4f}" if progress.seed_score is not None else "-"
    return (
        f"evals {count}  best {best} (seed {seed})  "
        f"${progress.usd:.4f}  coverage {progress.coverage:.0%}  {progress.wall_seconds:.0f}s"
    )


def plain_line(progress: Progress) -> str:
    """The line written without a terminal: an ASCII bar (when the budget has a count) and
    :func:`describe`."""
    total = progress.max_evaluations
    if not total:
        return describe(progress)
    filled = int(BAR_WIDTH * min(1.0, progress.evaluations / total))
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "] " + describe(progress)


class ProgressLine:
    """The live line as a rich renderable, fitted to the width it is given."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        text = Text(describe(self.progress), no_wrap=True, overflow="ellipsis")
        total = self.progress.max_evaluations
        if total and BAR_WIDTH + 1 + text.cell_len <= options.max_width:
            line = Table.grid(padding=(0, 1))
            line.add_row(
                Bar(total=total, completed=min(self.progress.evaluations, total), width=BAR_WIDTH),
                text,
            )
            yield line
            return
        text.truncate(options.max_width, overflow="ellipsis")
        yield text


class ProgressBar:
    """Shows each :class:`Progress` the search reports; :meth:`close` ends the live line."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_interactive
        self._live: Live | None = None
        self._last_line = 0.0
        self._last_evaluations = -1

    def __call__(self, progress: Progress) -> None:
        if self.interactive:
            if self._live is None:
                # Whatever the run prints meanwhile (warnings) goes above the line. No
                # auto-refresh: no thread while the executor forks its workers, and a redraw
                # only when there is news.
                self._live = Live(console=self.console, auto_refresh=False)
                self._live.start()
            self._live.update(ProgressLine(progress), refresh=True)
            return
        now = time.monotonic()
        finished = progress.evaluations == progress.max_evaluations
        if now - self._last_line < PLAIN_INTERVAL_SECONDS and not finished:
            return
        if progress.evaluations == self._last_evaluations:
            return
        self._last_line = now
        self._last_evaluations = progress.evaluations
        self.console.print(plain_line(progress), markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        """Leave the last live line on the terminal (and the cursor after it); idempotent."""
        if self._live is not None:
            self._live.stop()
            self._live = None
