"""The Study section's model: series found by `myositis-qmri inspect --json`, with roles.

Each series gets a role (MESE for T2, Dixon/FF for fat fraction, structural for segmentation,
or ignored) from the core's classification; the user may override it in the table. The
model turns the chosen roles into the inputs of the `t2`, `ff` and `segment` commands.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROLE_MESE = "MESE (T2)"
ROLE_DIXON = "Dixon / FF"
ROLE_STRUCTURAL = "Structural"
ROLE_IGNORE = "Ignore"
ROLES = (ROLE_MESE, ROLE_DIXON, ROLE_STRUCTURAL, ROLE_IGNORE)

# Core SeriesClass values (myositis_qmri.io.kinds) -> the role a series plays here.
_ROLE_BY_CLASS = {
    "mese": ROLE_MESE,
    "multiecho_gre": ROLE_DIXON, "vendor_ff": ROLE_DIXON, "vendor_fat": ROLE_DIXON,
    "vendor_water": ROLE_DIXON,
    "t1w": ROLE_STRUCTURAL, "t2w": ROLE_STRUCTURAL, "stir": ROLE_STRUCTURAL,
    "structural": ROLE_STRUCTURAL,
}
# Which structural series to segment on first: T1w shows muscle borders and fat planes best.
_STRUCTURAL_PREFERENCE = ("t1w", "structural", "vendor_water", "t2w", "stir")


@dataclass(frozen=True)
class SeriesRow:
    """One series as the Study table shows it."""

    description: str
    classification: str
    series_uid: str = ""
    source: str = ""                 # "dicom", "nifti", ... as inspect reports it
    files: tuple[str, ...] = ()      # the series' files, once known (inspect or DICOM database)
    vendor: str = ""
    n_echoes: int = 0
    echo_times_ms: tuple[float, ...] = ()
    matrix: str = ""
    n_slices: int = 0
    usable: bool = True
    reason: str = ""
    role: str = ROLE_IGNORE
    role_overridden: bool = False

    @property
    def summary(self) -> str:
        parts = [self.classification or "unknown"]
        if self.n_echoes > 1:
            parts.append(f"{self.n_echoes} echoes")
        if len(self.echo_times_ms) > 1:
            parts.append(f"TE {self.echo_times_ms[0]:g}-{self.echo_times_ms[-1]:g} ms")
        elif self.echo_times_ms:
            parts.append(f"TE {self.echo_times_ms[0]:g} ms")
        if self.matrix:
            parts.append(self.matrix)
        if self.n_slices:
            parts.append(f"{self.n_slices} slices")
        if not self.usable and self.reason:
            parts.append(f"unusable: {self.reason}")
        return ", ".join(parts)


def _get(entry: dict, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if key in entry and entry[key] not in (None, ""):
            return entry[key]
    return default


def _matrix_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(int(v)) for v in value)
    return str(value or "")


def row_from_inspect(entry: dict) -> SeriesRow:
    """One series entry of `inspect --json` to a row with the default role."""
    files = tuple(str(f) for f in _get(entry, "files", "source_files", default=()) or ())
    if not files and _get(entry, "path"):
        files = (str(entry["path"]),)
    classification = str(_get(entry, "classification", "series_class", "class", default="unknown"))
    echo_times = tuple(float(t) for t in (_get(entry, "echo_times_ms", "te_ms", default=()) or ()))
    usable = bool(_get(entry, "usable", default=not _get(entry, "reason", "error", default="")))
    row = SeriesRow(
        description=str(_get(entry, "series_description", "description", default="(no description)")),
        classification=classification,
        series_uid=str(_get(entry, "series_uid", default="")),
        source=str(_get(entry, "source", default="")),
        files=files,
        vendor=str(_get(entry, "vendor", "manufacturer", default="")),
        n_echoes=int(_get(entry, "n_echoes", "echoes", default=len(echo_times)) or 0),
        echo_times_ms=echo_times,
        matrix=_matrix_text(_get(entry, "matrix", "shape", default="")),
        n_slices=int(_get(entry, "n_slices", "slices", default=0) or 0),
        usable=usable,
        reason=str(_get(entry, "reason", "error", default="")),
    )
    return replace(row, role=_ROLE_BY_CLASS.get(classification, ROLE_IGNORE) if usable else ROLE_IGNORE)


def rows_from_inspect_json(text: str) -> list[SeriesRow]:
    """Parse the stdout of `myositis-qmri inspect PATH --json` (a list, or {"series": [...]})."""
    data = json.loads(text)
    rows = [row_from_inspect(entry) for entry in data.get("series", [])]
    for problem in data.get("problems", []) or []:
        rows.append(SeriesRow(description=str(problem.get("path", "?")), classification="unreadable",
                              files=(str(problem.get("path", "")),), usable=False,
                              reason=str(problem.get("reason", ""))))
    return rows


def override_role(rows: list[SeriesRow], index: int, role: str) -> list[SeriesRow]:
    """The rows with row `index` given `role` by the user (marked as overridden)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
    rows = list(rows)
    rows[index] = replace(rows[index], role=role, role_overridden=True)
    return rows


@dataclass
class StudyInputs:
    """What the pipeline commands get: one MESE, the Dixon series, one structural series."""

    mese: SeriesRow | None = None
    dixon: list[SeriesRow] = field(default_factory=list)
    structural: SeriesRow | None = None

    def missing(self) -> list[str]:
        return [name for name, value in (("MESE series (T2)", self.mese), ("Dixon/FF series", self.dixon),
                                         ("structural series", self.structural)) if not value]


def choose_inputs(rows: list[SeriesRow]) -> StudyInputs:
    """Pick the inputs from the roles: overridden rows first, the most echoes for MESE."""
    def ranked(role):
        chosen = [r for r in rows if r.role == role and r.usable]
        return sorted(chosen, key=lambda r: not r.role_overridden)

    mese = sorted(ranked(ROLE_MESE), key=lambda r: (not r.role_overridden, -r.n_echoes))
    structural = sorted(ranked(ROLE_STRUCTURAL), key=lambda r: (
        not r.role_overridden,
        _STRUCTURAL_PREFERENCE.index(r.classification) if r.classification in _STRUCTURAL_PREFERENCE else 99))
    return StudyInputs(mese[0] if mese else None, ranked(ROLE_DIXON), structural[0] if structural else None)


def with_files(rows: list[SeriesRow], files_by_uid: dict[str, list[str]]) -> list[SeriesRow]:
    """Rows with their files filled in from a series-UID lookup (Slicer's DICOM database)."""
    return [replace(r, files=tuple(files_by_uid.get(r.series_uid, ()))) if not r.files and r.series_uid else r
            for r in rows]


def link_series(row: SeriesRow, folder: str | Path) -> Path:
    """A folder holding only this series' files (symbolic links, copies where links fail).

    The core reads a DICOM folder; giving it one folder per series makes the user's role
    choice exact even when the study folder mixes series. The source files are not touched.
    """
    if not row.files:
        raise ValueError(f"the files of series '{row.description}' are not known")
    target = Path(folder) / _safe_name(row.series_uid or row.description)
    target.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(row.files):
        link = target / f"{index:05d}_{Path(source).name}"
        if link.exists() or link.is_symlink():
            continue
        try:
            link.symlink_to(Path(source).resolve())
        except OSError:            # e.g. Windows without the symlink privilege
            shutil.copy2(source, link)
    return target


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:80] or "series"


def series_arguments(row: SeriesRow) -> list[str]:
    """Paths the core reads for one series (its files)."""
    if not row.files:
        raise ValueError(f"the files of series '{row.description}' are not known")
    return list(row.files)
