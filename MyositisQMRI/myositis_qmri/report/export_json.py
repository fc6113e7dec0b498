"""report.json: the machine-readable report (versioned schema, every number, grade and input).

Non-finite numbers never reach the file: they become null, and the file is written with
`allow_nan=False` so that any slip fails loudly instead of producing invalid JSON.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..io.atomic import write_text_atomic

SCHEMA_PREFIX = "myositis-qmri/report/"
SCHEMA = SCHEMA_PREFIX + "1.0"


def to_jsonable(value):
    """Plain JSON types; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(report: dict, path: str | Path) -> Path:
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False, ensure_ascii=False)
    return write_text_atomic(path, text + "\n")
