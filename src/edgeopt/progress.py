"""Progress for long work, written to stderr so stdout stays clean for ``--json``.

Bars are named by the phase they belong to: :func:`phase` pushes a label ("prune step 1/2",
"recovery step 2/2") that every bar opened inside carries in front of its own ("epoch 1/2"), and
it can number a training run's epochs within a longer recovery (:func:`epoch_label`). A bar
opened while another is showing stays silent: the outer bar names the work (a latency table of
22 variants shows one bar, not 22 unlabelled "evaluating" bars).

``EDGEOPT_PROGRESS`` picks the form: ``auto`` (default: rich bars when stderr is a terminal,
nothing otherwise), ``lines`` (one plain line per finished step, for logs and CI), ``off``.
``EDGEOPT_QUIET=1`` (set by ``--json``) silences everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")

MODES = ("auto", "lines", "off")
_phases: list[tuple[str, tuple[int, int] | None]] = []  # (label, (epochs done before, epochs in all))
_open_bars: list[object] = []


def progress_mode() -> str:
    """``bar``, ``lines`` or ``off``: how progress shows now (see the module doc)."""
    if os.environ.get("EDGEOPT_QUIET") == "1":
        return "off"
    wanted = os.environ.get("EDGEOPT_PROGRESS", "auto").strip().lower() or "auto"
    if wanted == "lines":
        return "lines"
    if wanted == "off":
        return "off"
    return "bar" if sys.stderr.isatty() else "off"


def progress_enabled() -> bool:
    return progress_mode() != "off"


@contextlib.contextmanager
def phase(label: str, epochs: tuple[int, int] | None = None) -> Iterator[None]:
    """Name the work inside: bars opened in it read "LABEL, their own description".

    ``epochs`` = (epochs done before this phase, epochs in all) makes a training run inside number
    its epochs within the whole recovery ("epoch 2/2", not "epoch 1/1" for its second one-epoch run).
    """
    _phases.append((label, epochs))
    try:
        yield
    finally:
        _phases.pop()


def phase_label() -> str:
    """The labels of the phases in progress, outermost first ("prune step 1/2, latency table")."""
    return ", ".join(label for label, _ in _phases)


def epoch_label(epoch: int, epochs: int) -> str:
    """The label "epoch E/N" for epoch ``epoch`` (1-based) of a run of ``epochs``, numbered within the
    innermost phase that counts epochs (see :func:`phase`)."""
    counted = [e for _, e in _phases if e is not None]
    if counted:
        before, total = counted[-1]
        return f"epoch {before + epoch}/{max(total, before + epochs)}"
    return f"epoch {epoch}/{epochs}"


def _labelled(description: str) -> str:
    outer = phase_label()
    return f"{outer}, {description}" if outer and description else outer or description


class ProgressBar:
    """One progress bar on stderr (silent when progress is off, or inside another open bar).

    Call ``advance`` (``description`` names the step, ``status`` adds figures such as the loss),
    then ``close``. Descriptions carry the labels of the enclosing :func:`phase` s.
    """

    def __init__(self, description: str, total: int | None, completed: int = 0, transient: bool = True) -> None:
        self._bar = None
        self._mode = "off" if _open_bars else progress_mode()
        self._label = _labelled(description)
        self._status = ""
        self._total = total
        self._done = completed
        self._since_line = 0  # steps under the current label not yet written (lines mode)
        if self._mode == "off":
            return
        _open_bars.append(self)
        if self._mode == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeRemainingColumn())  # fmt: skip
            self._bar = Progress(*cols, console=Console(stderr=True), transient=transient)
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=total, completed=completed, status="")

    def _relabel(self, description: str | None, status: str | None) -> None:
        if description is not None:
            label = _labelled(description)
            if label != self._label:
                self._write_line()
                self._label = label
        if status is not None:
            self._status = status

    def _write_line(self) -> None:
        if self._mode == "lines" and self._since_line:
            total = f"/{self._total}" if self._total is not None else ""
            status = f" {self._status}" if self._status else ""
            print(f"{self._label}: {self._done}{total}{status}", file=sys.stderr, flush=True)
        self._since_line = 0

    def advance(self, description: str | None = None, status: str | None = None) -> None:
        if self._mode == "off":
            return
        self._relabel(description, status)
        self._done += 1
        self._since_line += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=self._label, status=self._status)

    def update(self, completed: float, description: str | None = None, status: str | None = None) -> None:
        """Set the bar's position (for work measured in time or bytes rather than items)."""
        if self._mode == "off":
            return
        self._relabel(description, status)
        self._since_line += int(completed != self._done)
        self._done = completed  # type: ignore[assignment]
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, description=self._label, status=self._status)

    def close(self) -> None:
        if self._mode == "off":
            return
        self._write_line()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self in _open_bars:
            _open_bars.remove(self)
        self._mode = "off"


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
