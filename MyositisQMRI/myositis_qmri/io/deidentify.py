"""De-identification of exported DICOM copies: the PS3.15 Annex E Basic Application Level
Confidentiality Profile.

The table is the standard's own (Table E.1-1 as machine-readable data, generated into
`ps315_table.py` by `ps315_generate.py`, never edited by hand). Its attributes are removed (X),
emptied (Z), replaced by a dummy (D) or, for UIDs, replaced (U) consistently through a `UidMap`, so that the studies, series, instances and
frames of reference of a de-identified folder still refer to each other. Private attributes,
overlays and curves are removed, everywhere in nested sequences too (the per-frame functional
groups of enhanced MR with their FrameAcquisitionDateTime and FrameReferenceDateTime, the
ContributingEquipmentSequence with its ContributionDateTime, an SR's ContentSequence); any
other date is replaced by a dummy; images with burned-in annotation are refused. The original dataset and
files are never modified: `deidentify_dataset` returns a copy, `deidentify_folder` writes new
files (atomically) under new names, since folder and file names often carry patient names.
"""
from __future__ import annotations

import copy
import hashlib
import secrets
from pathlib import Path

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID

from .. import __version__
from ..errors import InputError
from .atomic import atomic_path
from .dicom_compat import read_dataset, save_dataset
from .ps315_table import BASIC_PROFILE

# Where the standard offers a choice (X/Z, X/D, X/Z/D, Z/D), the strictest one the IODs the
# project reads and writes (MR, Enhanced MR, SEG, SR) allow: remove (X), unless the attribute
# is required there, then empty (Z, Type 2) or a dummy (D, Type 1: the enhanced MR dates).
_REQUIRED_CHOICE = {
    "AccessionNumber": "Z", "ContentCreatorName": "Z", "FillerOrderNumberImagingServiceRequest": "Z",
    "PatientBirthDate": "Z", "PatientID": "Z", "PatientName": "Z", "PatientSex": "Z",
    "PlacerOrderNumberImagingServiceRequest": "Z", "ReferringPhysicianName": "Z", "StudyDate": "Z",
    "StudyID": "Z", "StudyTime": "Z", "VerifyingObserverIdentificationCodeSequence": "Z",
    "ContentDate": "D", "ContentTime": "D", "AcquisitionDateTime": "D", "ContrastBolusAgent": "D",
    "PersonIdentificationCodeSequence": "D", "PersonName": "D", "VerifyingObserverName": "D",
    "VerifyingObserverSequence": "D",
}


def _resolve(keyword: str, action: str) -> str:
    """One action (X, Z, D or U) from the standard's entry, which may offer a choice."""
    choices = action.replace("*", "").split("/")
    if len(choices) == 1:
        return choices[0]
    if "U" in choices:  # X/Z/U*: a reference sequence kept with its UIDs replaced, so that the
        return "U"      # de-identified objects still reference each other
    preferred = _REQUIRED_CHOICE.get(keyword)
    if preferred in choices:
        return preferred
    return "X" if "X" in choices else choices[0]


_ACTION_BY_TAG = {tag: _resolve(keyword_for_tag(tag) or "", action) for tag, action in BASIC_PROFILE.items()}
BASIC_PROFILE_ACTIONS: dict[str, str] = {keyword_for_tag(tag): action for tag, action in _ACTION_BY_TAG.items()
                                         if keyword_for_tag(tag)}
_DATE_VRS = ("DA", "DT")

# DICOM code for the profile applied (CID 7050 De-identification Method).
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
DEIDENTIFICATION_METHOD = f"PS3.15 E.1 Basic Profile (myositis-qmri {__version__})"  # LO: 64 chars at most

_DUMMY_BY_VR = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "LT": "ANONYMOUS",
                "ST": "ANONYMOUS", "UT": "ANONYMOUS", "CS": "ANONYMOUS", "DA": "19000101",
                "TM": "000000", "DT": "19000101000000", "AS": "000Y"}


class UidMap:
    """Replaces UIDs consistently: the same original UID always maps to the same new one.

    New UIDs are 2.25 (UUID-derived) UIDs from a keyed hash of the original, with a random
    key per map, so they cannot be traced back by hashing candidate UIDs.
    """

    def __init__(self, key: bytes | None = None):
        self._key = key or secrets.token_bytes(32)
        self.mapping: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\x00")
        if uid not in self.mapping:
            digest = hashlib.blake2b(uid.encode(), key=self._key, digest_size=16).digest()
            self.mapping[uid] = f"2.25.{int.from_bytes(digest, 'big')}"
        return self.mapping[uid]


