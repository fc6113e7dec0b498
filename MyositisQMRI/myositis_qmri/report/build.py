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
from . import longitudinal, quality, scoring, stats
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
    b1: Volume | None = None               # relative B1 of the T2 fit, for the quality checks
    t2_profile: str | None = None          # "2d" or "3d": the EPG model the T2 map was fitted with

    @property
    def structural_only(self) -> bool:
        """No water-T2 and no FF map: volumes and cross-sectional areas only, no grades."""
        return self.t2 is None and self.ff is None


STRUCTURAL_NOTE = "structural study: no T2 or FF maps; no grades"


class ReportOutputs(dict):
    """{export name: path} of the exports written, with `failures`: the exports that failed,
    each {"export": name, "reason": one line}, and `warnings`: the report's quality warnings."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures: list[dict] = []
        self.warnings: list[dict] = []


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
    from ..segmentation.infer import unsure_outlines
    confidence = quality.outline_confidence(inputs.labels)
    uncertain = unsure_outlines(confidence)
    for row in result["muscles"]:
        row["outline_confidence"], row["outline_uncertain"] = confidence.get(row["key"]), row["key"] in uncertain
    merged_reviews = reviews or {}
    labels_by_kind = {"edema": config["edema"]["labels"], "fat": config["fat"]["labels"]}
    for row in result["muscles"]:
        if inputs.structural_only:
            row["grades"] = {kind: {"grade": None, "label": "not graded (structural study)", "source": "auto",
                                    "auto_grade": None, "value": None} for kind in scoring.GRADE_KINDS}
            row["grades"]["edema_z_score"] = None
            continue
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
        "structural_only": inputs.structural_only,
        "scoring": config,
        **result,
        "quality_warnings": quality.quality_warnings(inputs),
        "longitudinal": None,
    }
    if inputs.structural_only:
        report["notes"] = [STRUCTURAL_NOTE]
    if previous is not None:
        report["longitudinal"] = longitudinal.compare(
            result["muscles"], previous, config["longitudinal"], scoring.edema_statistic(config))
    return report


def _attempt(outputs: ReportOutputs):
    """Runs one export in isolation: a failure is recorded in `outputs.failures` (and printed),
    never raised, so that one export never takes the others down. Returns the export's result,
    or None when it failed."""
    def attempt(name: str, write):
        try:
            return write()
        except Exception as exc:  # noqa: BLE001 - isolation: any failure of one export is recorded
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
            outputs.failures.append({"export": name, "reason": reason})
            step(f"report: {name} not written: {reason}")
            return None
    return attempt


def write_report(report: dict, inputs: ReportInputs, out_dir: str | Path, *, formats=("json", "csv", "html", "pdf", "dicom"),
                 anonymize: bool = False) -> ReportOutputs:
    """Write the exports into `out_dir`; returns their {name: path} (also in report['outputs']).

    report.json, CSV, HTML and PDF come first; then each DICOM export (SEG, SR, each map) and
    the de-identified copies, each on its own: a failed export is listed in
    report['export_failures'] and the returned `failures`, and the others are still written.
    report.json is written first and rewritten at the end with the outputs and failures.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = ReportOutputs()
    outputs.warnings = list(report.get("quality_warnings") or [])
    attempt = _attempt(outputs)
    if "dicom" in formats and not inputs.source_dicom.get("segmentation"):
        report.setdefault("notes", []).append(
            "DICOM SEG/SR not written: the segmentation's source images were not DICOM")
    report["export_failures"] = outputs.failures
    outputs["json"] = str(write_json(report, out_dir / "report.json"))
    figures = None
    if "html" in formats or "pdf" in formats:
        from . import figures as figures_module
        step("report: figures")
        figures = attempt("figures", lambda: figures_module.make_figures(report, inputs))
    if "csv" in formats:
        from .export_csv import write_cross_sections_csv, write_csv
        if attempt("csv", lambda: write_csv(report, out_dir / "report.csv")) is not None:
            outputs["csv"] = str(out_dir / "report.csv")
        if attempt("csa_csv", lambda: write_cross_sections_csv(report, out_dir / "report_csa.csv")) is not None:
            outputs["csa_csv"] = str(out_dir / "report_csa.csv")
    if "html" in formats:
        from .export_html import write_html
        if attempt("html", lambda: write_html(report, figures, out_dir / "report.html")) is not None:
            outputs["html"] = str(out_dir / "report.html")
    if "pdf" in formats:
        from .export_pdf import write_pdf
        if attempt("pdf", lambda: write_pdf(report, figures, out_dir / "report.pdf")) is not None:
            outputs["pdf"] = str(out_dir / "report.pdf")
    if "dicom" in formats and inputs.source_dicom.get("segmentation"):
        from . import dicom_export
        step("report: DICOM SEG, SR and maps")
        written = attempt("dicom", lambda: dicom_export.write_dicom_outputs(report, inputs, out_dir, attempt=attempt))
        outputs.update(written or {})
    report["outputs"] = {k: Path(v).name for k, v in outputs.items()}
    if anonymize:
        from .anonymize import write_anonymized_copies
        step("report: de-identified copies")
        outputs.update(attempt("anonymized", lambda: write_anonymized_copies(report, figures, out_dir)) or {})
    if figures is not None:
        figures.close()   # pyplot keeps every open figure: a batch or a Slicer session would pile them up
    write_json(report, out_dir / "report.json")
    return outputs


def collect_reviews(prior_report: dict | None = None, overrides: dict | None = None) -> dict:
    """Reviewer grades of this study: those in its earlier report.json, then an overrides file on top."""
    reviews = dict(scoring.reviews_from_report(prior_report) if prior_report else {})
    for key, review in (overrides or {}).items():
        reviews[key] = {**reviews.get(key, {}), **review}
    return reviews
