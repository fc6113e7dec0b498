"""The module's whole workflow beneath the Slicer layer: MyositisQMRILib and the core, run as the
module runs them (background jobs of the core's command line).

Load a DICOM study from a DICOM database (patient, study, series; the database lists files in
any order), compute the T2 and FF maps, segment, edit the muscles, report, override a grade,
and export (CSV, HTML, DICOM SEG and SR, read back), with the report's table columns.
Only the database is a stand-in (CTK's ctkDICOMDatabase calls, Testing/slicer_standins.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MyositisQMRI"))

import slicer_standins as sx  # noqa: E402
from MyositisQMRILib import dicom_database, jobs, pipeline, report_table, study  # noqa: E402
from myositis_qmri.segmentation import labels  # noqa: E402


def _run(subcommand, arguments):
    job = jobs.start_core_job(subcommand, arguments)
    result = job.wait(timeout_s=900)
    assert result.returncode == 0, f"{subcommand}: {result.error}\n" + "\n".join(job.log[-20:])
    assert any(event.startswith("PROGRESS") for event in job.log) or subcommand == "inspect"
    return result


@pytest.mark.slow
@pytest.mark.dicom   # CI runs it again with pydicom 2.4.4 + highdicom 0.22.0 (what Slicer bundles)
def test_dicom_study_maps_segment_edit_report_override_export(tmp_path):
    from myositis_qmri.phantom import make_exam, write_exam

    write_exam(make_exam(7, "small"), tmp_path / "exam", "classic")
    truth = json.loads((tmp_path / "exam" / "truth" / "truth.json").read_text())["muscles"]
    work = tmp_path / "case"

    # 1 Study: from the DICOM database, files listed newest first (not by echo time)
    database = sx.DicomDatabase(sorted((tmp_path / "exam" / "dicom").rglob("*.dcm"), reverse=True))
    (patient,) = dicom_database.study_tree(database)
    (entry,) = patient.studies
    files = dicom_database.study_files(database, entry)
    folder = dicom_database.link_study(files, work / "database-study")
    rows = study.with_files(study.rows_from_inspect_json(_run("inspect", [str(folder), "--json"]).stdout), files)
    inputs = study.choose_inputs(rows)
    assert inputs.mese is not None and inputs.structural is not None and inputs.dixon
    assert list(inputs.mese.echo_times_ms) == sorted(inputs.mese.echo_times_ms) and len(inputs.mese.echo_times_ms) == 17
    assert set(inputs.mese.files) == set(files[inputs.mese.series_uid])

    # 2 Maps
    _run("t2", pipeline.t2_arguments(pipeline.study_t2_inputs(inputs, work / "series"), work / "t2"))
    _run("ff", pipeline.ff_arguments(work / "ff", pipeline.study_ff_inputs(inputs, work / "series")))
    assert (work / "t2" / "t2w.nii.gz").is_file() and (work / "ff" / "ff.nii.gz").is_file()

    # 3 Muscles: segment slices 1-4 of the structural series, then the reviewer erases one muscle on one slice
    structural = study.link_series(inputs.structural, work / "series")
    slice_range = pipeline.segment_slice_range(1, 4, inputs.structural.n_slices)
    _run("segment", pipeline.segment_arguments(structural, work / "segment", None, slice_range))
    segmented = sitk.ReadImage(str(work / "segment" / "muscles.nii.gz"))
    edited = sitk.GetArrayFromImage(segmented)
    vl_right = labels.LABEL_BY_KEY["vastus_lateralis_R"].value
    planes = np.nonzero((edited == vl_right).any(axis=(1, 2)))[0]
    assert len(planes) >= 2, "the model found no right vastus lateralis"
    before_voxels = int((edited == vl_right).sum())
    edited[planes[0]][edited[planes[0]] == vl_right] = 0
    after_voxels = int((edited == vl_right).sum())
    image = sitk.GetImageFromArray(edited)
    image.CopyInformation(segmented)
    sitk.WriteImage(image, str(work / "muscles_edited.nii.gz"))

    # 4 Report on the edited muscles and the maps
    _run("report", pipeline.report_arguments(work / "muscles_edited.nii.gz", work / "report", work / "t2" / "t2w.nii.gz",
                                             work / "ff" / "ff.nii.gz", anatomy=structural))
    rows = report_table.load_report_rows(work / "report" / "report.json")
    by_key = {r.row_key: r for r in rows}
    voxel_ml = np.prod(segmented.GetSpacing()) / 1000.0
    assert by_key[("vastus_lateralis", "right")].volume_ml == pytest.approx(after_voxels * voxel_ml, rel=1e-3)
    assert after_voxels < before_voxels
    for row in rows:     # truth per muscle: the segmentation's interior is close to the phantom's muscle
        if row.t2_ms is not None and row.volume_ml and row.volume_ml > 5:
            assert row.t2_ms == pytest.approx(truth[str(row.label_value)]["water_t2_ms"], abs=3.0), row.name

    # override a grade, then export with the reviewer's grades (DICOM SEG and SR from the source series)
    automatic = by_key[("vastus_lateralis", "right")].fat.value
    chosen = (automatic + 2) % 5
    rows = report_table.set_grade(rows, ("vastus_lateralis", "right"), "fat", chosen)
    grades = work / "reviewer_grades.json"
    grades.write_text(json.dumps(report_table.reviewer_grades(rows)))
    export = tmp_path / "export"
    _run("report", pipeline.report_arguments(
        work / "muscles_edited.nii.gz", export, work / "t2" / "t2w.nii.gz", work / "ff" / "ff.nii.gz",
        reviewer_grades=grades, anatomy=structural, source_dicom=structural))
    exported = {r.row_key: r for r in report_table.load_report_rows(export / "report.json")}
    graded = exported[("vastus_lateralis", "right")].fat
    assert graded.value == chosen and graded.reviewed and graded.automatic == automatic
    for name in ("report.csv", "report.html", "seg.dcm", "report_sr.dcm"):
        assert (export / name).is_file(), name
    seg = pydicom.dcmread(str(export / "seg.dcm"))
    sr = pydicom.dcmread(str(export / "report_sr.dcm"))
    assert seg.Modality == "SEG" and sr.Modality == "SR"
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == entry.uid      # filed under the study it came from
    columns = {c.name: c for c in report_table.table_columns(exported.values())}
    assert any("(reviewer; auto" in text for text in columns["Fat R"].values)
