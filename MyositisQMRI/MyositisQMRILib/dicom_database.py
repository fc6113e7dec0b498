"""The Study section's view of Slicer's DICOM database: patients, their studies, their series.

`study_tree` reads what the user picks from through the calls of CTK's ctkDICOMDatabase
(patients, studiesForPatient, seriesForStudy, filesForSeries, fieldForPatient/Study/Series,
displayedNameForPatient), given the database object, so it is tested with a stand-in and never
imports Slicer. A chosen study becomes one folder of links per series (`link_study`), which the
core's `inspect` classifies; the core orders each series' echoes by echo time, so the database's
file order (insertion order) never reaches the fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .study import SeriesRow, link_series

# Columns of CTK's database schema (Libs/DICOM/Core/Resources/dicom-schema.sql) shown in the tree.
PATIENT_ID_FIELD = "PatientID"
STUDY_FIELDS = ("StudyDate", "StudyDescription")
SERIES_FIELDS = ("SeriesNumber", "SeriesDescription", "Modality")


@dataclass(frozen=True)
class SeriesEntry:
    uid: str
    number: str
    description: str
    modality: str
    n_files: int

    @property
    def label(self) -> str:
        number = f"#{self.number} " if self.number else ""
        return f"{number}{self.description or '(no description)'} [{self.modality or '?'}, {self.n_files} files]"


@dataclass(frozen=True)
class StudyEntry:
    uid: str
    date: str
    description: str
    series: tuple[SeriesEntry, ...] = ()

    @property
    def label(self) -> str:
        date = _date_text(self.date)
        return " ".join(part for part in (date, self.description or "(no description)") if part)


@dataclass(frozen=True)
class PatientEntry:
    uid: str                  # the database's own patient key (what studiesForPatient takes)
    name: str
    patient_id: str
    studies: tuple[StudyEntry, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.name or '(no name)'} ({self.patient_id})" if self.patient_id else (self.name or "(no name)")


def _date_text(value: str) -> str:
    """DICOM DA (20240131) as 2024-01-31; anything else as it is."""
    value = (value or "").strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def _series_sort_key(entry: SeriesEntry):
    return (0, int(entry.number)) if entry.number.strip().lstrip("-").isdigit() else (1, entry.description)


def study_tree(database) -> list[PatientEntry]:
    """Every patient of the database with their studies (newest first) and series (by number).

    `database` is Slicer's `slicer.dicomDatabase` (ctkDICOMDatabase); only its query calls are used,
    so nothing is read from the image files.
    """
    patients = []
    for patient_uid in database.patients():
        studies = []
        for study_uid in database.studiesForPatient(patient_uid):
            series = [SeriesEntry(uid=series_uid,
                                  number=str(database.fieldForSeries("SeriesNumber", series_uid) or ""),
                                  description=str(database.fieldForSeries("SeriesDescription", series_uid) or ""),
                                  modality=str(database.fieldForSeries("Modality", series_uid) or ""),
                                  n_files=len(database.filesForSeries(series_uid)))
                      for series_uid in database.seriesForStudy(study_uid)]
            studies.append(StudyEntry(uid=study_uid, date=str(database.fieldForStudy("StudyDate", study_uid) or ""),
                                      description=str(database.fieldForStudy("StudyDescription", study_uid) or ""),
                                      series=tuple(sorted(series, key=_series_sort_key))))
        studies.sort(key=lambda s: s.date, reverse=True)
        patients.append(PatientEntry(uid=str(patient_uid),
                                     name=str(database.displayedNameForPatient(patient_uid) or ""),
                                     patient_id=str(database.fieldForPatient(PATIENT_ID_FIELD, patient_uid) or ""),
                                     studies=tuple(studies)))
    return sorted(patients, key=lambda p: p.label.lower())


def find_study(tree: list[PatientEntry], study_uid: str) -> tuple[PatientEntry, StudyEntry] | None:
    for patient in tree:
        for entry in patient.studies:
            if entry.uid == study_uid:
                return patient, entry
    return None


def study_files(database, study: StudyEntry) -> dict[str, list[str]]:
    """Series UID -> the series' files, as the database lists them (any order)."""
    return {series.uid: [str(f) for f in database.filesForSeries(series.uid)] for series in study.series}


def link_study(files_by_series: dict[str, list[str]], folder: str | Path) -> Path:
    """One folder holding one sub-folder of links per series (`study.link_series`), for `inspect`.

    The database's files stay where they are; series without files are left out.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for uid, files in files_by_series.items():
        if files:
            link_series(SeriesRow(description=uid, classification="", series_uid=uid, files=tuple(files)), folder)
    return folder
