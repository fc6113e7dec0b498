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
    code = cli.main(["report", "--seg", str(tmp_path / "absent.nii.gz"), "--t2", str(tmp_path / "far.nii.gz"),
                     "--out", str(tmp_path / "out")])
    assert code == 2 and "absent.nii.gz" in capsys.readouterr().err


def test_run_segments_only_the_slice_range(exam_dir, tmp_path):
    dicom, truth, exam = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE", "02_MESE"])
    out = tmp_path / "out"
    summary = run_study(study, out, {"seg_slice_range": (1, 3), "formats": ("json",)})
    assert summary["steps"]["segment"]["status"] == "done"
    labels = read_volume(out / "segmentation" / "muscles.nii.gz").array
    assert labels[1:4].any() and not labels[:1].any() and not labels[4:].any()
    assert json.loads((out / "segmentation" / "muscles.json").read_text())["slice_range"] == [1, 3]


def test_structural_only_study_reports_volumes_and_areas_without_grades(exam_dir, tmp_path):
    """Only a T1 series: no longer refused; volumes, cross-sectional area per slice and asymmetry,
    no grades, and the report says so."""
    import csv
    dicom, truth, _ = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE"])
    out = tmp_path / "out"
    _with_edited_segmentation(out, truth)
    summary = run_study(study, out, {"reuse": True, "formats": ("json", "csv", "html")})
    assert summary["structural_only"] is True and summary["status"] == "complete"
    assert summary["steps"]["t2"]["status"] == summary["steps"]["ff"]["status"] == "skipped"
    report = json.loads((out / "report.json").read_text())
    assert report["structural_only"] is True and "structural study: no T2 or FF maps; no grades" in report["notes"]
    labels = read_volume(truth / "muscle_labels.nii.gz")
    pixel_cm2 = labels.spacing_mm[0] * labels.spacing_mm[1] / 100
    sections = report["cross_sections"]
    for row in report["muscles"]:
        assert row["grades"]["edema"]["grade"] is None and row["grades"]["fat"]["grade"] is None
        assert row["t2"] is None and row["ff"] is None and row["volume_ml"] > 0
        per_slice = (labels.array == row["label_value"]).sum(axis=(1, 2)) * pixel_cm2
        assert sections["muscles"][row["key"]] == pytest.approx(per_slice[sections["slice_index"]].tolist())
        assert row["csa_max_cm2"] == pytest.approx(per_slice.max())
        assert row["csa_mean_cm2"] == pytest.approx(per_slice[per_slice > 0].mean())
    vl = next(a for a in report["asymmetry"] if a["muscle_key"] == "vastus_lateralis")
    right, left = (next(r for r in report["muscles"] if r["key"] == f"vastus_lateralis_{s}") for s in "RL")
    assert vl["volume_ml"] == pytest.approx(200 * (right["volume_ml"] - left["volume_ml"])
                                            / (right["volume_ml"] + left["volume_ml"]))
    with open(out / "report_csa.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(1 for areas in sections["muscles"].values() for a in areas if a > 0)
    html = (out / "report.html").read_text()
    assert "Structural study: no T2 or FF maps; no grades" in html and "Max CSA R" in html
    assert "Edema grade" not in html


def test_real_structural_oai_dicom_study(shared_data, tmp_path):
    """The real OAI thigh T1 DICOM (no maps): segmented, and a structural report written."""
    study = shared_data / "oai_thigh_t1_dicom" / "9000798" / "dicom"
    if not study.is_dir():
        pytest.skip("oai_thigh_t1_dicom not available")
    summary = run_study(study, tmp_path / "out", {"formats": ("json", "csv", "html")})
    assert summary["steps"]["segment"]["status"] == "done" and summary["structural_only"] is True
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    present = [r for r in report["muscles"] if not r["empty"]]
    assert len(present) >= 10
    assert all(r["grades"]["edema"]["grade"] is None for r in report["muscles"])
    quadriceps = sum(r["volume_ml"] for r in present if r["muscle_key"].startswith("vastus") and r["side"] == "right")
    assert 150 < quadriceps < 1500   # 15 slices of 5 mm at mid-thigh
    assert (tmp_path / "out" / "report_csa.csv").exists()


def test_a_failed_export_leaves_the_others_written(exam_dir, tmp_path, monkeypatch, capsys):
    """The DICOM SEG writer fails (as highdicom did on studies without PatientBirthDate): the
    report, CSV, HTML, PDF and the FF map series are still written; run_summary.json names the
    failed exports with the reason, and `run` exits with status 4."""
    from myositis_qmri.report import dicom_export

    def broken_seg(*args, **kwargs):
        raise AttributeError("'FileDataset' object has no attribute 'PatientBirthDate'")

    monkeypatch.setattr(dicom_export, "write_seg", broken_seg)
    dicom, truth, _ = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE", "05_Dixon_W", "06_Dixon_F"])
    out = tmp_path / "out"
    _with_edited_segmentation(out, truth)
    assert cli.main(["run", str(study), "--out", str(out), "--reuse"]) == 4
    err = capsys.readouterr().err
    assert "export failed: dicom_seg: AttributeError" in err and "PatientBirthDate" in err
    for name in ("report.json", "report.csv", "report_csa.csv", "report.html", "report.pdf"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "dicom" / "ff_map").glob("*.dcm")) and not (out / "seg.dcm").exists()
    summary = json.loads((out / "run_summary.json").read_text())
    failed = {f["export"]: f["reason"] for f in summary["export_failures"]}
    assert set(failed) == {"dicom_seg", "dicom_sr"} and "PatientBirthDate" in failed["dicom_seg"]
    assert summary["status"] == "partial" and summary["steps"]["report"]["status"] == "partial"
    report = json.loads((out / "report.json").read_text())
    assert [f["export"] for f in report["export_failures"]] == ["dicom_seg", "dicom_sr"]
    assert "dicom_ff_map" in report["outputs"] and "dicom_seg" not in report["outputs"]


