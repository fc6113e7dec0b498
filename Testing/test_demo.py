"""Acceptance: `myositis-qmri demo` synthesises an exam, runs the real pipeline (EPG T2 fit,
fat-water separation, deep-learning segmentation) and ends by printing report.html; the
report matches the phantom's per-muscle truth."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from myositis_qmri import cli
from myositis_qmri.report import scoring


def _require_stages():
    from myositis_qmri.maps import dixon
    from myositis_qmri.segmentation import model
    if not hasattr(dixon, "compute_fat_fraction"):
        pytest.skip("fat-fraction stage (maps.dixon.compute_fat_fraction) not available")
    from myositis_qmri.errors import ModelFileError
    try:
        model.default_model_path()
    except ModelFileError as exc:
        pytest.skip(f"no shipped segmentation model yet ({exc})")


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    """The demo exactly as a user runs it (default size, 1.5 mm pixels; about 25 s)."""
    _require_stages()
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["demo", "--out", str(out)]) == 0
    html = Path(printed.getvalue().strip().splitlines()[-1])
    report = json.loads((html.parent / "report.json").read_text())
    truth = json.loads((out / "exam" / "truth" / "truth.json").read_text())["muscles"]
    return html, report, truth


def _truth_grades(true: dict, config: dict) -> dict:
    return scoring.auto_grades({"t2": {"median": true["water_t2_ms"], "mean": true["water_t2_ms"]},
                                "ff": {"mean": true["ff_percent"]}}, config)


@pytest.mark.slow
def test_demo_ends_with_report_and_water_t2_matches_truth(demo_result):
    html, report, truth = demo_result
    assert html.name == "report.html" and html.is_file()
    for name in ("report.csv", "report.pdf", "seg.dcm", "report_sr.dcm"):
        assert (html.parent / name).is_file()
    assert len(report["muscles"]) == 22 and not any(row["empty"] for row in report["muscles"])
    failures = [f"{row['key']}: T2 {row['t2']['median'] - truth[str(row['label_value'])]['water_t2_ms']:+.2f} ms"
                for row in report["muscles"]
                if abs(row["t2"]["median"] - truth[str(row["label_value"])]["water_t2_ms"]) >= 1.0]
    assert not failures, "\n".join(failures)
    config = scoring.load_scoring()
    edema = [row["key"] for row in report["muscles"]
             if row["grades"]["edema"]["grade"] != _truth_grades(truth[str(row["label_value"])], config)["edema"]["grade"]]
    assert not edema, edema


@pytest.mark.slow
def test_demo_mean_ff_and_fat_grades_match_truth(demo_result):
    html, report, truth = demo_result
    config = scoring.load_scoring()
    failures = []
    for row in report["muscles"]:
        true = truth[str(row["label_value"])]
        ff_err = row["ff"]["mean"] - true["ff_percent"]
        if abs(ff_err) >= 1.5 or row["grades"]["fat"]["grade"] != _truth_grades(true, config)["fat"]["grade"]:
            failures.append(f"{row['key']}: FF {ff_err:+.2f} points, fat grade {row['grades']['fat']['grade']}")
    assert not failures, "\n".join(failures)


def test_demo_raises_no_quality_warning_and_no_failed_export(demo_result):
    html, report, _ = demo_result
    assert report["quality_warnings"] == [] and report["export_failures"] == []
    summary = json.loads((html.parent / "run_summary.json").read_text())
    assert summary["status"] == "complete" and summary["quality_warnings"] == []
