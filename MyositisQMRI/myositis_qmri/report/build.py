"""Assemble a report (statistics, grades with provenance, longitudinal change) and write its exports.

`build_report` returns the plain dict that report.json holds; `write_report` writes report.json,
report.csv, report.html, report.pdf and, when the segmentation was drawn on DICOM images,
DICOM SEG + SR and the maps as DICOM.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..progress import step
from ..volume import Volume
from . import longitudinal, scoring, stats
from .export_json import SCHEMA, write_json


@dataclass
class ReportInputs:
    """What a report is computed from. Maps may be None (an FF-only or T2-only report)."""

    labels: Volume
    t2: Volume | None = None
    ff: Volume | None = None
    anatomy: Volume | None = None          # for overlays; any structural image
    paths: dict = field(default_factory=dict)   # seg / t2 / ff / anatomy -> file path
    study: dict = field(default_factory=dict)   # patient and study header
    source_dicom: dict = field(default_factory=dict)  # kind -> list of pydicom datasets (seg, t2, ff)


def _file_digest(path) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def _describe_inputs(inputs: ReportInputs) -> dict:
    out = {}
    for kind, volume in (("segmentation", inputs.labels), ("t2_map", inputs.t2), ("ff_map", inputs.ff),
                         ("anatomy", inputs.anatomy)):
        path = inputs.paths.get(kind)
        if volume is None and path is None:
            continue
        entry = {"path": None if path is None else str(path)}
        if path is not None and Path(path).is_file():
            entry["sha256"] = _file_digest(path)
        if volume is not None:
            entry.update(grid_shape_zyx=list(volume.array.shape), spacing_mm=list(volume.spacing_mm),
                         origin_mm=list(volume.origin_mm), direction=list(volume.direction))
            for key in ("series_description", "series_uid", "source", "method", "units"):
                if volume.metadata.get(key) is not None:
                    entry[key] = volume.metadata[key]
        out[kind] = entry
    return out


def build_report(inputs: ReportInputs, config: dict, *, erode: bool = False, previous: dict | None = None,
                 reviews: dict | None = None) -> dict:
    """The report dict: per-muscle numbers, grades, change since `previous` (an earlier visit).

    `reviews` ({muscle key: {kind: grade entry}}, see `collect_reviews`) are the reviewer's
    grades for this same study; they replace the automatic grades, which are kept beside them.
    """
    step("report: per-muscle statistics" + (" (masks eroded)" if erode else ""))
    result = stats.compute_statistics(
        inputs.labels, {"t2": inputs.t2, "ff": inputs.ff}, erode=erode,
        erosion_voxels=int(config.get("stats", {}).get("erosion_voxels", 1)),
        edema_threshold_ms=float(config["edema"]["normal_threshold_ms"]),
        sources={"seg": inputs.paths.get("segmentation")})
    merged_reviews = reviews or {}
    labels_by_kind = {"edema": config["edema"]["labels"], "fat": config["fat"]["labels"]}
    for row in result["muscles"]:
        if row["empty"]:
            row["grades"] = {kind: {"grade": None, "label": "not graded (empty mask)", "source": "auto",
                                    "auto_grade": None, "value": None} for kind in scoring.GRADE_KINDS}
            row["grades"]["edema_z_score"] = None
            continue
        grades = scoring.auto_grades(row, config)
        row["grades"] = scoring.apply_review(grades, merged_reviews.get(row["key"]), labels_by_kind)
    report = {
        "schema": SCHEMA,
        "software": {"name": "myositis-qmri", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "study": dict(inputs.study),
        "inputs": _describe_inputs(inputs),
        "maps_available": {"t2": inputs.t2 is not None, "ff": inputs.ff is not None},
        "scoring": config,
        **result,
        "longitudinal": None,
    }
    if previous is not None:
        report["longitudinal"] = longitudinal.compare(
            result["muscles"], previous, config["longitudinal"], scoring.edema_statistic(config))
    return report


def write_report(report: dict, inputs: ReportInputs, out_dir: str | Path, *, formats=("json", "csv", "html", "pdf", "dicom"),
                 anonymize: bool = False) -> dict:
    """Write the exports into `out_dir`; returns {name: path} (also stored in report['outputs'])."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, str] = {}
    figures = None
    if "html" in formats or "pdf" in formats:
        from . import figures as figures_module
        step("report: figures")
        figures = figures_module.make_figures(report, inputs)
    if "dicom" in formats and inputs.source_dicom.get("segmentation"):
        from . import dicom_export
        step("report: DICOM SEG, SR and maps")
        outputs.update(dicom_export.write_dicom_outputs(report, inputs, out_dir))
    elif "dicom" in formats:
        report.setdefault("notes", []).append(
            "DICOM SEG/SR not written: the segmentation's source images were not DICOM")
    if "csv" in formats:
        from .export_csv import write_csv
        outputs["csv"] = str(write_csv(report, out_dir / "report.csv"))
    if "html" in formats:
        from .export_html import write_html
        outputs["html"] = str(write_html(report, figures, out_dir / "report.html"))
    if "pdf" in formats:
        from .export_pdf import write_pdf
        outputs["pdf"] = str(write_pdf(report, figures, out_dir / "report.pdf"))
    outputs["json"] = str(out_dir / "report.json")
    report["outputs"] = {k: Path(v).name for k, v in outputs.items()}
    write_json(report, out_dir / "report.json")
    if anonymize:
        from .anonymize import write_anonymized_copies
        step("report: de-identified copies")
        outputs.update(write_anonymized_copies(report, figures, out_dir))
    return outputs


def collect_reviews(prior_report: dict | None = None, overrides: dict | None = None) -> dict:
    """Reviewer grades of this study: those in its earlier report.json, then an overrides file on top."""
    reviews = dict(scoring.reviews_from_report(prior_report) if prior_report else {})
    for key, review in (overrides or {}).items():
        reviews[key] = {**reviews.get(key, {}), **review}
    return reviews