def test_run_options_t2_fit_arguments_parse_like_t2(tmp_path):
    from myositis_qmri.commands import batch as batch_command
    from myositis_qmri.commands.run import options_from_args
    run = lambda *extra: options_from_args(cli.build_parser("run").parse_args(  # noqa: E731
        ["run", str(tmp_path), "--out", str(tmp_path / "out"), *extra]))
    defaults = run()
    assert defaults.b1_smoothing_mm is None and defaults.t2_device == "auto"   # as `t2`: voxel-wise B1, auto
    assert defaults.t2_bias_correction is True
    chosen = run("--b1-smoothing", "20", "--device", "cpu", "--no-bias-correction")
    assert chosen.b1_smoothing_mm == 20.0 and chosen.t2_device == "cpu" and chosen.t2_bias_correction is False
    t2_args = cli.build_parser("t2").parse_args(["t2", str(tmp_path), "--out", str(tmp_path / "o"),
                                                 "--b1-smoothing", "20", "--device", "cpu", "--no-bias-correction"])
    assert (t2_args.b1_smoothing_mm, t2_args.t2_device, t2_args.t2_bias_correction) == (20.0, "cpu", False)
    with pytest.raises(InputError, match="--b1-smoothing"):
        run("--b1-smoothing", "600")
    with pytest.raises(SystemExit):   # argparse: not one of auto, cpu, cuda
        run("--device", "tpu")
    assert defaults.seg_slice_range is None and run("--slice-range", "2", "5").seg_slice_range == [2, 5]
    cohort = batch_command.run_options(cli.build_parser("batch").parse_args(
        ["batch", str(tmp_path), "--out", str(tmp_path / "out"), "--b1-smoothing", "20", "--device", "cpu"]))
    assert cohort["b1_smoothing_mm"] == 20.0 and cohort["t2_device"] == "cpu"


def test_run_smooths_b1_and_records_it(exam_dir, tmp_path):
    """`run --b1-smoothing 20 --device cpu` reaches the T2 fit: the phantom's smooth transmit field
    is read closer to the truth than by the voxel-wise fit, and t2_fit.json / run_summary.json say so.
    (Compared where the true B1 is below 0.95: the 3-D model's B1 search stops at 1.)"""
    from myositis_qmri.io.discover import discover
    from myositis_qmri.io.kinds import ImageKind
    from myositis_qmri.maps.t2 import fit_water_t2
    dicom, truth, exam = exam_dir
    study = _study_with(dicom, tmp_path / "study", ["01_T1w_TSE", "02_MESE"])
    out = tmp_path / "out"
    _with_edited_segmentation(out, truth)
    summary = run_study(study, out, {"reuse": True, "formats": ("json",), "b1_smoothing_mm": 20.0,
                                     "t2_device": "cpu"})
    assert summary["options"]["b1_smoothing_mm"] == 20.0 and summary["options"]["t2_device"] == "cpu"
    fit = json.loads((out / "maps" / "t2" / "t2_fit.json").read_text())
    assert fit["b1_smoothing_fwhm_mm"] == 20.0 and fit["device"] == "cpu"
    assert fit["t2_bias_correction"].startswith("second-order")
    assert fit["b1_smoothing"]["voxels_with_smoothed_b1"] > 0

    series = discover(study).mese().to_echo_series(ImageKind.MAGNITUDE)
    voxelwise = fit_water_t2(series, profile=fit["profile"], device="cpu").b1.array
    smoothed = read_volume(out / "maps" / "t2" / "b1.nii.gz").array
    within = (read_volume(truth / "muscle_labels.nii.gz").array > 0) & (exam.b1.array < 0.95)
    error = lambda b1: float(np.sqrt(np.mean(np.square(b1[within] - exam.b1.array[within]))))  # noqa: E731
    assert error(smoothed) < 0.5 * error(voxelwise)   # measured 0.0055 against 0.020
