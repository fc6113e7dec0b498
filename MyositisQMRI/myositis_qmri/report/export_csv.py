"""report.csv: one row per muscle and side, the same numbers as report.json; report_csa.csv: the
cross-sectional area of every muscle on every slice (one row per muscle, side and slice)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..io.atomic import write_text_atomic

STAT_COLUMNS = ("n_voxels", "mean", "median", "sd", "iqr", "n_excluded_nonfinite")
COLUMNS = (
    ["key", "muscle", "side", "label_value", "empty", "volume_ml", "n_slices", "csa_max_cm2", "csa_mean_cm2",
     "outline_confidence"]
    + [f"t2_{s}" for s in STAT_COLUMNS] + ["t2_percent_above_edema_threshold"]
    + [f"ff_{s}" for s in STAT_COLUMNS]
    + ["edema_grade", "edema_label", "edema_source", "edema_auto_grade", "edema_z_score",
       "fat_grade", "fat_label", "fat_source", "fat_auto_grade",
       "delta_t2_ms", "delta_ff_points", "delta_volume_ml", "delta_volume_percent", "change_flags"]
)


def muscle_row(row: dict, change: dict | None) -> dict:
    out = {c: row.get(c) for c in ("key", "muscle", "side", "label_value", "empty", "volume_ml", "n_slices",
                                   "csa_max_cm2", "csa_mean_cm2", "outline_confidence")}
    for kind in ("t2", "ff"):
        stats = row.get(kind) or {}
        for s in STAT_COLUMNS:
            out[f"{kind}_{s}"] = stats.get(s)
    out["t2_percent_above_edema_threshold"] = (row.get("t2") or {}).get("percent_above_edema_threshold")
    grades = row.get("grades") or {}
    for kind in ("edema", "fat"):
        g = grades.get(kind) or {}
        out[f"{kind}_grade"], out[f"{kind}_label"] = g.get("grade"), g.get("label")
        out[f"{kind}_source"], out[f"{kind}_auto_grade"] = g.get("source"), g.get("auto_grade")
    out["edema_z_score"] = grades.get("edema_z_score")
    change = change or {}
    for c in ("delta_t2_ms", "delta_ff_points", "delta_volume_ml", "delta_volume_percent"):
        out[c] = change.get(c)
    out["change_flags"] = ";".join(change.get("flags", []))
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # full precision: the CSV must agree with report.json
    return str(value)


def write_csv(report: dict, path: str | Path) -> Path:
    changes = {c["key"]: c for c in ((report.get("longitudinal") or {}).get("muscles") or [])}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["muscles"]:
        writer.writerow({k: _cell(v) for k, v in muscle_row(row, changes.get(row["key"])).items()})
    return write_text_atomic(path, buffer.getvalue())


CSA_COLUMNS = ("key", "muscle", "side", "label_value", "slice_index", "position_mm", "area_cm2")


def write_cross_sections_csv(report: dict, path: str | Path) -> Path:
    """Long table of report['cross_sections']: slices where a muscle is absent are left out."""
    sections = report["cross_sections"]
    rows = {row["key"]: row for row in report["muscles"]}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSA_COLUMNS)
    for key, areas in sections["muscles"].items():
        row = rows[key]
        for z, position, area in zip(sections["slice_index"], sections["position_mm"], areas):
            if area > 0:
                writer.writerow([key, row["muscle"], row["side"], row["label_value"], z, _cell(position), _cell(area)])
    return write_text_atomic(path, buffer.getvalue())
