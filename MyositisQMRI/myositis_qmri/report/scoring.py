"""Edema and fatty-replacement grades from per-muscle statistics, with provenance.

The scale comes from `scoring_defaults.toml` (documented, with sources) merged with an optional
site file. Every grade records whether it is automatic or the reviewer's; a reviewer's grade is
kept when the statistics are recomputed, and the new automatic grade is recorded beside it.
"""
from __future__ import annotations

import copy
import datetime as _dt
import math
from pathlib import Path
from typing import Any

try:
    import tomllib  # novermin: the except branch below is the Python 3.9-3.10 path
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import InputError

DEFAULTS_PATH = Path(__file__).with_name("scoring_defaults.toml")
GRADE_KINDS = ("edema", "fat")


def edema_statistic(scoring: dict) -> str:
    """The per-muscle water-T2 statistic graded for edema ("mean", the default, or "median") of
    a scoring config or a report's "scoring" section; "median" where an older report does not
    say, because reports written before the statistic was recorded were graded on the median."""
    return scoring.get("edema", {}).get("statistic", "median")


def thigh_t2_against_threshold(report: dict, side: str = "both") -> str | None:
    """Whether a thigh's mean water T2 lies above or below the scoring's normal threshold, in
    words for the report ("above 36.4 ms"); None without a T2 map. The threshold was set on
    the mean thigh T2 (patients against controls), so it is read against the mean, not a
    per-muscle statistic."""
    mean_ms = report["whole_thigh"][side].get("t2_mean_ms")
    if mean_ms is None:
        return None
    threshold_ms = report["scoring"]["edema"]["normal_threshold_ms"]
    return f"{'above' if mean_ms >= threshold_ms else 'below'} {threshold_ms:g} ms"


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_scoring(path: str | Path | None = None) -> dict:
    """The default scale, overridden by a site TOML file when given; validated."""
    config = tomllib.loads(DEFAULTS_PATH.read_text(encoding="utf-8"))
    if path is not None:
        path = Path(path)
        try:
            site = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(path, "scoring file not found") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InputError(path, f"not a valid TOML scoring file ({exc})") from None
        config = _merge(config, site)
        config["source_file"] = str(path)
    _validate(config, path or DEFAULTS_PATH)
    return config


def _validate(config: dict, path) -> None:
    def ascending(values, what):
        if not values or any(not isinstance(v, (int, float)) for v in values) \
                or any(b <= a for a, b in zip(values, values[1:])):
            raise InputError(path, f"{what} must be a non-empty ascending list of numbers")

    edema, fat = config.get("edema", {}), config.get("fat", {})
    ascending(edema.get("edges_ms"), "edema.edges_ms")
    ascending(fat.get("edges_percent"), "fat.edges_percent")
    if len(edema.get("labels", [])) != len(edema["edges_ms"]) + 1:
        raise InputError(path, "edema.labels needs one more entry than edema.edges_ms")
    if len(fat.get("labels", [])) != len(fat["edges_percent"]) + 1:
        raise InputError(path, "fat.labels needs one more entry than fat.edges_percent")
    if edema_statistic(config) not in ("mean", "median"):
        raise InputError(path, "edema.statistic must be 'mean' or 'median'")
    reference = edema.get("healthy_reference", {})
    if reference.get("sd_ms") is not None and not reference["sd_ms"] > 0:
        raise InputError(path, "edema.healthy_reference.sd_ms must be positive")


def band_grade(value: float | None, edges) -> int | None:
    """Grade of `value` in ascending lower limits `edges`; a value on an edge gets the higher grade."""
    if value is None or not math.isfinite(value):
        return None
    return sum(1 for edge in edges if value >= edge)


def edema_value(stats: dict, config: dict) -> float | None:
    t2 = stats.get("t2") or {}
    return t2.get(edema_statistic(config))


def fat_value(stats: dict) -> float | None:
    return (stats.get("ff") or {}).get("mean")


