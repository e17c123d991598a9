"""Live progress for a local run: one updating line on a terminal, periodic lines otherwise."""

from __future__ import annotations

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
        line = self.render(progress)
        if self.interactive:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def render(self, progress: Progress) -> str:
        total = progress.max_evaluations
        if total:
            filled = int(self.width * min(1.0, progress.evaluations / total))
            bar = "[" + "#" * filled + "." * (self.width - filled) + "]"
            count = f"{progress.evaluations}/{total}"
        else:
            bar, count = "", str(progress.evaluations)
        best = f"{progress.best_score:.4f}" if progress.best_score is not None else "-"
        seed = f"{progress.seed_score:.4f}" if progress.seed_score is not None else "-"
        return (
            f"{bar} evals {count}  best {best} (seed {seed})  "
            f"${progress.usd:.4f}  coverage {progress.coverage:.0%}  {progress.wall_seconds:.0f}s"
        )

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
