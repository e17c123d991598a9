"""Live progress for a local run: one updating line on a terminal, periodic lines otherwise.

On a terminal the line is fitted to its width at every update (the bar goes first, then
the line is cut), because a line that wraps cannot be redrawn in place: ``\r`` returns to
the start of its last row only, and the terminal fills with broken copies.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from retune.search.engine import Progress


class ProgressBar:
    """Renders :class:`Progress` as a bar with best score, evaluations, cost and coverage."""

    def __init__(self, stream: TextIO | None = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.interactive = self.stream.isatty()
        self._last_line = 0.0
        self._last_evaluations = -1

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if not self.interactive:
            finished = progress.evaluations == progress.max_evaluations
            if now - self._last_line < 5.0 and not finished:
                return
            if progress.evaluations == self._last_evaluations:
                return
        self._last_line = now
        self._last_evaluations = progress.evaluations
        if self.interactive:
            self.stream.write("\r\x1b[2K" + self.fit(progress, shutil.get_terminal_size().columns))
        else:
            self.stream.write(self.render(progress) + "\n")
        self.stream.flush()

    def fit(self, progress: Progress, columns: int) -> str:
        """The line in fewer than ``columns`` characters: without its bar when it does not
        fit, then cut."""
        line = self.render(progress)
        if len(line) >= columns:
            line = self.render(progress, bar=False)
        return line if len(line) < columns else line[: max(0, columns - 2)] + "…"

    def render(self, progress: Progress, *, bar: bool = True) -> str:
        total = progress.max_evaluations
        if total and bar:
            filled = int(self.width * min(1.0, progress.evaluations / total))
            drawn = "[" + "#" * filled + "." * (self.width - filled) + "] "
        else:
            drawn = ""
        count = f"{progress.evaluations}/{total}" if total else str(progress.evaluations)
        best = f"{progress.best_score:.4f}" if progress.best_score is not None else "-"
        seed = f"{progress.seed_score:.4f}" if progress.seed_score is not None else "-"
        return (
            f"{drawn}evals {count}  best {best} (seed {seed})  "
            f"${progress.usd:.4f}  coverage {progress.coverage:.0%}  {progress.wall_seconds:.0f}s"
        )

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
