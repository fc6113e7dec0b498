"""Slicer-free models behind the module's tables: report rows, grades, reviewer overrides,
study roles, colours, terminology and dependency checks.

The report rows come from a real core report built on the phantom's truth masks and maps,
so the table shows the numbers the core computes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MyositisQMRI"))

from MyositisQMRILib import report_table as rt, study, terminology  # noqa: E402
from myositis_qmri.segmentation import labels  # noqa: E402


@pytest.fixture(scope="module")
def phantom_report():
    from myositis_qmri.phantom import make_exam
    from myositis_qmri.report import build, scoring

    exam = make_exam(5, "small")
    inputs = build.ReportInputs(labels=exam.muscle_labels, t2=exam.water_t2_ms, ff=exam.ff_percent)
    report = build.build_report(inputs, scoring.load_scoring())
    return json.loads(json.dumps(report, default=float)), exam.truth


def test_rows_from_core_report_match_phantom_truth(phantom_report):
    report, truth = phantom_report
    rows = rt.rows_from_report(report)
    assert [r.label_value for r in rows] == sorted(truth)
    for row in rows:
        assert row.t2_ms == pytest.approx(truth[row.label_value]["water_t2_ms"], abs=1e-3)
        assert row.ff_percent == pytest.approx(truth[row.label_value]["ff_percent"], abs=1e-3)
        assert row.volume_ml > 0
        assert not row.edema.reviewed and row.edema.value == row.edema.automatic
    by_key = {r.row_key: r for r in rows}
    # Grades follow the default bands (edema edges 36.4/42/48 ms, FF edges 10/30/60/90 %).
    for row in rows:
        t2, ff = truth[row.label_value]["water_t2_ms"], truth[row.label_value]["ff_percent"]
        assert row.edema.value == int(np.searchsorted([36.4, 42.0, 48.0], t2, side="right"))
        assert row.fat.value == int(np.searchsorted([10.0, 30.0, 60.0, 90.0], ff, side="right"))
    assert len(by_key) == 22


def test_paired_rows_put_left_and_right_side_by_side(phantom_report):
    pairs = rt.paired_rows(rt.rows_from_report(phantom_report[0]))
    assert [p.key for p in pairs] == [m.key for m in labels.MUSCLES]
    for pair in pairs:
        assert pair.right.side == "right" and pair.left.side == "left"
        assert pair.left.label_value == pair.right.label_value + labels.LEFT_OFFSET
    names, right, left = rt.chart_columns(rt.rows_from_report(phantom_report[0]), "t2_ms")
    assert names[2] == "VL" and right[2] == pytest.approx(pairs[2].right.t2_ms)
    assert left[2] == pytest.approx(pairs[2].left.t2_ms)


def test_reviewer_grade_survives_recompute_and_clears_when_set_back(phantom_report):
    rows = rt.rows_from_report(phantom_report[0])
    key = ("vastus_lateralis", "right")
    auto = {r.row_key: r for r in rows}[key].fat.automatic
    reviewed = rt.set_grade(rows, key, "fat", 4)
    assert {r.row_key: r for r in reviewed}[key].fat == rt.Grade(4, rt.REVIEWER, auto)
    assert rt.reviewer_grades(reviewed) == {"vastus_lateralis_R": {"fat": 4}}

    # Recompute: new numbers (a shrunk mask), automatic grade changes; the reviewer grade stays.
    report = json.loads(json.dumps(phantom_report[0]))
    for row in report["muscles"]:
        if row["key"] == "vastus_lateralis_R":
            row["volume_ml"] *= 0.5
            row["grades"]["fat"].update(grade=0, auto_grade=0)
    merged = {r.row_key: r for r in rt.merge_reviewer_grades(rt.rows_from_report(report), reviewed)}
    assert merged[key].fat == rt.Grade(4, rt.REVIEWER, 0)
    assert merged[key].volume_ml == pytest.approx({r.row_key: r for r in rows}[key].volume_ml * 0.5)
    assert "reviewer; auto 0" in rt.cell_text(merged[key], "fat")
    untouched = ("vastus_lateralis", "left")
    assert not merged[untouched].fat.reviewed

    back = rt.set_grade(list(merged.values()), key, "fat", 0)
    assert not {r.row_key: r for r in back}[key].fat.reviewed
    assert rt.reviewer_grades(back) == {}
    with pytest.raises(ValueError):
        rt.set_grade(rows, key, "edema", 4)          # edema has grades 0-3 only


def test_core_report_reads_reviewer_grades_as_set(phantom_report):
    """A report the core wrote with reviewer provenance shows up as reviewed in the table."""
    report = json.loads(json.dumps(phantom_report[0]))
    row = report["muscles"][0]
    row["grades"]["edema"].update(grade=3, source="reviewer")
    first = rt.rows_from_report(report)[0]
    assert first.edema.reviewed and first.edema.value == 3 and first.edema.automatic == row["grades"]["edema"]["auto_grade"]


def test_empty_muscle_shows_blank_cells_and_grey_grade(phantom_report):
    report = json.loads(json.dumps(phantom_report[0]))
    report["muscles"][0].update(t2=None, ff=None, volume_ml=0.0)
    report["muscles"][0]["grades"]["edema"].update(grade=None, auto_grade=None)
    row = rt.rows_from_report(report)[0]
    assert rt.cell_text(row, "t2_ms") == "" and rt.cell_text(row, "edema") == ""
    assert rt.grade_colour("edema", row.edema.value) == "#bdbdbd"


def test_grade_colours_run_from_green_to_dark_red_with_readable_text():
    edema = [rt.grade_colour("edema", g) for g in range(4)]
    fat = [rt.grade_colour("fat", g) for g in range(5)]
    assert edema[0] == fat[0] == "#1a9850" and fat[-1] == "#7f0000"
    assert len(set(edema)) == 4 and len(set(fat)) == 5
    assert rt.text_colour("#1a9850") == "#000000" or rt.text_colour("#1a9850") == "#ffffff"
    assert rt.text_colour("#7f0000") == "#ffffff" and rt.text_colour("#fee08b") == "#000000"


def test_table_columns_pair_sides():
    headers = [c[0] for c in rt.COLUMNS]
    assert headers[0] == "Muscle"
    assert headers[1:3] == ["T2 (ms) R", "T2 (ms) L"] and headers[-2:] == ["Fat R", "Fat L"]


def test_study_roles_defaults_and_user_override():
    entries = {"series": [
        {"description": "t1", "classification": "t1w", "series_uid": "1", "n_echoes": 1, "n_slices": 20},
        {"description": "stir", "classification": "stir", "series_uid": "2", "n_slices": 20},
        {"description": "mese", "classification": "mese", "series_uid": "3", "n_echoes": 17,
         "echo_times_ms": [10, 20], "matrix": [256, 128]},
        {"description": "ff", "classification": "vendor_ff", "series_uid": "4"},
        {"description": "loc", "classification": "unknown", "series_uid": "5"},
    ], "problems": [{"path": "/x/bad.dcm", "reason": "not DICOM"}]}
    rows = study.rows_from_inspect_json(json.dumps(entries))
    assert [r.role for r in rows] == [study.ROLE_STRUCTURAL, study.ROLE_STRUCTURAL, study.ROLE_MESE,
                                      study.ROLE_DIXON, study.ROLE_IGNORE, study.ROLE_IGNORE]
    assert not rows[-1].usable and "not DICOM" in rows[-1].summary
    assert "17 echoes" in rows[2].summary and "256x128" in rows[2].summary
    chosen = study.choose_inputs(rows)
    assert chosen.structural.description == "t1" and chosen.mese.description == "mese"
    # The user prefers the STIR for segmentation and ignores the FF map.
    rows = study.override_role(rows, 1, study.ROLE_STRUCTURAL)
    rows = study.override_role(rows, 3, study.ROLE_IGNORE)
    chosen = study.choose_inputs(rows)
    assert chosen.structural.description == "stir" and chosen.dixon == []
    assert chosen.missing() == ["Dixon/FF series"]
    with pytest.raises(ValueError):
        study.override_role(rows, 0, "Banana")
    with pytest.raises(ValueError):
        study.series_arguments(rows[0])                  # files unknown until the DICOM database lists them


def test_terminology_entry_uses_label_codes():
    from myositis_qmri.segmentation.labels import Code, MuscleLabel, Muscle

    coded = MuscleLabel(14, Muscle(3, "vastus_lateralis", "Vastus lateralis", "VL", (1, 2, 3),
                                   Code("SCT", "12345", "Vastus lateralis muscle"), "anterior"), "left")
    entry = terminology.terminology_entry(coded)
    parts = entry.split("~")
    assert len(parts) == 7
    assert parts[1] == "SCT^123037004^Anatomical Structure"
    assert parts[2] == "SCT^12345^Vastus lateralis muscle" and parts[3] == "SCT^7771000^Left"
    props = terminology.segment_properties(labels.LABEL_BY_VALUE[1])
    assert props["name"] == "Sartorius (right)" and props["colour"] == pytest.approx((230 / 255, 159 / 255, 0.0))




def test_a_mask_the_network_was_unsure_of_says_so_in_the_table(phantom_report):
    import copy
    report = copy.deepcopy(phantom_report[0])
    report["muscles"][5]["outline_uncertain"] = True
    rows = rt.rows_from_report(report)
    flagged = [r for r in rows if r.outline_uncertain]
    assert [r.label_value for r in flagged] == [report["muscles"][5]["label_value"]]
    assert rt.cell_text(flagged[0], "volume_ml").endswith(" (check outline)")
    assert not rt.cell_text(rows[0], "volume_ml").endswith(")") and rt.cell_text(flagged[0], "t2_ms") == \
        rt.cell_text(flagged[0], "t2_ms").split(" ")[0]
