"""De-identification (PS3.15 basic profile) of exported DICOM copies."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from myositis_qmri.errors import InputError
from myositis_qmri.io.dicom_compat import save_dataset
from myositis_qmri.io.deidentify import (BASIC_PROFILE_ACTIONS, UidMap, deidentify_dataset,
                                         deidentify_folder)

pytestmark = pytest.mark.dicom

PHI = {
    "PatientName": "DOE^JOHN", "PatientID": "MRN-99812", "PatientBirthDate": "19610412",
    "PatientSex": "M", "PatientAge": "063Y", "PatientAddress": "12 Elm Street, Springfield",
    "PatientTelephoneNumbers": "555-0199", "OtherPatientIDs": "OLD-1234", "PatientWeight": "81",
    "InstitutionName": "St Elsewhere Hospital", "InstitutionAddress": "1 Hospital Road",
    "ReferringPhysicianName": "HOUSE^GREGORY", "PerformingPhysicianName": "WILSON^JAMES",
    "OperatorsName": "TECH^ANNA", "StationName": "MRI-ROOM-3", "DeviceSerialNumber": "SN445566",
    "AccessionNumber": "ACC778899", "StudyID": "STUDY42", "StudyDate": "20240301", "StudyTime": "101500",
    "SeriesDate": "20240301", "AcquisitionDate": "20240301", "ContentDate": "20240301",
    "StudyDescription": "MRI thighs for DOE", "SeriesDescription": "T2 MESE DOE", "ProtocolName": "DOE protocol",
    "ImageComments": "call Dr House", "PatientComments": "claustrophobic",
}
SECRETS = ["DOE", "MRN-99812", "Elm Street", "555-0199", "OLD-1234", "Elsewhere", "HOUSE", "WILSON",
           "TECH^ANNA", "MRI-ROOM-3", "SN445566", "ACC778899", "STUDY42", "19610412", "20240301",
           "claustrophobic", "secret-vendor"]


def mr_slice(study_uid: str, series_uid: str, frame_uid: str, index: int, referenced_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "DOE_HOSPITAL"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.Modality, ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength = "MR", 10.0, 3000.0, 3.0
    ds.InstanceNumber, ds.ImagePositionPatient = index + 1, [0.0, 0.0, 5.0 * index]
    ds.ImageOrientationPatient, ds.PixelSpacing = [1, 0, 0, 0, 1, 0], [1.0, 1.0]
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation = 15, 0, 1, "MONOCHROME2"
    ds.PixelData = (np.arange(16, dtype=np.uint16) + index).tobytes()
    block = ds.private_block(0x0029, "ACME secret-vendor", create=True)
    block.add_new(0x10, "LO", "secret-vendor DOE^JOHN")
    ds.add_new(0x60003000, "OW", b"\x01\x00" * 8)     # overlay data
    ds.add_new(0x60004000, "LT", "DOE overlay")      # overlay comments
    if referenced_uid:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = MRImageStorage, referenced_uid
        item.PersonName = "DOE^JOHN"
        ds.ReferencedImageSequence = Sequence([item])
    return ds


@pytest.fixture
def two_slices():
    uids = generate_uid(), generate_uid(), generate_uid()
    first = mr_slice(*uids, 0)
    second = mr_slice(*uids, 1, referenced_uid=first.SOPInstanceUID)
    return first, second


def all_elements(ds: Dataset):
    for elem in ds.iterall():
        yield elem


def test_basic_profile_attributes_are_removed_or_emptied(two_slices):
    first, second = two_slices
    clean = deidentify_dataset(second)
    present = {e.keyword for e in all_elements(clean)}
    for keyword, action in BASIC_PROFILE_ACTIONS.items():
        if action == "X":
            assert keyword not in present, keyword
        elif action == "Z" and keyword in clean:
            assert not clean[keyword].value, keyword
    for keyword in ("PatientName", "PatientID", "StudyDate", "AccessionNumber"):
        assert keyword in clean and not clean[keyword].value  # Type 2: kept, emptied
    assert not any(e.tag.is_private for e in all_elements(clean))
    assert 0x60003000 not in clean and 0x60004000 not in clean
    assert clean.ReferencedImageSequence[0].PersonName == "ANONYMOUS"
    assert clean.PatientIdentityRemoved == "YES"
    assert "PS3.15 E.1 Basic Profile" in clean.DeidentificationMethod
    assert clean.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    # what the quantitative pipeline needs survives
    assert (clean.EchoTime, clean.MagneticFieldStrength, clean.SOPClassUID) == (10.0, 3.0, MRImageStorage)
    assert clean.PixelData == second.PixelData and list(clean.ImagePositionPatient) == [0.0, 0.0, 5.0]


def test_original_dataset_is_untouched(two_slices):
    _, second = two_slices
    before = {e.keyword or str(e.tag): repr(e.value) for e in all_elements(second)}
    deidentify_dataset(second)
    assert {e.keyword or str(e.tag): repr(e.value) for e in all_elements(second)} == before


def test_uids_are_replaced_consistently(two_slices):
    first, second = two_slices
    uid_map = UidMap()
    a, b = deidentify_dataset(first, uid_map), deidentify_dataset(second, uid_map)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        assert a[keyword].value != first[keyword].value and a[keyword].value.startswith("2.25.")
    assert a.SeriesInstanceUID == b.SeriesInstanceUID and a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == MRImageStorage  # registered UIDs kept
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    # a separate map (another export) gives unlinkable UIDs
    assert deidentify_dataset(first).StudyInstanceUID != a.StudyInstanceUID


def test_pseudonym_replaces_patient_name_and_id(two_slices):
    clean = deidentify_dataset(two_slices[0], pseudonym="TRIAL-007")
    assert (str(clean.PatientName), clean.PatientID) == ("TRIAL-007", "TRIAL-007")


def test_folder_export_holds_no_identifier_and_leaves_inputs_alone(two_slices, tmp_path):
    src = tmp_path / "DOE_JOHN"
    (src / "series1").mkdir(parents=True)
    for i, ds in enumerate(two_slices):
        save_dataset(ds, src / "series1" / f"DOE_{i}.dcm")
    (src / "notes.txt").write_text("DOE^JOHN MRN-99812")
    hashes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()}

    summary = deidentify_folder(src, tmp_path / "export")
    assert summary["written"] == 2 and summary["skipped"] == [str((src / "notes.txt").resolve())]
    written = sorted((tmp_path / "export").rglob("*"))
    files = [p for p in written if p.is_file()]
    assert len(files) == 2 and not any("DOE" in str(p.relative_to(tmp_path)) for p in written)
    for path in files:
        raw = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in raw, (path.name, secret)
        back = dcmread(path)
        assert back.PatientIdentityRemoved == "YES"
        assert back.pixel_array.shape == (4, 4)
    first, second = (dcmread(p) for p in files)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in hashes} == hashes


def test_export_inside_the_input_is_refused(tmp_path):
    (tmp_path / "study").mkdir()
    with pytest.raises(InputError, match="outside the input"):
        deidentify_folder(tmp_path / "study", tmp_path / "study" / "anon")
