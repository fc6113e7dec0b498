"""Errors the user can act on.

An `InputError` names the offending file and the reason in one line; the command line prints
it without a traceback and exits with status 2.
"""
from __future__ import annotations

from pathlib import Path

# Exit statuses of the command line: 0 done; 1 usage (no command; `batch`: some studies failed);
# 2 bad input (InputError); 3 internal error; 4 finished, but some exports failed (`run`,
# `report`: everything else is written, the failed exports are named with the reason in
# run_summary.json / report.json); 130 cancelled.
EXIT_SOME_EXPORTS_FAILED = 4


class InputError(Exception):
    """Bad or unusable input: a file, a series or a parameter the user supplied."""

    def __init__(self, source: str | Path | None, reason: str):
        self.source = None if source is None else str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}" if self.source else reason)


class ModelFileError(InputError):
    """A model file that is not safetensors plus a valid JSON header."""
