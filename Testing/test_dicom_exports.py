"""DICOM outputs on an ordinary clinical study: every optional attribute stripped from the
sources (SEG, SR and maps still written, readable, and the inputs unchanged byte for byte),
Parametric Map objects in true units, derived map series that name their sources, and segment
colours on every highdicom. Runs under pydicom 3 and under pydicom 2.4 + highdicom 0.22."""
from __future__ import annotations

import json
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_cases import digest, rewrite, save_stripped
from myositis_qmri.io.dicom_compat import lab_to_dicom
from myositis_qmri.segmentation.labels import LABEL_BY_VALUE

pytestmark = pytest.mark.dicom


@pytest.fixture(scope="module")
def stripped_run(tmp_path_factory):
    """`run` on a phantom study (T1w + MESE + vendor FF) whose files lack every optional attribute,
    with the truth segmentation as the reviewer's (no model inference: the test is about DICOM)."""
    phantom = pytest.importorskip("myositis_qmri.phantom")
    from myositis_qmri.cli import main
    root = tmp_path_factory.mktemp("stripped")
    exam = phantom.make_exam(seed=3, size="small")
    written = phantom.write_exam(exam, root / "exam", "classic")
    full = root / "full"
    for name in ("01_T1w_TSE", "02_MESE", "07_Dixon_FF"):
        shutil.copytree(written["dicom"] / name, full / name)
    study = rewrite(full, root / "study", save_stripped)
    before = digest(study)
    out = root / "out"
    (out / "segmentation").mkdir(parents=True)
    shutil.copy(root / "exam" / "truth" / "muscle_labels.nii.gz", out / "segmentation" / "muscles.nii.gz")
    code = main(["run", str(study), "--out", str(out), "--reuse", "--no-erode", "--anonymize"])
    return study, before, out, code, exam


def test_stripped_study_runs_to_the_end_with_seg_and_sr(stripped_run):
    study, before, out, code, _ = stripped_run
    assert code == 0
    one = pydicom.dcmread(next(p for p in sorted(study.rglob("*")) if p.is_file()))
    assert "PatientBirthDate" not in one and "StudyID" not in one and "AccessionNumber" not in one
    assert digest(study) == before                       # inputs unchanged, byte for byte
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(out / "seg.dcm"))
    assert seg.PatientBirthDate == "" and seg.StudyInstanceUID == one.StudyInstanceUID
    assert [s.SegmentNumber for s in seg.SegmentSequence] == list(range(1, 23))  # 11 muscles x 2 sides
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(out / "report_sr.dcm"))
    assert sr.StudyInstanceUID == one.StudyInstanceUID and sr.ReferringPhysicianName == ""
    assert (out / "anonymized" / "seg.dcm").is_file()


def test_segment_colours_are_the_label_colours(stripped_run):
    _, _, out, _, _ = stripped_run
    seg = pydicom.dcmread(out / "seg.dcm")
    by_name = {label.name: label for label in LABEL_BY_VALUE.values()}
    from myositis_qmri.report.dicom_export import _rgb_to_lab
    for item in seg.SegmentSequence:
        expected = lab_to_dicom(_rgb_to_lab(by_name[item.SegmentLabel].colour_rgb))
        assert [int(v) for v in item.RecommendedDisplayCIELabValue] == expected


def test_parametric_maps_hold_float_values_in_true_units(stripped_run):
    study, _, out, _, exam = stripped_run
    labels = exam.muscle_labels.array
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.rglob("*") if p.is_file()}
    for kind, unit, truth in (("t2", "ms", exam.water_t2_ms.array), ("ff", "%", exam.ff_percent.array)):
        ds = pydicom.dcmread(out / "dicom" / f"{kind}_parametric_map.dcm")
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and "FloatPixelData" in ds
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        code = mapping.MeasurementUnitsCodeSequence[0]
        assert (code.CodeValue, code.CodingSchemeDesignator) == (unit, "UCUM")
        values = ds.pixel_array.astype(float) * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)
        # highdicom may order frames its own way; each frame carries its position (the grid's z here)
        z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
        values = values[np.argsort(z)]
        assert values.shape == labels.shape and values.dtype.kind == "f"
        nifti = __import__("myositis_qmri.io.nifti", fromlist=["read_volume"]).read_volume(
            out / "maps" / kind / ("t2w.nii.gz" if kind == "t2" else "ff.nii.gz")).array
        assert np.allclose(values, np.nan_to_num(nifti), atol=1e-4)          # the computed map, unrounded
        muscle = labels > 0
        assert abs(np.median(values[muscle]) - np.median(truth[muscle])) < 2.0
        referenced = {item.ReferencedSOPInstanceUID for series in ds.ReferencedSeriesSequence
                      for item in series.ReferencedInstanceSequence}
        assert referenced and referenced <= sources
        hd.pm.ParametricMap.from_dataset(ds) if hasattr(hd.pm.ParametricMap, "from_dataset") else None


def test_derived_map_series_name_their_source_images(stripped_run):
    study, _, out, _, exam = stripped_run
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.rglob("*") if p.is_file()}
    files = sorted((out / "dicom" / "t2_map").glob("*.dcm"))
    assert len(files) == exam.muscle_labels.array.shape[0]
    for path in files:
        item = pydicom.dcmread(path).SourceImageSequence[0]
        assert item.ReferencedSOPInstanceUID in sources
        assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["steps"]


def test_outputs_pass_dciodvfy(stripped_run):
    """dicom3tools' IOD checker (Debian package dicom3tools) finds no error in SEG, SR, the
    Parametric Maps and the derived map series; skipped where it is not installed."""
    import shutil as _shutil
    import subprocess
    checker = _shutil.which("dciodvfy")
    if checker is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    _, _, out, _, _ = stripped_run
    files = [out / "seg.dcm", out / "report_sr.dcm", out / "dicom" / "t2_parametric_map.dcm",
             out / "dicom" / "ff_parametric_map.dcm", sorted((out / "dicom" / "t2_map").glob("*.dcm"))[0]]
    problems = {}
    for path in files:
        report = subprocess.run([checker, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        if errors:
            problems[path.name] = errors
    assert not problems, problems
