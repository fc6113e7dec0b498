"""Atomic output: write to a temporary name in the target folder, then rename.

A run killed midway leaves only `*.tmp` names behind, never a half-written file under the
final name that a later step would take as complete.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; rename it into place on success.

    The temporary name keeps the final suffixes (".nii.gz", ".seg.nrrd") so that writers that
    pick a format by extension still work.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final_path.suffixes) or ".out"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name.split('.')[0]}-", suffix=".tmp" + suffix,
                                    dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) recreate the file as 0600: outputs
        # get the permissions any other new file would, whoever wrote them.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
