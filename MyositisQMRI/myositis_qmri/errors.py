"""Errors the user can act on.

An `InputError` names the offending file and the reason in one line; the command line prints
it without a traceback and exits with status 2.
"""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad or unusable input: a file, a series or a parameter the user supplied."""

    def __init__(self, source: str | Path | None, reason: str):
        self.source = None if source is None else str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}" if self.source else reason)


class ModelFileError(InputError):
    """A model file that is not safetensors plus a valid JSON header."""
