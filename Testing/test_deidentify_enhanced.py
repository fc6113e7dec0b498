"""De-identification of enhanced MR (per-frame functional groups) from the standard's own table:
no original name, identifier or date anywhere in the de-identified files, neither in any
element at any depth nor in the raw bytes. Real Siemens enhanced MESE (skips without
../shared/data) and a synthetic enhanced file with every kind of nested date."""
from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_cases import digest
from myositis_qmri.errors import InputError
from myositis_qmri.io.deidentify import BASIC_PROFILE_ACTIONS, deidentify_dataset, deidentify_folder
from myositis_qmri.io.dicom_compat import save_dataset
from myositis_qmri.io.ps315_table import BASIC_PROFILE, SOURCE

pytestmark = pytest.mark.dicom


def elements(ds):
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from elements(item)


def secrets_of(ds) -> set[str]:
    """Every name part, identifier and date (DA, and the date of a DT) the file holds."""
    found = set()
    for elem in elements(ds):
        if elem.tag.group == 0x0002 or elem.VR == "SQ" or elem.value in (None, "", b""):
            continue
        values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
        for value in values:
            text = str(value)
            if elem.VR == "PN":
                found |= {part for part in text.replace("^", " ").split() if len(part) >= 3}
            elif elem.VR == "DA" or elem.VR == "DT":
                found.add(text[:8])
            elif elem.keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "IssuerOfPatientID",
                                  "PerformedProcedureStepID", "RequestedProcedureID"):
                found.add(text)
    return {s for s in found if s.strip()}


def assert_nothing_left(original_files, clean_folder):
    secrets = set()
    for path in original_files:
        secrets |= secrets_of(pydicom.dcmread(path, stop_before_pixels=True))
    assert secrets
    outputs = sorted(clean_folder.rglob("*.dcm"))
    assert len(outputs) == len(original_files)
    for path in outputs:
        ds = pydicom.dcmread(path)
        for elem in elements(ds):
            if elem.VR in ("SQ", "OB", "OW", "OF", "OD", "UN") or elem.value is None:
                continue
            text = str(elem.value)
            leaked = [s for s in secrets if s in text]
            assert not leaked, (path.name, elem.keyword or str(elem.tag), leaked)
        raw = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in raw]
        assert not leaked, (path.name, "raw bytes", leaked)
        assert ds.PatientIdentityRemoved == "YES" and "PerFrameFunctionalGroupsSequence" in ds


def synthetic_enhanced(path):
    """The phantom's enhanced MESE with a patient, per-frame dates, contributing equipment and
    a content sequence filled in."""
    phantom = pytest.importorskip("myositis_qmri.phantom")
    from myositis_qmri.io.dicom_write import StudyInfo, write_series
    from myositis_qmri.phantom.writer import exam_series
    exam = phantom.make_exam(2, size="small")
    spec = dict(exam_series(exam))["02_MESE"]
    spec.stacks = spec.stacks[:2]
    study = StudyInfo(study_uid=pydicom.uid.generate_uid(), frame_of_reference_uid=pydicom.uid.generate_uid(),
                      patient_name="MUELLER^HANNA^MARIA", patient_id="KSB-4471920", patient_birth_date="19570823",
                      study_date="20231107", accession_number="ACX5503", study_id="ST88123")
    written = write_series(study, spec, path.parent / "tmp_enhanced", "enhanced")[0]
    ds = pydicom.dcmread(written)
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        content = frame.FrameContentSequence[0]
        content.FrameAcquisitionDateTime = f"20231107{9 + k % 3:02d}1530.25"
        content.FrameReferenceDateTime = f"20231107{9 + k % 3:02d}1530.25"
    contributor = Dataset()
    contributor.Manufacturer, contributor.InstitutionName = "ACME", "Kantonsspital Nordwest"
    contributor.ContributionDateTime, contributor.OperatorsName = "20231108120000", "KELLER^JONAS"
    ds.ContributingEquipmentSequence = Sequence([contributor])
    note = Dataset()
    note.ValueType, note.DateTime, note.PersonName = "PNAME", "20231106080000", "BRUNNER^LEA"
    ds.ContentSequence = Sequence([note])
    ds.OtherPatientIDs = "ALT-77120"
    ds.IssueDateOfImagingServiceRequest = "20231101"
    ds.BurnedInAnnotation = "NO"
    save_dataset(ds, path)
    shutil.rmtree(path.parent / "tmp_enhanced")
    return path


def test_table_is_the_generated_standard():
    assert "innolitics/dicom-standard" in SOURCE and len(BASIC_PROFILE) > 600
    for keyword in ("FrameAcquisitionDateTime", "FrameReferenceDateTime", "ContentSequence"):
        assert BASIC_PROFILE_ACTIONS[keyword] == "D", keyword
    assert BASIC_PROFILE_ACTIONS["ContributionDateTime"] == "X"
    assert BASIC_PROFILE_ACTIONS["PatientName"] == "Z" and BASIC_PROFILE_ACTIONS["ReferencedImageSequence"] == "U"


def test_synthetic_enhanced_mr_leaves_nothing(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    original = synthetic_enhanced(source / "enhanced.dcm")
    before = digest(source)
    result = deidentify_folder(source, tmp_path / "out")
    assert result["written"] == 1 and not result["refused"]
    assert digest(source) == before
    assert_nothing_left([original], tmp_path / "out")
    clean = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    frame = clean.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert frame.FrameAcquisitionDateTime.startswith("1900") and "StackID" in frame
    assert "ContributionDateTime" not in clean.ContributingEquipmentSequence[0]
    assert clean.ContentSequence[0].PersonName == "ANONYMOUS"
    assert clean.pixel_array.shape == pydicom.dcmread(original).pixel_array.shape


def test_burned_in_annotation_is_refused_and_the_rest_written(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    original = synthetic_enhanced(source / "a.dcm")
    ds = pydicom.dcmread(original)
    ds.BurnedInAnnotation = "YES"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    save_dataset(ds, source / "b.dcm")
    with pytest.raises(InputError, match="BurnedInAnnotation"):
        deidentify_dataset(ds, source="b.dcm")
    result = deidentify_folder(source, tmp_path / "out")
    assert result["written"] == 1 and result["refused"][0]["path"].endswith("b.dcm")


def test_real_enhanced_mese_leaves_nothing(shared_data, tmp_path):
    folder = shared_data / "mese_calf_siemens_enhanced"
    if not folder.is_dir():
        pytest.skip("enhanced MESE absent")
    files = sorted(folder.glob("*.dcm"))[:2]
    source = tmp_path / "in"
    source.mkdir()
    for path in files:
        shutil.copy(path, source / path.name)
    before = digest(source)
    result = deidentify_folder(source, tmp_path / "out")
    assert result["written"] == 2 and digest(source) == before
    assert_nothing_left(files, tmp_path / "out")
    clean = pydicom.dcmread(sorted((tmp_path / "out").rglob("*.dcm"))[0])
    assert np.array_equal(clean.pixel_array, pydicom.dcmread(files[0]).pixel_array)
