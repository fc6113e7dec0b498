"""`run` and `report` on a synthetic DICOM study: steps skip with a reason when inputs are
missing, an edited segmentation is reused, and `report` reruns on the intermediate files."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from myositis_qmri import cli
from myositis_qmri.errors import InputError
from myositis_qmri.io.nifti import read_volume, write_volume
from myositis_qmri.phantom import make_exam, write_exam
from myositis_qmri.pipeline import run_study


@pytest.fixture(scope="module")
def exam_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline_exam")
    exam = make_exam(seed=3, size="small")
    written = write_exam(exam, root, "classic")
    return written["dicom"], root / "truth", exam


def _study_with(dicom, target, names):
    target.mkdir()
    for name in names:
        shutil.copytree(dicom / name, target / name)
    return target


def _with_edited_segmentation(out, truth):
    # A reviewer's corrected segmentation in the place `run` writes it: `--reuse` keeps it.
    (out / "segmentation").mkdir(parents=True)
    shutil.copy(truth / "muscle_labels.nii.gz", out / "segmentation" / "muscles.nii.gz")


def test_t2_only_study_skips_ff_and_reports_t2(exam_dir, tmp_path):
    dicom, truth, exam = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE", "02_MESE"])
    out = tmp_path / "out"
    _with_edited_segmentation(out, truth)
    # exact truth masks: no border partial volume to erode away (erosion would only add noise)
    summary = run_study(study, out, {"reuse": True, "erode": False, "formats": ("json", "csv", "dicom")})
    assert summary["steps"]["ff"]["status"] == "skipped" and "no fat grades" in summary["steps"]["ff"]["message"]
    assert summary["steps"]["segment"]["status"] == "reused"
    assert summary["steps"]["t2"]["status"] == "done"
    assert (out / "maps" / "t2" / "t2w.nii.gz").exists() and (out / "inventory.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["maps_available"] == {"t2": True, "ff": False}
    assert report["study"]["patient_id"].startswith("MYOQMRI-PHANTOM")
    for row in report["muscles"]:
        true_t2 = exam.truth[row["label_value"]]["water_t2_ms"]
        assert abs(row["t2"]["median"] - true_t2) < 1.0, row["key"]
        assert row["grades"]["fat"]["grade"] is None and row["grades"]["edema"]["grade"] is not None
    assert (out / "seg.dcm").exists() and (out / "report_sr.dcm").exists()
    assert "myositis-qmri report --seg" in summary["rerun_report"]


def test_ff_only_study_gets_a_report(exam_dir, tmp_path):
    pytest.importorskip("myositis_qmri.maps.dixon", reason="FF stage").__dict__.get("compute_fat_fraction") \
        or pytest.skip("maps.dixon.compute_fat_fraction not available yet")
    dicom, truth, exam = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE", "03_GRE_M", "04_GRE_P"])
    out = tmp_path / "out"
    _with_edited_segmentation(out, truth)
    summary = run_study(study, out, {"reuse": True, "formats": ("json",)})
    assert summary["steps"]["t2"]["status"] == "skipped" and "no edema grades" in summary["steps"]["t2"]["message"]
    report = json.loads((out / "report.json").read_text())
    assert report["maps_available"] == {"t2": False, "ff": True}
    for row in report["muscles"]:
        assert abs(row["ff"]["mean"] - exam.truth[row["label_value"]]["ff_percent"]) < 1.5, row["key"]


def test_report_command_reruns_on_intermediate_files(exam_dir, tmp_path, capsys):
    dicom, truth, exam = exam_dir
    t2 = exam.water_t2_ms
    write_volume(t2, tmp_path / "t2w.nii.gz")
    labels = read_volume(truth / "muscle_labels.nii.gz")
    edited = labels.with_array(np.where(labels.array == 3, 0, labels.array).astype(np.int16))  # VL_R removed
    write_volume(edited, tmp_path / "muscles.nii.gz")
    code = cli.main(["report", "--seg", str(tmp_path / "muscles.nii.gz"), "--t2", str(tmp_path / "t2w.nii.gz"),
                     "--out", str(tmp_path / "out"), "--formats", "json,csv", "--erode"])
    assert code == 0
    assert "json: " in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    vl = next(r for r in report["muscles"] if r["key"] == "vastus_lateralis_R")
    assert vl["empty"] is True and vl["grades"]["edema"]["grade"] is None
    assert report["erosion"]["applied"] is True
    rf = next(r for r in report["muscles"] if r["key"] == "rectus_femoris_R")
    assert rf["t2"]["median"] == pytest.approx(exam.truth[2]["water_t2_ms"], abs=0.01)  # truth map, eroded mask


def test_report_command_bad_inputs_are_one_line_errors(exam_dir, tmp_path, capsys):
    dicom, truth, exam = exam_dir
    far = exam.water_t2_ms
    far = type(far)(far.array, far.spacing_mm, (900.0, 900.0, 900.0))
    write_volume(far, tmp_path / "far.nii.gz")
    code = cli.main(["report", "--seg", str(truth / "muscle_labels.nii.gz"), "--t2", str(tmp_path / "far.nii.gz"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "do not overlap" in err[-1] and "Traceback" not in "\n".join(err)
    code = cli.main(["report", "--seg", str(truth / "muscle_labels.nii.gz"), "--out", str(tmp_path / "out")])
    assert code == 2 and "--t2/--ff" in capsys.readouterr().err
    code = cli.main(["report", "--seg", str(tmp_path / "absent.nii.gz"), "--t2", str(tmp_path / "far.nii.gz"),
                     "--out", str(tmp_path / "out")])
    assert code == 2 and "absent.nii.gz" in capsys.readouterr().err


def test_study_with_nothing_to_map_is_refused(exam_dir, tmp_path):
    dicom, _, _ = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE"])
    with pytest.raises(InputError, match="nothing to report"):
        run_study(study, tmp_path / "out", {})
