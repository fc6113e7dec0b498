"""The Report section's model: per-muscle rows, left and right side by side, with grades.

Rows come from the core's report.json. Grades carry provenance ("automatic" or "reviewer");
`merge_reviewer_grades` keeps the reviewer's grades when the report is recomputed after mask
edits, while the fresh automatic grade stays visible next to them. Grade colours and the
bar-chart columns are here too, so the Slicer widget only lays them out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Iterable

AUTOMATIC = "automatic"
REVIEWER = "reviewer"

EDEMA_GRADES = {0: "0 none", 1: "1 mild", 2: "2 moderate", 3: "3 severe"}
FAT_GRADES = {0: "0 normal", 1: "1 <30 %", 2: "2 30-60 %", 3: "3 >60 %", 4: "4 end-stage"}
GRADE_NAMES = {"edema": EDEMA_GRADES, "fat": FAT_GRADES}

# Colour-blind-safe ramp from normal (green) to worst (dark red), as hex RGB.
_RAMP = ("#1a9850", "#fee08b", "#fc8d59", "#d73027", "#7f0000")


def grade_colour(kind: str, grade: int | None) -> str:
    """Background colour (#rrggbb) of a grade cell; grey for an ungraded muscle."""
    names = GRADE_NAMES[kind]
    if grade is None or grade not in names:
        return "#bdbdbd"
    worst = max(names)
    return _RAMP[round(grade * (len(_RAMP) - 1) / worst)] if worst else _RAMP[0]


def text_colour(background_hex: str) -> str:
    """Black or white, whichever reads better on the background (WCAG relative luminance)."""
    r, g, b = (int(background_hex[i:i + 2], 16) / 255 for i in (1, 3, 5))
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if luminance > 0.179 else "#ffffff"


@dataclass(frozen=True)
class Grade:
    value: int | None
    source: str = AUTOMATIC
    automatic: int | None = None        # what the core computed, kept when the reviewer differs

    @property
    def reviewed(self) -> bool:
        return self.source == REVIEWER


@dataclass(frozen=True)
class MuscleRow:
    """One muscle on one side."""

    key: str                 # muscle key, e.g. "vastus_lateralis"
    name: str
    abbreviation: str
    side: str                # "right" / "left"
    label_value: int
    t2_ms: float | None
    ff_percent: float | None
    volume_ml: float | None
    edema: Grade
    fat: Grade
    outline_uncertain: bool = False   # the network was unsure of this mask (report's outline_uncertain)

    @property
    def row_key(self) -> tuple[str, str]:
        return (self.key, self.side)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None   # NaN (empty mask) shows as blank


def _pick(entry: dict, *paths: str) -> Any:
    """First present value among dotted paths ("t2.median_ms")."""
    for path in paths:
        value: Any = entry
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                value = None
                break
            value = value[part]
        if value is not None:
            return value
    return None


def _grade(entry: dict, kind: str) -> Grade:
    """A grade from the core's `grades.<kind>` entry: grade, source ("auto"/"reviewer"), auto_grade."""
    raw = _pick(entry, f"grades.{kind}", f"{kind}_grade")
    if isinstance(raw, dict):
        value, automatic = raw.get("grade"), raw.get("auto_grade", raw.get("grade"))
        source = REVIEWER if raw.get("source") == REVIEWER else AUTOMATIC
        return Grade(None if value is None else int(value), source,
                     None if automatic is None else int(automatic))
    value = None if raw is None else int(raw)
    return Grade(value, AUTOMATIC, value)


def rows_from_report(report: dict) -> list[MuscleRow]:
    """Per-muscle rows of a core report.json (dict: `muscles` rows with key, label_value,
    volume_ml, t2 statistics, ff.mean and grades), in label order. T2 is the statistic the
    report graded edema on (its scoring section says which: mean by default)."""
    from myositis_qmri.report.scoring import edema_statistic
    from myositis_qmri.segmentation import labels

    stat = edema_statistic(report.get("scoring") or {})
    entries = report.get("muscles", [])
    rows = []
    for entry in entries:
        value = _pick(entry, "label_value")
        label = labels.LABEL_BY_VALUE[int(value)] if value is not None else labels.LABEL_BY_KEY[entry["key"]]
        rows.append(MuscleRow(
            key=label.muscle.key, name=label.muscle.name, abbreviation=label.muscle.abbreviation,
            side=label.side, label_value=label.value,
            t2_ms=_number(_pick(entry, f"t2.{stat}", f"t2_{stat}_ms")),
            ff_percent=_number(_pick(entry, "ff.mean", "ff_mean_percent")),
            volume_ml=_number(_pick(entry, "volume_ml", "volume.ml")),
            edema=_grade(entry, "edema"), fat=_grade(entry, "fat"),
            outline_uncertain=bool(entry.get("outline_uncertain"))))
    return sorted(rows, key=lambda r: r.label_value)


def load_report_rows(path) -> list[MuscleRow]:
    with open(path, encoding="utf-8") as handle:
        return rows_from_report(json.load(handle))


def set_grade(rows: list[MuscleRow], row_key: tuple[str, str], kind: str, value: int) -> list[MuscleRow]:
    """The reviewer sets a grade; choosing the automatic value again clears the mark."""
    if value not in GRADE_NAMES[kind]:
        raise ValueError(f"{kind} grade must be one of {sorted(GRADE_NAMES[kind])}, got {value}")
    out = []
    for row in rows:
        if row.row_key == row_key:
            old: Grade = getattr(row, kind)
            source = AUTOMATIC if value == old.automatic else REVIEWER
            row = replace(row, **{kind: Grade(value, source, old.automatic)})
        out.append(row)
    return out


def apply_overrides(rows: Iterable[MuscleRow], overrides: dict) -> list[MuscleRow]:
    """Rows with the reviewer's grades ({"<label key>": {"edema": g, "fat": g}}) applied.

    The automatic grade stays beside the reviewer's, so the table can show when they differ.
    """
    from myositis_qmri.segmentation import labels

    out = []
    for row in rows:
        review = overrides.get(labels.LABEL_BY_VALUE[row.label_value].key, {})
        for kind in ("edema", "fat"):
            if review.get(kind) is not None:
                row = replace(row, **{kind: Grade(int(review[kind]), REVIEWER, getattr(row, kind).automatic)})
        out.append(row)
    return out


def merge_reviewer_grades(new_rows: list[MuscleRow], previous_rows: Iterable[MuscleRow]) -> list[MuscleRow]:
    """Recomputed rows that keep every reviewer grade of the previous rows (numbers are new)."""
    return apply_overrides(new_rows, reviewer_grades(previous_rows))


def reviewer_grades(rows: Iterable[MuscleRow]) -> dict:
    """The reviewer's grades in the core's overrides format: {"<label key>": {"edema": 2, "fat": 1}}.

    `myositis-qmri report` applies them over the automatic grades and marks them "reviewer".
    """
    from myositis_qmri.segmentation import labels

    overrides: dict[str, dict] = {}
    for row in rows:
        for kind in ("edema", "fat"):
            grade: Grade = getattr(row, kind)
            if grade.reviewed:
                overrides.setdefault(labels.LABEL_BY_VALUE[row.label_value].key, {})[kind] = grade.value
    return overrides


@dataclass(frozen=True)
class PairedRow:
    """One table line: a muscle with its right and left rows (either may be missing)."""

    key: str
    name: str
    abbreviation: str
    right: MuscleRow | None
    left: MuscleRow | None


def paired_rows(rows: Iterable[MuscleRow]) -> list[PairedRow]:
    """Right and left side by side, in muscle order."""
    by_key: dict[str, dict[str, MuscleRow]] = {}
    order: list[MuscleRow] = []
    for row in sorted(rows, key=lambda r: (r.label_value - 1) % 11):
        if row.key not in by_key:
            order.append(row)
        by_key.setdefault(row.key, {})[row.side] = row
    return [PairedRow(r.key, r.name, r.abbreviation, by_key[r.key].get("right"), by_key[r.key].get("left"))
            for r in order]


# The table's columns: (header, side, attribute); grades are drop-downs.
MEASURES = (("T2 (ms)", "t2_ms", "{:.1f}"), ("FF (%)", "ff_percent", "{:.1f}"), ("Volume (ml)", "volume_ml", "{:.1f}"))
GRADE_COLUMNS = (("Edema", "edema"), ("Fat", "fat"))
COLUMNS = (("Muscle", None, "name"),) + tuple(
    (f"{header} {side[0].upper()}", side, attr)
    for header, attr, _ in MEASURES + tuple((h, a, None) for h, a in GRADE_COLUMNS)
    for side in ("right", "left"))


def cell_text(row: MuscleRow | None, attribute: str) -> str:
    """Display text of one measure cell (blank when absent or not measurable)."""
    if row is None:
        return ""
    formats = {attr: fmt for _, attr, fmt in MEASURES}
    if attribute in formats:
        value = getattr(row, attribute)
        text = "" if value is None else formats[attribute].format(value)
        if attribute == "volume_ml" and row.outline_uncertain:
            text += " (check outline)"   # the mask behind every number of this row
        return text
    grade: Grade = getattr(row, attribute)
    if grade.value is None:
        return ""
    text = GRADE_NAMES[attribute][grade.value]
    if grade.reviewed:
        auto = "-" if grade.automatic is None else grade.automatic
        text += f" (reviewer; auto {auto})"
    return text


def chart_columns(rows: Iterable[MuscleRow], attribute: str) -> tuple[list[str], list[float], list[float]]:
    """Bar-chart data: muscle abbreviations with right and left values (NaN when missing)."""
    names, right, left = [], [], []
    for pair in paired_rows(rows):
        names.append(pair.abbreviation)
        for side_row, target in ((pair.right, right), (pair.left, left)):
            value = None if side_row is None else getattr(side_row, attribute)
            target.append(float("nan") if value is None else float(value))
    return names, right, left


@dataclass(frozen=True)
class TableColumn:
    """One column of the report's table node: numbers (NaN when absent) or text, with a unit."""

    name: str
    unit: str
    values: tuple
    numeric: bool


_UNITS = {"t2_ms": "ms", "ff_percent": "%", "volume_ml": "ml"}


def table_columns(rows: Iterable[MuscleRow]) -> list[TableColumn]:
    """The report as the columns of a vtkMRMLTableNode: one line per muscle, right and left side by
    side as in the panel's table (COLUMNS); measures stay numbers so that a copied table computes,
    grades read as in the panel ("2 moderate (reviewer; auto 1)")."""
    pairs = paired_rows(rows)
    columns = []
    for header, side, attribute in COLUMNS:
        if side is None:
            columns.append(TableColumn(header, "", tuple(p.name for p in pairs), False))
        elif attribute in _UNITS:
            values = []
            for pair in pairs:
                row = getattr(pair, side)
                value = None if row is None else getattr(row, attribute)
                values.append(float("nan") if value is None else float(value))
            columns.append(TableColumn(header, _UNITS[attribute], tuple(values), True))
        else:
            columns.append(TableColumn(header, "", tuple(cell_text(getattr(p, side), attribute) for p in pairs), False))
    return columns
