"""Progress reporting for long work: tqdm on a terminal, parseable lines for Slicer.

With MYOSITIS_QMRI_PROGRESS=lines in the environment (the Slicer module sets it), each update
prints `PROGRESS <fraction 0-1> <description>` on stderr instead of a tqdm bar; "off" hides
progress, "bar" forces the bar even when stderr is not a terminal.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
LINE_MODE_ENV = "MYOSITIS_QMRI_PROGRESS"


def _line_mode() -> bool:
    return os.environ.get(LINE_MODE_ENV, "") == "lines"


class Progress:
    """A counter with a total; use as a context manager, call `update(n)`."""

    def __init__(self, total: int, desc: str = "", unit: str = "it"):
        self.total = max(int(total), 1)
        self.desc = desc
        self.done = 0
        self._last_line = 0.0
        # disable=None: no bar when stderr is not a terminal (logs, CI), unless forced with "bar".
        mode = os.environ.get(LINE_MODE_ENV, "")
        disable = True if mode == "off" else (False if mode == "bar" else None)
        self._bar = None if _line_mode() else tqdm(total=total, desc=desc, unit=unit, disable=disable,
                                                   file=sys.stderr, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last_line > 0.2 or self.done >= self.total:
            self._last_line = time.monotonic()
            print(f"PROGRESS {min(self.done / self.total, 1.0):.4f} {self.desc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate with progress."""
    if total is None:
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit) as progress:
        for item in iterable:
            yield item
            progress.update(1)


def step(message: str) -> None:
    """Announce a pipeline step (one line on stderr, parseable as `STEP <message>`)."""
    prefix = "STEP " if _line_mode() else "» "
    print(prefix + message, file=sys.stderr, flush=True)
