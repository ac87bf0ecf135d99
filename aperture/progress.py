"""Titled progress bars, one per step of a long run (``aperture demo``'s steps share one
``Stage``); a step that ends early freezes its bar's clock."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Stage:
    """A titled progress bar that the stages share."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: TaskID | None = None
        self.progress = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)

    def __enter__(self) -> Stage:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def bar(self, title: str, total: int) -> Callable[[int], None]:
        self.stop()
        task = self.progress.add_task(title, total=total)
        self._last = task

        def advance(n: int = 1) -> None:
            self.progress.advance(task, n)

        return advance

    def stop(self) -> None:
        """Freeze the latest bar's clock (a stage that ended before its total, e.g. early stopping)."""
        if self._last is not None:
            self.progress.stop_task(self._last)
            self._last = None

    def done(self, title: str, detail: str = "") -> None:
        self.stop()
        task = self.progress.add_task(title, total=1)
        self.progress.update(task, completed=1, description=f"{title} {detail}".strip()[:60])
