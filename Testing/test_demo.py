"""Acceptance: `myositis-qmri demo` synthesises an exam, runs the real pipeline (EPG T2 fit,
fat-water separation, deep-learning segmentation) and ends by printing report.html; the
report matches the phantom's per-muscle truth."""
from __future__ import annotations

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


@pytest.mark.slow
def test_demo_report_matches_phantom_truth(tmp_path, capsys):
    _require_stages()
    out = tmp_path / "demo"
    # The demo exactly as a user runs it (default size, 1.5 mm pixels; about 25 s).
    assert cli.main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.endswith("report.html") and Path(printed).is_file()
    report = json.loads((Path(printed).parent / "report.json").read_text())
    truth = json.loads((out / "exam" / "truth" / "truth.json").read_text())["muscles"]
    config = scoring.load_scoring()
    failures = []
    for row in report["muscles"]:
        true = truth[str(row["label_value"])]
        t2_err = row["t2"]["median"] - true["water_t2_ms"]
        ff_err = row["ff"]["mean"] - true["ff_percent"]
        true_grades = scoring.auto_grades({"t2": {"median": true["water_t2_ms"], "mean": true["water_t2_ms"]},
                                           "ff": {"mean": true["ff_percent"]}}, config)
        if abs(t2_err) >= 1.0 or abs(ff_err) >= 1.5 \
                or row["grades"]["edema"]["grade"] != true_grades["edema"]["grade"] \
                or row["grades"]["fat"]["grade"] != true_grades["fat"]["grade"]:
            failures.append(f"{row['key']}: T2 {t2_err:+.2f} ms, FF {ff_err:+.2f} points, grades "
                            f"{row['grades']['edema']['grade']}/{row['grades']['fat']['grade']} vs "
                            f"{true_grades['edema']['grade']}/{true_grades['fat']['grade']}")
    assert not failures, "\n".join(failures)
    for name in ("report.csv", "report.pdf", "seg.dcm", "report_sr.dcm"):
        assert (Path(printed).parent / name).is_file()