def edema_z_score(value: float | None, config: dict) -> float | None:
    reference = config["edema"].get("healthy_reference", {})
    if value is None or reference.get("mean_ms") is None or reference.get("sd_ms") is None:
        return None
    return (value - reference["mean_ms"]) / reference["sd_ms"]


def auto_grades(stats: dict, config: dict) -> dict:
    """Automatic edema and fat grades for one muscle's statistics."""
    edema_v, fat_v = edema_value(stats, config), fat_value(stats)
    edema_g = band_grade(edema_v, config["edema"]["edges_ms"])
    fat_g = band_grade(fat_v, config["fat"]["edges_percent"])
    return {
        "edema": _grade_entry(edema_g, config["edema"]["labels"], "auto", edema_v,
                              f"water T2 {edema_statistic(config)} (ms)"),
        "fat": _grade_entry(fat_g, config["fat"]["labels"], "auto", fat_v, "FF mean (%)"),
        "edema_z_score": edema_z_score(edema_v, config),
    }


def _grade_entry(grade, labels, source, value, basis) -> dict:
    return {"grade": grade, "label": None if grade is None else labels[grade], "source": source,
            "auto_grade": grade, "value": value, "basis": basis}


def apply_review(grades: dict, review: dict | None, labels_by_kind: dict) -> dict:
    """Merge a reviewer's grades into freshly computed automatic grades.

    `review` holds, per kind, either a reviewer grade entry (from a previous report, source
    "reviewer") or a bare integer (an overrides file). The reviewer's grade wins; the new
    automatic grade is kept in `auto_grade`, and `auto_disagrees` says when they differ.
    """
    if not review:
        return grades
    merged = copy.deepcopy(grades)
    for kind in GRADE_KINDS:
        entry = review.get(kind)
        if entry is None:
            continue
        if isinstance(entry, dict):
            if entry.get("source") != "reviewer":
                continue
            reviewer_grade = entry.get("grade")
            meta = {k: entry.get(k) for k in ("reviewer", "reviewed_at", "note") if entry.get(k)}
        else:
            reviewer_grade, meta = entry, {}
        labels = labels_by_kind[kind]
        if reviewer_grade is not None and not (isinstance(reviewer_grade, int)
                                               and 0 <= reviewer_grade < len(labels)):
            raise InputError(None, f"reviewer {kind} grade {reviewer_grade!r} is outside 0-{len(labels) - 1}")
        auto = merged[kind]
        merged[kind] = {**auto, "grade": reviewer_grade,
                        "label": None if reviewer_grade is None else labels[reviewer_grade],
                        "source": "reviewer", "auto_disagrees": reviewer_grade != auto["auto_grade"],
                        **meta}
    return merged


def reviews_from_report(report: dict) -> dict:
    """Reviewer grades held in an earlier report.json, by muscle key."""
    reviews = {}
    for row in report.get("muscles", []):
        kept = {kind: row["grades"][kind] for kind in GRADE_KINDS
                if row.get("grades", {}).get(kind, {}).get("source") == "reviewer"}
        if kept:
            reviews[row["key"]] = kept
    return reviews


def reviews_from_overrides(overrides: dict, source) -> dict:
    """A reviewer-overrides JSON: {"<muscle key>": {"edema": 2, "fat": 1, "reviewer": ..., "note": ...}}."""
    if not isinstance(overrides, dict):
        raise InputError(source, "reviewer overrides must be a JSON object keyed by muscle key")
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    reviews: dict[str, Any] = {}
    for key, entry in overrides.items():
        if not isinstance(entry, dict):
            raise InputError(source, f"override for {key!r} must be an object")
        for kind in GRADE_KINDS:
            if kind in entry:
                reviews.setdefault(key, {})[kind] = {
                    "grade": entry[kind], "source": "reviewer", "reviewer": entry.get("reviewer"),
                    "reviewed_at": entry.get("reviewed_at", now), "note": entry.get("note")}
    return reviews
