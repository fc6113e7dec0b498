"""Quality checks (report/quality.py): each fires on a case built to fail it and stays quiet on
the phantom exam and on real scans."""
from __future__ import annotations

import numpy as np
import pytest

from myositis_qmri.phantom import make_exam
from myositis_qmri.report import quality
from myositis_qmri.report.build import ReportInputs
from myositis_qmri.segmentation.infer import MIN_THIGH_MUSCLE_FRACTION


@pytest.fixture(scope="module")
def exam():
    return make_exam(seed=2, size="small")


def _inputs(exam, **changes) -> ReportInputs:
    labels = exam.muscle_labels.with_array(exam.muscle_labels.array, thigh_muscle_fraction=0.45)
    fields = dict(labels=labels, t2=exam.water_t2_ms, ff=exam.ff_percent, anatomy=exam.t1w,
                  b1=exam.b1, t2_profile="2d")
    fields.update(changes)
    return ReportInputs(**fields)


def _checks(inputs) -> set[str]:
    return {w["check"] for w in quality.quality_warnings(inputs)}


def _in_body(ff):
    """FF maps are zero outside the body (the fits' background mask): the phantom's likewise."""
    return ff.with_array(np.where(ff.array > 0.5, ff.array, 0.0).astype(np.float32))


def test_phantom_raises_no_warning(exam):
    assert quality.quality_warnings(_inputs(exam)) == []
    assert quality.quality_warnings(_inputs(exam, ff=_in_body(exam.ff_percent), anatomy=None)) == []