def _is_registered_uid(value: str) -> bool:
    """SOP classes, transfer syntaxes, coding schemes: public, identify nobody, keep them."""
    return UID(str(value)).name != str(value)


def _is_curve_or_overlay_text(tag) -> bool:
    """Curves (50xx, retired) and overlay data and comments (60xx,3000/4000): may show names."""
    group = tag.group
    if group % 2:
        return False
    return 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and tag.element in (0x3000, 0x4000))


def _replace_uid_value(value, uid_map: UidMap):
    if not isinstance(value, str):  # multi-valued (MultiValue of UIDs)
        return [_replace_uid_value(v, uid_map) for v in value]
    return value if not value or _is_registered_uid(value) else uid_map(value)


def _clean(ds: Dataset, uid_map: UidMap) -> None:
    for elem in list(ds):
        tag = elem.tag
        if tag.is_private or _is_curve_or_overlay_text(tag):
            del ds[tag]
            continue
        action = _ACTION_BY_TAG.get(tag)
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif action == "D" and elem.VR != "SQ":
            elem.value = _DUMMY_BY_VR.get(elem.VR)
        elif elem.VR == "UI":
            # "U" attributes, and any other UID that is not a registered DICOM UID (a UID
            # minted by the scanner can identify the site and the patient's visit).
            elem.value = _replace_uid_value(elem.value, uid_map)
        elif elem.VR in _DATE_VRS and elem.value and action is None:
            # A date the table does not list (a newer or vendor-specific attribute): the
            # profile's promise of no longitudinal information covers it too.
            elem.value = _DUMMY_BY_VR[elem.VR]
        if tag in ds and elem.VR == "SQ":
            for item in elem.value:
                _clean(item, uid_map)


def deidentify_dataset(ds: Dataset, uid_map: UidMap | None = None, pseudonym: str | None = None,
                       source=None) -> Dataset:
    """A de-identified copy of `ds` (the basic profile); `ds` itself is left untouched.

    Pass one `uid_map` for all files of a study so its UIDs stay consistent. `pseudonym`,
    when given, becomes the PatientName and PatientID (a trial subject code, for example);
    otherwise both are empty. An image with burned-in annotation is refused (InputError
    naming `source`): its pixels would still show who it is.
    """
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise InputError(source, "BurnedInAnnotation is YES: the pixels show identifying text, which the "
                                 "basic profile cannot remove; not de-identified")
    uid_map = uid_map or UidMap()
    out = copy.deepcopy(ds)
    _clean(out, uid_map)
    if getattr(out, "file_meta", None) is not None:
        out.file_meta = _clean_file_meta(out)
    if pseudonym:
        out.PatientName = pseudonym
        out.PatientID = pseudonym
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    out.DeidentificationMethodCodeSequence = Sequence([code])
    out.LongitudinalTemporalInformationModified = "REMOVED"
    return out


def _clean_file_meta(ds: Dataset) -> FileMetaDataset:
    """Only what identifies the object and its encoding; the writer adds its own
    implementation UID (the source's names the site's software and AE title)."""
    meta = FileMetaDataset()
    for keyword in ("MediaStorageSOPClassUID", "TransferSyntaxUID"):
        if keyword in ds.file_meta:
            setattr(meta, keyword, ds.file_meta[keyword].value)
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return meta


def deidentify_folder(src: str | Path, dst: str | Path, pseudonym: str | None = None,
                      uid_map: UidMap | None = None) -> dict:
    """De-identify every DICOM file under `src` into `dst` as `series-NNN/NNNNN.dcm`.

    Non-DICOM files are not copied (a sidecar or a report may name the patient). Returns
    counts of files written, skipped (not DICOM) and refused (with the reason), and the folder
    of each new series.
    """
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.exists():
        raise InputError(src, "not found")
    if dst == src or src in dst.parents or (src.is_dir() is False and dst == src.parent):
        raise InputError(dst, "output folder must be outside the input (inputs are never modified)")
    uid_map = uid_map or UidMap()
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    series_folders: dict[str, str] = {}
    written, skipped, refused = 0, [], []
    for path in files:
        try:
            ds = read_dataset(path)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            skipped.append(str(path))
            continue
        try:
            clean = deidentify_dataset(ds, uid_map, pseudonym, source=path)
        except InputError as exc:
            refused.append({"path": str(path), "reason": exc.reason})
            continue
        series = str(clean.get("SeriesInstanceUID", ""))
        folder = series_folders.setdefault(series, f"series-{len(series_folders) + 1:03d}")
        target = dst / folder / f"{written + 1:05d}.dcm"
        with atomic_path(target) as tmp:
            save_dataset(clean, tmp)
        written += 1
    return {"written": written, "skipped": skipped, "refused": refused, "series": sorted(series_folders.values())}
