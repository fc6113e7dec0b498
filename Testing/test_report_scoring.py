"""Scoring: band edges, site overrides, validation, z-scores and reviewer provenance."""
from __future__ import annotations

import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.report import scoring


@pytest.fixture(scope="module")
def config():
    return scoring.load_scoring()


@pytest.mark.parametrize("t2_ms, grade", [(20.0, 0), (36.39, 0), (36.4, 1), (41.99, 1), (42.0, 2), (47.99, 2),
                                          (48.0, 3), (90.0, 3)])
def test_edema_bands_and_edges(config, t2_ms, grade):
    grades = scoring.auto_grades({"t2": {"mean": t2_ms, "median": 0.0}}, config)
    assert grades["edema"]["grade"] == grade   # graded on the mean by default
    assert grades["edema"]["source"] == "auto"
    assert grades["edema"]["label"] == config["edema"]["labels"][grade]


@pytest.mark.parametrize("ff, grade", [(0.0, 0), (9.99, 0), (10.0, 1), (29.99, 1), (30.0, 2), (59.99, 2),
                                       (60.0, 3), (89.99, 3), (90.0, 4), (100.0, 4)])
def test_fat_bands_and_edges(config, ff, grade):
    assert scoring.auto_grades({"ff": {"mean": ff}}, config)["fat"]["grade"] == grade


def test_default_threshold_is_the_documented_one(config):
    assert config["edema"]["normal_threshold_ms"] == 36.4
    assert config["edema"]["edges_ms"][0] == 36.4
    assert "36.4" in scoring.DEFAULTS_PATH.read_text()


def test_missing_map_gives_no_grade(config):
    grades = scoring.auto_grades({"t2": None, "ff": {"mean": float("nan")}}, config)
    assert grades["edema"]["grade"] is None and grades["fat"]["grade"] is None


def test_default_grades_the_mean_and_a_site_may_choose_the_median(tmp_path, config):
    """The 36.4 ms cutoff is a mean of the segmented muscle: the default grades the mean; a site
    file can still choose the median; a report without the key (older) was graded on the median."""
    row = {"t2": {"mean": 38.0, "median": 35.0}}
    assert scoring.edema_statistic(config) == "mean"
    grades = scoring.auto_grades(row, config)
    assert grades["edema"]["grade"] == 1 and grades["edema"]["basis"] == "water T2 mean (ms)"
    site = tmp_path / "site.toml"
    site.write_text('[edema]\nstatistic = "median"\n')
    median = scoring.auto_grades(row, scoring.load_scoring(site))["edema"]
    assert median["grade"] == 0 and median["value"] == 35.0
    assert scoring.edema_statistic({"edema": {}}) == "median"


def test_site_override_and_z_score(tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('name = "Site X"\n[edema]\nstatistic = "median"\nedges_ms = [35.0, 38.0, 41.0]\n'
                    "[edema.healthy_reference]\nmean_ms = 31.0\nsd_ms = 2.0\n")
    config = scoring.load_scoring(site)
    assert config["name"] == "Site X" and config["fat"]["edges_percent"] == [10.0, 30.0, 60.0, 90.0]
    grades = scoring.auto_grades({"t2": {"mean": 20.0, "median": 38.0}}, config)
    assert grades["edema"]["grade"] == 2  # graded on the median, on the site's bands
    assert grades["edema_z_score"] == pytest.approx(3.5)
    assert scoring.auto_grades({"t2": {"mean": 38.0}}, scoring.load_scoring())["edema_z_score"] is None


@pytest.mark.parametrize("text, message", [
    ("[edema]\nedges_ms = [40.0, 36.4, 48.0]\n", "ascending"),
    ("[fat]\nlabels = ['a', 'b']\n", "one more entry"),
    ("[edema]\nstatistic = 'max'\n", "statistic"),
    ("not toml ===", "TOML"),
])
def test_bad_site_files(tmp_path, text, message):
    site = tmp_path / "bad.toml"
    site.write_text(text)
    with pytest.raises(InputError, match=message):
        scoring.load_scoring(site)
    with pytest.raises(InputError, match="not found"):
        scoring.load_scoring(tmp_path / "absent.toml")


def test_reviewer_grade_kept_and_disagreement_recorded(config):
    auto = scoring.auto_grades({"t2": {"mean": 45.0}, "ff": {"mean": 5.0}}, config)
    review = {"edema": {"grade": 1, "source": "reviewer", "reviewer": "Dr A", "note": "artefact"}}
    merged = scoring.apply_review(auto, review, {"edema": config["edema"]["labels"], "fat": config["fat"]["labels"]})
    assert merged["edema"]["grade"] == 1 and merged["edema"]["source"] == "reviewer"
    assert merged["edema"]["auto_grade"] == 2 and merged["edema"]["auto_disagrees"] is True
    assert merged["edema"]["reviewer"] == "Dr A"
    assert merged["fat"]["source"] == "auto" and merged["fat"]["grade"] == 0
    with pytest.raises(InputError, match="outside"):
        scoring.apply_review(auto, {"fat": 7}, {"edema": config["edema"]["labels"], "fat": config["fat"]["labels"]})


def test_overrides_file_format():
    reviews = scoring.reviews_from_overrides({"vastus_lateralis_R": {"edema": 3, "reviewer": "B"}}, "o.json")
    assert reviews["vastus_lateralis_R"]["edema"]["grade"] == 3
    assert reviews["vastus_lateralis_R"]["edema"]["source"] == "reviewer"
    with pytest.raises(InputError):
        scoring.reviews_from_overrides(["not", "a", "dict"], "o.json")
