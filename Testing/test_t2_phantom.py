"""Water T2 on the phantom exam against its ground truth: per-muscle medians and the
subject-calibrated fat T2 (`fat_t2_ms="auto"`) on its subcutaneous fat."""
from __future__ import annotations

import numpy as np
import pytest

from myositis_qmri.maps.relaxation import FAT_T2_MS
from myositis_qmri.maps.t2 import fit_water_t2
from myositis_qmri.phantom import make_exam

SUBCUTANEOUS_FAT = 2   # phantom tissue label


@pytest.fixture(scope="module")
def exam():
    return make_exam(seed=0, size="small")


def test_per_muscle_median_water_t2_within_1ms(exam):
    # the phantom simulates its MESE with the non-selective (3d) EPG model
    maps = fit_water_t2(exam.mese, profile="3d")
    labels = exam.muscle_labels.array
    errors = {}
    for value, truth in exam.truth.items():
        inside = labels == value
        assert inside.sum() >= 20, f"muscle {value} too small in the phantom"
        errors[truth["key"]] = float(np.nanmedian(maps.water_t2_ms.array[inside])) - truth["water_t2_ms"]
    assert max(abs(e) for e in errors.values()) <= 1.0, errors
    fat = exam.tissue_labels.array == SUBCUTANEOUS_FAT
    assert np.median(maps.ff_percent.array[fat]) > 80      # subcutaneous fat is read as fat


def test_fat_t2_auto_calibrates_on_subcutaneous_fat(exam):
    maps = fit_water_t2(exam.mese, profile="3d", fat_t2_ms="auto")
    assert maps.info["fat_t2_ms"] == pytest.approx(FAT_T2_MS, abs=3.0)
    assert "fat voxels" in maps.info["fat_t2_calibration"]
    muscle = exam.muscle_labels.array == 14       # a low-FF muscle, T2 52 ms
    assert np.nanmedian(maps.water_t2_ms.array[muscle]) == pytest.approx(52.0, abs=1.0)
