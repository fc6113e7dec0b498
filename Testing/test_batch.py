"""Cohort batch runs on a Dask LocalCluster: isolation, resume, manifest and cohort.csv.

A small real per-study function (per-label mean of a map, read through io.read_volume) stands
in for the whole pipeline in the fast tests; the end-to-end test runs `run_study` on phantom
DICOM studies, one of them corrupted.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from myositis_qmri import batch
from myositis_qmri.errors import InputError
from myositis_qmri.io import read_volume, write_text_atomic, write_volume
from myositis_qmri.segmentation.labels import LEFT_OFFSET
from myositis_qmri.volume import Volume

distributed = pytest.importorskip("distributed")


def label_means_study(study_path: Path, output_dir: Path, options: dict) -> dict:
    """Per-label mean of map.nii.gz inside labels.nii.gz; logs each call to options['call_log']."""
    if "call_log" in options:
        with open(options["call_log"], "a") as log:
            log.write(f"{study_path.name} {os.getpid()}\n")
    values = read_volume(study_path / "map.nii.gz")
    labels = read_volume(study_path / "labels.nii.gz")
    if not labels.geometry.same_grid(values.geometry):
        raise InputError(study_path / "labels.nii.gz", "grid differs from map.nii.gz")
    rows = []
    for value in np.unique(labels.array[labels.array > 0]).astype(int):
        side = "right" if value <= LEFT_OFFSET else "left"
        muscle = value if value <= LEFT_OFFSET else value - LEFT_OFFSET
        rows.append({"label": int(value), "muscle": int(muscle), "side": side,
                     "t2": {"mean_ms": float(values.array[labels.array == value].mean())}})
    write_text_atomic(output_dir / "report.json", json.dumps({"muscles": rows}))
    return {"n_labels": len(rows)}


def make_study(folder: Path, t2_ms: float) -> Path:
    folder.mkdir(parents=True)
    labels = np.zeros((4, 8, 8), np.int16)
    labels[:, :, :4] = 3             # right muscle 3
    labels[:, :, 4:] = 3 + LEFT_OFFSET  # left muscle 3
    t2 = np.where(labels == 3, t2_ms, t2_ms + 10.0).astype(np.float32)
    write_volume(Volume(labels, (1.0, 1.0, 5.0)), folder / "labels.nii.gz")
    write_volume(Volume(t2, (1.0, 1.0, 5.0)), folder / "map.nii.gz")
    return folder


def corrupt(folder: Path) -> None:
    path = folder / "map.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[:40] + bytes(b ^ 0x5A for b in data[40:200]))


def calls(log: Path) -> list[str]:
    return log.read_text().split("\n")[:-1] if log.exists() else []


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0", silence_logs=40) as local:
        yield local


@pytest.fixture
def cohort(tmp_path):
    studies = [make_study(tmp_path / "in" / "good1", 30.0), make_study(tmp_path / "in" / "good2", 45.0),
               make_study(tmp_path / "in" / "bad", 50.0)]
    corrupt(studies[2])
    return studies, tmp_path / "out", {"call_log": str(tmp_path / "calls.log")}


def test_failing_study_is_isolated_and_rerun_repeats_no_work(cohort, cluster):
    studies, out, options = cohort
    result = batch.run_cohort(studies, out, options, scheduler=cluster.scheduler_address,
                              study_function=label_means_study)
    by_name = {r["study"]: r for r in result.records}
    assert [by_name[n]["status"] for n in ("good1", "good2", "bad")] == ["complete", "complete", "failed"]
    assert "map.nii.gz" in by_name["bad"]["error"] and by_name["bad"]["error_type"] == "InputError"
    assert (out / "bad" / batch.ERROR_LOG_NAME).exists()
    assert not (out / "bad" / batch.MARKER_NAME).exists()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"complete": 2, "partial": 0, "failed": 1, "pending": 0}
    assert all(s["software_version"] for s in manifest["studies"])
    assert all(s["seconds"] is not None for s in manifest["studies"])

    rows = list(csv.DictReader((out / "cohort.csv").open()))
    assert {(r["study"], r["side"]) for r in rows} == {(n, s) for n in ("good1", "good2") for s in ("right", "left")}
    good2_left = next(r for r in rows if r["study"] == "good2" and r["side"] == "left")
    assert float(good2_left["t2_mean_ms"]) == pytest.approx(55.0)
    assert sorted(c.split()[0] for c in calls(Path(options["call_log"]))) == ["bad", "good1", "good2"]

    report_mtimes = {n: (out / n / "report.json").stat().st_mtime_ns for n in ("good1", "good2")}
    rerun = batch.run_cohort(studies, out, options, scheduler=cluster.scheduler_address,
                             study_function=label_means_study)
    rerun_by_name = {r["study"]: r for r in rerun.records}
    assert rerun_by_name["good1"].get("reused") and rerun_by_name["good2"].get("reused")
    assert rerun_by_name["good1"]["finished"] == by_name["good1"]["finished"]
    assert {n: (out / n / "report.json").stat().st_mtime_ns for n in report_mtimes} == report_mtimes
    # only the failed study was tried again
    assert sorted(c.split()[0] for c in calls(Path(options["call_log"]))) == ["bad", "bad", "good1", "good2"]
    assert rerun_by_name["bad"]["status"] == "failed"


def test_changed_input_or_damaged_output_is_redone(cohort, cluster):
    studies, out, options = cohort
    good = studies[:2]
    batch.run_cohort(good, out, options, scheduler=cluster.scheduler_address, study_function=label_means_study)
    assert len(calls(Path(options["call_log"]))) == 2

    # damaged output (a truncated report) and a replaced input are both redone; nothing else is
    report = out / "good1" / "report.json"
    report.write_bytes(report.read_bytes()[:10])
    map_file = good[1] / "map.nii.gz"
    os.utime(map_file, ns=(time.time_ns(), map_file.stat().st_mtime_ns + 10_000_000))
    result = batch.run_cohort(good, out, options, scheduler=cluster.scheduler_address,
                              study_function=label_means_study)
    assert [r["status"] for r in result.records] == ["complete", "complete"]
    assert not any(r.get("reused") for r in result.records)
    assert json.loads(report.read_text())["muscles"]
    assert len(calls(Path(options["call_log"]))) == 4


def test_local_cluster_when_no_scheduler(cohort):
    studies, out, options = cohort
    result = batch.run_cohort(studies[:2], out, options, n_workers=2, study_function=label_means_study)
    assert [r["status"] for r in result.records] == ["complete", "complete"]
    assert len({r["worker_pid"] for r in result.records} - {os.getpid()}) >= 1


def test_worker_death_is_recorded_not_fatal(cohort, cluster):
    studies, out, options = cohort
    result = batch.run_cohort(studies[:1], out, options, scheduler=cluster.scheduler_address,
                              study_function=_exit_worker)
    assert result.records[0]["status"] == "failed"
    assert result.records[0]["error"]


def _exit_worker(study_path, output_dir, options):
    os._exit(1)  # a native crash or an out-of-memory kill looks like this to the scheduler


def test_study_names_stay_unique_and_stable(tmp_path):
    a, b = tmp_path / "x" / "exam", tmp_path / "y" / "exam"
    names = batch.study_names([a, b, tmp_path / "scan.nii.gz"])
    assert len(set(names)) == 3 and names[2] == "scan"
    assert names == batch.study_names([a, b, tmp_path / "scan.nii.gz"])


def test_missing_study_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="study not found"):
        batch.plan_tasks([tmp_path / "nope"], tmp_path / "out")


def test_batch_command_skips_studies_already_complete(cohort, cluster, capsys):
    from myositis_qmri import cli
    from myositis_qmri.commands import batch as batch_command

    studies, out, _ = cohort
    argv = ["batch", *map(str, studies[:2]), "--out", str(out), "--reuse", "--t2-model", "mono"]
    options = batch_command.run_options(cli.build_parser("batch").parse_args(argv))
    assert options["reuse"] is True and options["t2_model"] == "mono"
    batch.run_cohort(studies[:2], out, options, scheduler=cluster.scheduler_address,
                     study_function=label_means_study)
    assert cli.main(argv) == 0  # everything is complete: no cluster is even started
    assert "2/2 studies complete (2 already done), 0 failed" in capsys.readouterr().out


def test_batch_command_reports_a_bad_argument_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "myositis_qmri", "batch", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "study not found" in done.stderr


# ------------------------------------------------------------------ end to end: run_study on phantom studies

@pytest.fixture(scope="module")
def phantom_studies(tmp_path_factory):
    """Three DICOM studies (T1w + MESE of a small phantom), the third garbled, each with a
    reviewer-corrected segmentation already in its output folder (`reuse`)."""
    import shutil

    from myositis_qmri.phantom import make_exam, write_exam
    root = tmp_path_factory.mktemp("cohort")
    written = write_exam(make_exam(seed=5, size="small"), root / "exam")
    studies = []
    for name in ("patient_a", "patient_b", "patient_c"):
        for series in ("01_T1w_TSE", "02_MESE"):
            shutil.copytree(written["dicom"] / series, root / "in" / name / series)
        studies.append(root / "in" / name)
    for path in sorted(studies[2].rglob("*")):
        if path.is_file():  # garbled: a plausible preamble, then noise
            path.write_bytes(path.read_bytes()[:132] + bytes(b ^ 0xA5 for b in path.read_bytes()[132:400]))
    return studies, root / "exam" / "truth" / "muscle_labels.nii.gz"


def test_cohort_of_phantom_studies_end_to_end(phantom_studies, tmp_path):
    import hashlib
    import shutil

    studies, labels = phantom_studies
    out = tmp_path / "cohort"
    for name in ("patient_a", "patient_b", "patient_c"):
        (out / name / "segmentation").mkdir(parents=True)
        shutil.copy(labels, out / name / "segmentation" / "muscles.nii.gz")
    inputs_before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for s in studies for p in s.rglob("*") if p.is_file()}
    options = {"reuse": True, "formats": ("json", "csv")}

    result = batch.run_cohort(studies, out, options, n_workers=2)
    status = {r["study"]: r for r in result.records}
    assert status["patient_a"]["status"] == status["patient_b"]["status"] == "complete", status
    assert status["patient_c"]["status"] == "failed" and status["patient_c"]["error_type"] == "InputError"
    assert "patient_c" in status["patient_c"]["error"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"complete": 2, "partial": 0, "failed": 1, "pending": 0}

    rows = list(csv.DictReader((out / "cohort.csv").open()))
    for name in ("patient_a", "patient_b"):
        report = json.loads((out / name / "report.json").read_text())
        mine = [r for r in rows if r["study"] == name]
        assert len(mine) == len(report["muscles"]) >= 20  # one row per muscle and side
        assert len({r["key"] for r in mine}) == len(mine)
    assert not any(r["study"] == "patient_c" for r in rows)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs_before} == inputs_before

    mtimes = {n: (out / n / "report.json").stat().st_mtime_ns for n in ("patient_a", "patient_b")}
    rerun = batch.run_cohort(studies, out, options, n_workers=2)
    again = {r["study"]: r for r in rerun.records}
    assert again["patient_a"].get("reused") and again["patient_b"].get("reused")
    assert again["patient_a"]["finished"] == status["patient_a"]["finished"]
    assert {n: (out / n / "report.json").stat().st_mtime_ns for n in mtimes} == mtimes
    assert again["patient_c"]["status"] == "failed"


def _partly_done_study(study_path, output_dir, options):
    """A study whose report is written but whose DICOM SEG export failed (as run_study records it)."""
    write_text_atomic(Path(output_dir) / batch.REPORT_NAME,
                      json.dumps({"muscles": [{"key": "sartorius_R", "volume_ml": 10.0}]}))
    return {"status": "partial", "export_failures": [{"export": "dicom_seg", "reason": "AttributeError: x"}]}


def test_study_with_failed_exports_is_partial_not_lost(tmp_path):
    """Recorded as partly done with the failed exports named; its report reaches cohort.csv; no
    completion marker, so a rerun tries it again."""
    (tmp_path / "s1").mkdir()
    task = batch.plan_tasks([tmp_path / "s1"], tmp_path / "out")[0]
    record = batch.process_study(task, _partly_done_study)
    assert record["status"] == "partial" and record["export_failures"][0]["export"] == "dicom_seg"
    assert "dicom_seg: AttributeError" in record["error"]
    assert batch.completed_marker(task.output_dir, task.fingerprint) is None
    result = batch.CohortResult(tmp_path / "out", [record])
    assert result.summary()["partial"] == 1 and result.summary()["failed"] == 0
    batch.write_cohort_csv(tmp_path / "out" / "cohort.csv", [record])
    with open(tmp_path / "out" / "cohort.csv", newline="") as handle:
        assert [r["key"] for r in csv.DictReader(handle)] == ["sartorius_R"]
