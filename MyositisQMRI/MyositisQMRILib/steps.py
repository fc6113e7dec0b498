"""Short steps run one per timer tick, so work that must happen in Slicer's process (writing
nodes to files, linking a study's files) never holds the UI for more than one step.

The Slicer module drives a `StepQueue` from a qt.QTimer: each tick runs `run_next()` and shows
`fraction` and `description` in the progress bar; Cancel calls `cancel()`. The queue itself is
plain Python, so its order, progress, failure and cancel rules are tested without Slicer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class StepQueue:
    """Named steps run in order; `on_done(results)` runs after the last one, with each step's result."""

    steps: list[tuple[str, Callable[[], object]]]
    on_done: Callable[[list], object] | None = None
    results: list = field(default_factory=list)
    error: BaseException | None = None
    cancelled: bool = False
    finished: bool = False

    @property
    def fraction(self) -> float:
        return len(self.results) / len(self.steps) if self.steps else 1.0

    @property
    def description(self) -> str:
        index = len(self.results)
        return self.steps[index][0] if index < len(self.steps) else ""

    @property
    def running(self) -> bool:
        return not self.finished

    def run_next(self) -> bool:
        """Run one step (or, after the last, `on_done`); False once the queue has ended.

        A failing step ends the queue with `error` set; later steps and `on_done` do not run.
        """
        if self.finished:
            return False
        if self.cancelled:
            self.finished = True
            return False
        try:
            if len(self.results) < len(self.steps):
                self.results.append(self.steps[len(self.results)][1]())
                return True
            self.finished = True
            if self.on_done is not None:
                self.on_done(self.results)
        except Exception as exc:   # shown by the module; the queue stops here
            self.error, self.finished = exc, True
        return False

    def cancel(self) -> None:
        self.cancelled = True

    def run_all(self) -> list:
        """Run every step at once (tests, and callers already outside the UI thread)."""
        while self.run_next():
            pass
        if self.error is not None:
            raise self.error
        return self.results
