"""De-identified copies of a report (`--anonymize`): patient fields and input paths removed from
JSON/CSV/HTML/PDF; DICOM outputs through the PS3.15 basic profile (io.deidentify), sharing one
UID map so SEG, SR and maps still reference each other.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pydicom

from ..io.atomic import atomic_path
from ..io.dicom_compat import save_dataset
from ..io.deidentify import UidMap, deidentify_dataset

IDENTIFYING_STUDY_FIELDS = ("patient_name", "patient_id", "patient_birth_date", "accession_number",
                            "referring_physician", "institution")


def anonymized_report(report: dict, pseudonym: str | None = None) -> dict:
    out = copy.deepcopy(report)
    study = out.get("study") or {}
    for key in IDENTIFYING_STUDY_FIELDS:
        study.pop(key, None)
    if pseudonym:
        study["patient_id"] = pseudonym
    study["deidentified"] = True
    for entry in (out.get("inputs") or {}).values():
        entry.pop("path", None)  # folder names often carry patient names
    return out


def write_anonymized_copies(report: dict, figures, out_dir: Path, pseudonym: str | None = None) -> dict:
    from .export_csv import write_csv
    from .export_html import write_html
    from .export_json import write_json
    from .export_pdf import write_pdf

    target = out_dir / "anonymized"
    clean = anonymized_report(report, pseudonym)
    outputs = {"anonymized_json": str(write_json(clean, target / "report.json")),
               "anonymized_csv": str(write_csv(clean, target / "report.csv"))}
    if figures is not None:
        outputs["anonymized_html"] = str(write_html(clean, figures, target / "report.html"))
        outputs["anonymized_pdf"] = str(write_pdf(clean, figures, target / "report.pdf"))
    uid_map = UidMap()
    dicom_files = [p for p in [out_dir / "seg.dcm", out_dir / "report_sr.dcm"] if p.exists()]
    dicom_files += sorted((out_dir / "dicom").rglob("*.dcm")) if (out_dir / "dicom").is_dir() else []
    for path in dicom_files:
        ds = deidentify_dataset(pydicom.dcmread(path), uid_map, pseudonym)
        destination = target / path.relative_to(out_dir)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(destination) as tmp:
            save_dataset(ds, tmp)
    if dicom_files:
        outputs["anonymized_dicom_files"] = str(len(dicom_files))
    return outputs
