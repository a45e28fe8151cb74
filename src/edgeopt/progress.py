"""Progress bars for long work, written to stderr so stdout stays clean for ``--json``.

Quiet when stderr is not a terminal or when ``EDGEOPT_QUIET=1`` (set by ``--json``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    return os.environ.get("EDGEOPT_QUIET") != "1" and sys.stderr.isatty()


class ProgressBar:
    """One rich bar on stderr (a no-op when progress is disabled). Call ``advance``, then ``close``."""

    def __init__(self, description: str, total: int | None, completed: int = 0, transient: bool = True) -> None:
        self._bar = None
        if progress_enabled():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            self._bar = Progress(*cols, console=Console(stderr=True), transient=transient)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=completed)

    def advance(self, description: str | None = None) -> None:
        if self._bar is not None:
            if description is None:
                self._bar.update(self._task, advance=1)
            else:
                self._bar.update(self._task, advance=1, description=description)

    def update(self, completed: float, description: str | None = None) -> None:
        """Set the bar's position (for work measured in time or bytes rather than items)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, description=description)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def progress_iter(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar on stderr when it is a terminal."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    bar = ProgressBar(description, total)
    try:
        for item in items:
            yield item
            bar.advance()
    finally:
        bar.close()
