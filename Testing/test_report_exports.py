"""Report exports: JSON/CSV agreement, reviewer provenance across recomputation, longitudinal
change, DICOM SEG/SR/maps read back, de-identified copies, and the HTML in headless chromium."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from myositis_qmri.io.dicom_write import ImageStack, SeriesSpec, StudyInfo, write_series
from myositis_qmri.io.load import load_volume
from myositis_qmri.pipeline import RunOptions, make_report
from myositis_qmri.report.build import ReportInputs
from myositis_qmri.report.dicom_export import read_source_datasets
from myositis_qmri.volume import Volume

pytestmark = pytest.mark.dicom

PROJECT = Path(__file__).resolve().parents[1]
TEXT_ONLY = ("json", "csv")


def make_inputs(t2_shift=0.0, ff_shift=0.0, drop=()):
    labels = np.zeros((5, 40, 64), np.int16)
    for i, value in enumerate(v for v in range(1, 23) if v not in drop):
        r, c = divmod(i, 6)
        labels[1:4, 2 + r * 9: 8 + r * 9, 2 + c * 10: 9 + c * 10] = value
    rng = np.random.default_rng(1)
    t2 = np.where(labels > 0, 30.0 + 0.8 * labels + t2_shift + rng.normal(0, 0.5, labels.shape), 0.0)
    ff = np.where(labels > 0, 4.0 * labels + ff_shift + rng.normal(0, 0.5, labels.shape), 0.0)
    lab = Volume(labels, (2.0, 2.0, 6.0), (-60.0, -40.0, 10.0))
    return lab, lab.with_array(t2.astype(np.float32)), lab.with_array(ff.astype(np.float32))


def report_in(out: Path, formats=TEXT_ONLY, **kwargs) -> dict:
    labels, t2, ff = kwargs.pop("maps", None) or make_inputs()
    inputs = ReportInputs(labels, t2, ff, anatomy=kwargs.pop("anatomy", None), study=kwargs.pop("study", {}),
                          source_dicom=kwargs.pop("source_dicom", {}))
    make_report(inputs, out, RunOptions(formats=formats, **kwargs))
    return json.loads((out / "report.json").read_text())


def test_json_and_csv_agree(tmp_path):
    report = report_in(tmp_path)
    assert report["schema"].startswith("myositis-qmri/report/") and report["software"]["version"]
    with open(tmp_path / "report.csv", newline="") as handle:
        rows = {r["key"]: r for r in csv.DictReader(handle)}
    assert len(rows) == 22 == len(report["muscles"])
    for muscle in report["muscles"]:
        r = rows[muscle["key"]]
        assert float(r["volume_ml"]) == muscle["volume_ml"]
        for kind in ("t2", "ff"):
            for stat in ("mean", "median", "sd", "iqr"):
                assert float(r[f"{kind}_{stat}"]) == muscle[kind][stat]
        assert int(r["edema_grade"]) == muscle["grades"]["edema"]["grade"]
        assert int(r["fat_grade"]) == muscle["grades"]["fat"]["grade"]
        assert r["edema_source"] == "auto"


def test_reviewer_override_survives_recomputation(tmp_path):
    overrides = tmp_path / "review.json"
    overrides.write_text(json.dumps({"rectus_femoris_L": {"edema": 3, "fat": 0, "reviewer": "Dr R",
                                                          "note": "STIR confirms"}}))
    out = tmp_path / "out"
    first = report_in(out, review=str(overrides))
    rf = next(m for m in first["muscles"] if m["key"] == "rectus_femoris_L")
    assert rf["grades"]["edema"] | {} and rf["grades"]["edema"]["grade"] == 3
    assert rf["grades"]["edema"]["source"] == "reviewer" and rf["grades"]["edema"]["reviewer"] == "Dr R"
    auto_before = rf["grades"]["edema"]["auto_grade"]
    # Recompute into the same folder with different maps and erosion: the reviewer's grade stays,
    # the automatic grade is updated beside it.
    second = report_in(out, maps=make_inputs(t2_shift=20.0), erode=True)
    rf2 = next(m for m in second["muscles"] if m["key"] == "rectus_femoris_L")
    assert rf2["grades"]["edema"]["grade"] == 3 and rf2["grades"]["edema"]["source"] == "reviewer"
    assert rf2["grades"]["edema"]["auto_grade"] == 3 != auto_before
    assert rf2["grades"]["fat"]["grade"] == 0 and rf2["grades"]["fat"]["auto_disagrees"] is True
    others = [m for m in second["muscles"] if m["key"] != "rectus_femoris_L"]
    assert all(m["grades"]["edema"]["source"] == "auto" for m in others)
    assert any("reviewer grades kept" in n for n in second["notes"])


def test_longitudinal_deltas_and_flags(tmp_path):
    baseline = report_in(tmp_path / "v1")
    follow = report_in(tmp_path / "v2", maps=make_inputs(t2_shift=3.0, ff_shift=1.0, drop=(5,)),
                       previous=str(tmp_path / "v1" / "report.json"))
    change = {c["key"]: c for c in follow["longitudinal"]["muscles"]}
    before = {m["key"]: m for m in baseline["muscles"]}
    now = {m["key"]: m for m in follow["muscles"]}
    for key in ("sartorius_R", "biceps_femoris_short_head_L"):
        c = change[key]
        assert c["delta_t2_ms"] == pytest.approx(now[key]["t2"]["mean"] - before[key]["t2"]["mean"])
        assert c["delta_t2_ms"] == pytest.approx(3.0, abs=0.3)
        assert c["delta_ff_points"] == pytest.approx(now[key]["ff"]["mean"] - before[key]["ff"]["mean"])
        assert c["flags"] == ["t2"]  # 3 ms over the 2 ms limit; 1 point under the 2-point limit
    assert change["vastus_medialis_R"]["available"] is False  # empty at follow-up: not compared
    with open(tmp_path / "v2" / "report.csv", newline="") as handle:
        rows = {r["key"]: r for r in csv.DictReader(handle)}
    assert float(rows["sartorius_R"]["delta_t2_ms"]) == change["sartorius_R"]["delta_t2_ms"]
    assert rows["sartorius_R"]["change_flags"] == "t2"


@pytest.fixture(scope="module")
def dicom_report(tmp_path_factory):
    """A report on a DICOM-sourced segmentation with every export, de-identified copies included."""
    root = tmp_path_factory.mktemp("dicom_report")
    labels, t2, ff = make_inputs()
    anatomy = labels.with_array(np.where(labels.array > 0, 400.0, 100.0))
    study = StudyInfo(study_uid=pydicom.uid.generate_uid(), frame_of_reference_uid=pydicom.uid.generate_uid(),
                      patient_name="DOE^JANE", patient_id="P123")
    write_series(study, SeriesSpec("t1_tse", 1, [ImageStack(anatomy.array, ("ORIGINAL", "PRIMARY", "M", "ND"))],
                                   labels.geometry), root / "t1", "classic")
    source = load_volume(root / "t1")
    assert source.geometry.same_grid(labels.geometry)
    report = report_in(root / "out", formats=("json", "csv", "html", "pdf", "dicom"), maps=(labels, t2, ff),
                       anatomy=source, study={"patient_name": "DOE^JANE", "patient_id": "P123"},
                       source_dicom={"segmentation": read_source_datasets(source)}, anonymize=True)
    return root, report


def test_seg_and_sr_read_back_with_the_same_numbers(dicom_report):
    import highdicom as hd
    root, report = dicom_report
    out = root / "out"
    seg = hd.seg.segread(out / "seg.dcm")
    t1_series = pydicom.dcmread(next((root / "t1").iterdir())).SeriesInstanceUID
    assert seg.number_of_segments == 22
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == t1_series
    labels = make_inputs()[0].array
    by_label = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    mask = seg.get_volume(combine_segments=False).array if hasattr(seg, "get_volume") else None
    if mask is not None:
        number = by_label["Vastus lateralis (right)"]
        assert int(mask[..., number - 1].sum()) == int((labels == 3).sum())
    sr = hd.sr.srread(out / "report_sr.dcm")
    assert pydicom.dcmread(out / "report_sr.dcm").SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 22
    rows = {m["key"]: m for m in report["muscles"]}
    for group in groups:
        key = str(group.tracking_identifier)
        row = rows[key]
        values = {(m.name.meaning, m.derivation.meaning if m.derivation else None): m.value
                  for m in group.get_measurements()}
        assert values[("Volume", None)] == pytest.approx(row["volume_ml"])
        assert values[("Muscle water T2", "Median")] == pytest.approx(row["t2"]["median"])
        assert values[("Fat fraction", "Mean")] == pytest.approx(row["ff"]["mean"])
        grades = {q.name.meaning: q.value.value for q in group.get_qualitative_evaluations()}
        assert grades["Muscle edema grade"] == f"EDEMA{row['grades']['edema']['grade']}"
        assert grades["Fatty replacement grade"] == f"FAT{row['grades']['fat']['grade']}"
        segment = group.referenced_segment
        image_item = next(item for item in segment if "ReferencedSOPSequence" in item)
        assert image_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID


def test_seg_and_sr_carry_snomed_codes_and_laterality(dicom_report):
    import highdicom as hd
    from myositis_qmri.segmentation.labels import LABEL_BY_KEY, PRIVATE_SCHEME, SIDE_CODES, type_code
    root, _ = dicom_report
    out = root / "out"
    seg = pydicom.dcmread(out / "seg.dcm")
    assert len(seg.SegmentSequence) == 22
    for item in seg.SegmentSequence:
        label = LABEL_BY_KEY[item.TrackingID]
        code, side = type_code(label.muscle), SIDE_CODES[label.side]
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "123037004")
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        assert (prop.CodingSchemeDesignator, prop.CodeValue, prop.CodeMeaning) == (code.scheme, code.value, code.meaning)
        modifier = prop.SegmentedPropertyTypeModifierCodeSequence[0]
        assert (modifier.CodingSchemeDesignator, modifier.CodeValue) == ("SCT", side.value)
        region = item.AnatomicRegionSequence[0]
        assert (region.CodingSchemeDesignator, region.CodeValue, region.CodeMeaning) == ("SCT", "68367000", "Thigh")
        assert region.AnatomicRegionModifierSequence[0].CodeValue == side.value
    by_key = {item.TrackingID: item.SegmentedPropertyTypeCodeSequence[0] for item in seg.SegmentSequence}
    assert (by_key["vastus_lateralis_L"].CodeValue,
            by_key["vastus_lateralis_L"].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning) == ("1403006", "Left")
    assert by_key["sartorius_R"].CodeValue == "12595009"
    assert PRIVATE_SCHEME in {s.CodingSchemeDesignator for s in seg.CodingSchemeIdentificationSequence}
    # highdicom reads the descriptions back with the codes intact.
    described = {d.tracking_id: d for d in hd.seg.segread(out / "seg.dcm").SegmentSequence}
    assert described["gracilis_R"].segmented_property_type.value == "2577006"
    sr = hd.sr.srread(out / "report_sr.dcm")
    for group in sr.content.get_volumetric_roi_measurement_groups():
        label = LABEL_BY_KEY[str(group.tracking_identifier)]
        site = group.finding_sites[0]
        assert (site.value.scheme_designator, site.value.value) == (type_code(label.muscle).scheme,
                                                                    type_code(label.muscle).value)
        assert site.laterality.value == SIDE_CODES[label.side].value


def test_maps_as_dicom_read_back_in_true_units(dicom_report):
    root, _ = dicom_report
    _, t2, ff = make_inputs()
    t2_back = load_volume(root / "out" / "dicom" / "t2_map")
    ff_back = load_volume(root / "out" / "dicom" / "ff_map")
    assert t2_back.geometry.same_grid(t2.geometry)
    assert np.allclose(t2_back.array, np.clip(t2.array, 0, None), atol=0.051)
    assert np.allclose(ff_back.array, np.clip(ff.array, 0, None), atol=0.0051)
    ds = pydicom.dcmread(sorted((root / "out" / "dicom" / "t2_map").iterdir())[0])
    mapping = ds.RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "ms"
    assert ds.PatientID == "P123" and "DERIVED" in ds.ImageType


def test_anonymized_copies_carry_no_patient_identity(dicom_report):
    root, report = dicom_report
    anon = root / "out" / "anonymized"
    for name in ("report.json", "report.csv", "report.html"):
        text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", (anon / name).read_text())  # random letters in images
        assert "DOE" not in text and "P123" not in text
    assert "DOE^JANE" in (root / "out" / "report.html").read_text()
    for path in [anon / "seg.dcm", anon / "report_sr.dcm", *sorted((anon / "dicom").rglob("*.dcm"))]:
        ds = pydicom.dcmread(path)
        assert "DOE" not in str(ds.get("PatientName", "")) and ds.get("PatientID", "") != "P123"
    seg, sr = pydicom.dcmread(anon / "seg.dcm"), pydicom.dcmread(anon / "report_sr.dcm")
    assert sr.CurrentRequestedProcedureEvidenceSequence and seg.StudyInstanceUID == sr.StudyInstanceUID


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_html_renders_in_headless_chromium(dicom_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    root, _ = dicom_report
    html_path = root / "out" / "report.html"
    text = html_path.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    assert text.count("data:image/png;base64,") >= 4
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2600", f"--screenshot={shot}"]
    log = subprocess.run([browser, *flags, html_path.as_uri()], capture_output=True, text=True, timeout=120)
    assert log.returncode == 0, log.stderr[-2000:]
    dom = subprocess.run([browser, *flags[:-1], "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert "Per muscle: statistics and grades" in dom.stdout and "Vastus lateralis" in dom.stdout
    # Only page errors count: chromium also logs harmless D-Bus/GPU messages in containers.
    page_errors = [line for line in (log.stderr + dom.stderr).splitlines()
                   if "CONSOLE" in line or "Uncaught" in line or "net::ERR" in line]
    assert not page_errors, page_errors
    from PIL import Image
    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape[1] == 1280 and image.std() > 10  # something was drawn, not a blank page
    target = os.environ.get("MYOSITIS_QMRI_SCREENSHOT")
    if target:
        shutil.copy(shot, target)


def test_whole_thigh_t2_is_read_against_the_threshold_on_its_mean(tmp_path):
    """The 36.4 ms threshold separated patients from controls on the mean thigh T2: the summary
    says on which side of it the thigh's mean lies, whatever statistic grades the muscles."""
    report = report_in(tmp_path / "a", formats=("json", "html"))
    mean_ms = report["whole_thigh"]["both"]["t2_mean_ms"]
    for threshold_ms, word in ((round(mean_ms - 1.0, 1), "above"), (round(mean_ms + 1.0, 1), "below")):
        scoring = tmp_path / f"scoring_{word}.toml"
        scoring.write_text(f"[edema]\nnormal_threshold_ms = {threshold_ms}\nedges_ms = [{threshold_ms}, 60.0, 70.0]\n")
        out = tmp_path / word
        report_in(out, formats=("json", "html"), scoring=str(scoring))
        assert f"<td>{word} {threshold_ms:g} ms</td>" in (out / "report.html").read_text()


def test_a_report_leaves_no_figure_open(tmp_path):
    """pyplot keeps every figure until it is closed: a batch of studies, or one Slicer session
    reporting visit after visit, would pile up the figures of every report."""
    import matplotlib.pyplot as plt
    before = set(plt.get_fignums())
    report_in(tmp_path / "a", formats=("json", "html", "pdf"))
    assert set(plt.get_fignums()) <= before


def test_a_figure_that_fails_leaves_none_of_the_others_open(tmp_path, monkeypatch):
    """One figure raising part way (after the overlays and heatmap are drawn) must not leave those open."""
    import matplotlib.pyplot as plt

    from myositis_qmri.report import figures

    def broken(report):
        raise RuntimeError("profile figure failed")
    monkeypatch.setattr(figures, "profile_figure", broken)
    before = set(plt.get_fignums())
    try:
        report_in(tmp_path, formats=("json", "html"))
    except Exception as error:          # however the pipeline reports the failed output
        assert "profile figure failed" in str(error) or error.__cause__ is not None
    assert set(plt.get_fignums()) <= before