@pytest.mark.parametrize("case", ["swapped", "fraction_0_1", "left_third_swapped"])
def test_subcutaneous_fat_check_fires_on_swap_and_scaling(exam, case):
    ff = _in_body(exam.ff_percent).array
    swapped = np.where(ff > 0, 100.0 - ff, 0.0)
    if case == "swapped":
        bad = swapped
    elif case == "fraction_0_1":
        bad = ff / 100.0
    else:
        bad = ff.copy()
        bad[..., : ff.shape[2] * 2 // 5] = swapped[..., : ff.shape[2] * 2 // 5]
    inputs = _inputs(exam, ff=exam.ff_percent.with_array(bad.astype(np.float32)))
    warning = next(w for w in quality.quality_warnings(inputs) if w["check"] == "subcutaneous_fat_ff")
    assert "swapped" in warning["message"]


def test_subcutaneous_ring_is_fat_in_the_phantom(exam):
    """The ring lies in the phantom's subcutaneous fat (tissue label 2), not in skin or muscle."""
    from myositis_qmri.phantom.anatomy import SUBCUTANEOUS_FAT
    ring = quality.subcutaneous_ring(_in_body(exam.ff_percent), exam.muscle_labels)
    assert ring.sum() > quality.MIN_RING_VOXELS
    assert np.mean(exam.tissue_labels.array[ring] == SUBCUTANEOUS_FAT) > 0.9


def test_muscle_t2_check_fires_on_a_map_in_seconds(exam):
    seconds = exam.water_t2_ms.with_array(exam.water_t2_ms.array / 1000.0)
    assert "muscle_t2_range" in _checks(_inputs(exam, t2=seconds))


def test_b1_check_fires_when_b1_is_pinned_at_a_search_limit(exam):
    low, high = quality.b1_search_range("2d")
    muscle = exam.muscle_labels.array > 0
    pinned = exam.b1.array.copy()
    pinned[muscle & (np.arange(pinned.shape[2])[None, None, :] % 4 == 0)] = high   # a quarter of the muscle
    assert "b1_pinned" in _checks(_inputs(exam, b1=exam.b1.with_array(pinned)))
    # the 3d model folds B1 above 1 onto 1: its upper end is no limit, its lower end is
    folded = np.where(muscle, 1.0, exam.b1.array)
    assert "b1_pinned" not in _checks(_inputs(exam, b1=exam.b1.with_array(folded), t2_profile="3d"))
    floor = np.where(muscle, low, exam.b1.array)
    assert "b1_pinned" in _checks(_inputs(exam, b1=exam.b1.with_array(floor), t2_profile="3d"))


def test_thigh_share_check_reuses_the_segment_commands_share(exam):
    labels = exam.muscle_labels.with_array(exam.muscle_labels.array, thigh_muscle_fraction=0.08)
    warning = quality.check_thigh_share(labels)
    assert warning["check"] == "thigh_muscle_share" and warning["limit"] == MIN_THIGH_MUSCLE_FRACTION
    assert quality.check_thigh_share(exam.muscle_labels) is None   # user's masks: no share recorded


def test_overlap_check_fires_when_maps_miss_part_of_the_muscles(exam):
    """A map from a shorter slab (the last third of the slices missing) covers too little muscle."""
    nz = exam.water_t2_ms.array.shape[0]
    t2 = exam.water_t2_ms.array.copy()
    t2[2 * nz // 3:] = 0.0           # fit left out
    ff = exam.ff_percent.array.copy()
    ff[2 * nz // 3:] = np.nan
    found = _checks(_inputs(exam, t2=exam.water_t2_ms.with_array(t2), ff=exam.ff_percent.with_array(ff)))
    assert {"t2_map_overlap", "ff_map_overlap"} <= found
    assert quality.map_mask_overlap(exam.water_t2_ms, exam.muscle_labels, "t2") == pytest.approx(1.0)


# ---------------------------------------------------------------- real scans

def test_real_ideal_thighs_raise_no_fat_warning(shared_data):
    from myositis_qmri.io.nifti import read_volume
    from myositis_qmri.maps.dixon import compute_fat_fraction
    for subject in ("Thigh_001", "Thigh_002"):
        folder = shared_data / "thigh_ideal_predicted" / subject
        ff = compute_fat_fraction("wf", water=read_volume(folder / "water.nii.gz"),
                                  fat=read_volume(folder / "fat.nii.gz")).ff_percent
        labels = read_volume(folder / "labels.nii.gz")
        assert quality.check_subcutaneous_fat(ff, labels) is None, subject
        assert quality.check_overlap(ff, labels, "ff") is None, subject
        swapped = ff.with_array(np.where(ff.array > 0, 100 - ff.array, 0).astype(np.float32))
        assert quality.check_subcutaneous_fat(swapped, labels) is not None, subject


def test_real_three_point_dixon_raises_no_fat_warning(shared_data):
    from myositis_qmri.io.load import load_magnitude_phase
    from myositis_qmri.maps.dixon import compute_fat_fraction
    files = sorted(str(p) for p in (shared_data / "dixon3pt_thigh_siemens").glob("*.nii.gz"))
    magnitude, phase = load_magnitude_phase(files, te_ms=[3.45, 4.60, 5.75])
    ff = compute_fat_fraction("auto", magnitude=magnitude, phase=phase, field_t=3.0).ff_percent
    assert quality.check_subcutaneous_fat(ff) is None
    swapped = ff.with_array(np.where(ff.array > 0, 100 - ff.array, 0).astype(np.float32))
    assert quality.check_subcutaneous_fat(swapped)["check"] == "subcutaneous_fat_ff"


def test_warnings_reach_report_json_html_and_pdf(exam, tmp_path):
    from myositis_qmri.pipeline import RunOptions, make_report
    ff = _in_body(exam.ff_percent).array
    swapped = exam.ff_percent.with_array(np.where(ff > 0, 100.0 - ff, 0.0).astype(np.float32))
    outputs = make_report(_inputs(exam, ff=swapped), tmp_path, RunOptions(formats=("json", "html", "pdf")))
    assert [w["check"] for w in outputs.warnings] == ["subcutaneous_fat_ff"] and not outputs.failures
    import json
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quality_warnings"][0]["check"] == "subcutaneous_fat_ff"
    html = (tmp_path / "report.html").read_text()
    assert html.index("Quality warnings") < html.index("Whole thigh")   # in the header, seen first
    assert (tmp_path / "report.pdf").stat().st_size > 0


def _with_confidence(labels, confidence: dict):
    from myositis_qmri.segmentation.export import labels_digest
    return labels.with_array(labels.array, thigh_muscle_fraction=0.45, outline_confidence=confidence,
                             labels_sha256=labels_digest(labels.array))


def test_outlines_the_network_was_unsure_of_are_flagged(exam, tmp_path):
    from myositis_qmri.report.build import build_report
    from myositis_qmri.report.scoring import load_scoring
    from myositis_qmri.report.export_csv import write_csv
    confidence = {label.key: 0.95 for label in _label_list()}
    confidence["adductors_L"] = 0.71
    labels = _with_confidence(exam.muscle_labels, confidence)
    warning = quality.check_outlines(labels)
    assert warning["check"] == "uncertain_outlines" and warning["value"] == 0.71
    assert "Adductor group (left) (0.71)" in warning["message"] and "right" not in warning["message"]
    report = build_report(_inputs(exam, labels=labels), load_scoring())
    rows = {row["key"]: row for row in report["muscles"]}
    assert rows["adductors_L"]["outline_uncertain"] and rows["adductors_L"]["outline_confidence"] == 0.71
    assert not rows["adductors_R"]["outline_uncertain"]
    assert "uncertain_outlines" in {w["check"] for w in report["quality_warnings"]}
    write_csv(report, tmp_path / "report.csv")
    assert ",0.71," in (tmp_path / "report.csv").read_text()


def test_edited_masks_are_not_flagged_by_the_networks_confidence(exam):
    confidence = {label.key: 0.5 for label in _label_list()}
    labels = _with_confidence(exam.muscle_labels, confidence)
    edited = labels.with_array(np.where(labels.array == 6, 0, labels.array).astype(labels.array.dtype))
    assert quality.check_outlines(edited) is None and quality.outline_confidence(edited) == {}
    assert quality.check_outlines(exam.muscle_labels) is None        # the user's own masks: no record


def _label_list():
    from myositis_qmri.segmentation.labels import LABELS
    return LABELS
