"""Change since a previous visit: ΔT2, ΔFF and Δvolume per muscle, flagged over set limits.

The previous visit is an earlier report.json; muscles are matched by key (muscle and side).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .export_json import SCHEMA_PREFIX


def load_report(path: str | Path) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "previous report not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable report.json ({exc})") from None
    if not str(report.get("schema", "")).startswith(SCHEMA_PREFIX) or "muscles" not in report:
        raise InputError(path, f"not a MyositisQMRI report (schema {report.get('schema')!r})")
    return report


def _value(row: dict, kind: str, stat: str):
    return (row.get(kind) or {}).get(stat)


def _delta(now, before):
    return None if now is None or before is None else now - before


def compare(current_muscles: list[dict], previous: dict, limits: dict, t2_statistic: str = "median") -> dict:
    """Per-muscle deltas against `previous` (a loaded report) and flags over `limits`."""
    previous_rows = {row["key"]: row for row in previous.get("muscles", [])}
    rows = []
    for row in current_muscles:
        before = previous_rows.get(row["key"])
        if before is None or row["empty"] or before.get("empty"):
            rows.append({"key": row["key"], "available": False})
            continue
        d_t2 = _delta(_value(row, "t2", t2_statistic), _value(before, "t2", t2_statistic))
        d_ff = _delta(_value(row, "ff", "mean"), _value(before, "ff", "mean"))
        d_vol = row["volume_ml"] - before["volume_ml"]
        d_vol_pct = 100.0 * d_vol / before["volume_ml"] if before["volume_ml"] else None
        flags = []
        if d_t2 is not None and abs(d_t2) > limits["delta_t2_ms"]:
            flags.append("t2")
        if d_ff is not None and abs(d_ff) > limits["delta_ff_points"]:
            flags.append("ff")
        if d_vol_pct is not None and abs(d_vol_pct) > limits["delta_volume_percent"]:
            flags.append("volume")
        grade_change = {kind: _grade_change(row, before, kind) for kind in ("edema", "fat")}
        rows.append({"key": row["key"], "available": True, "delta_t2_ms": d_t2, "delta_ff_points": d_ff, "delta_volume_ml": d_vol,
                     "delta_volume_percent": d_vol_pct, "flags": flags, "grade_change": grade_change,
                     "previous": {"t2_ms": _value(before, "t2", t2_statistic), "ff_percent": _value(before, "ff", "mean"),
                                  "volume_ml": before["volume_ml"]}})
    return {"previous_report": {"study_date": previous.get("study", {}).get("study_date"),
                                "created": previous.get("created"),
                                "study_uid": previous.get("study", {}).get("study_uid")},
            "t2_statistic": t2_statistic, "limits": dict(limits), "muscles": rows}


def _grade_change(row: dict, before: dict, kind: str):
    now = (row.get("grades") or {}).get(kind, {}).get("grade")
    then = (before.get("grades") or {}).get(kind, {}).get("grade")
    return None if now is None or then is None else now - then
