"""Per-muscle statistics: values, erosion, alignment across grids, NaN/inf, empty and
non-overlapping masks, asymmetry and whole-thigh summaries."""
from __future__ import annotations

import numpy as np
import pytest

from myositis_qmri.errors import InputError
from myositis_qmri.report.stats import asymmetry_index, compute_statistics
from myositis_qmri.volume import Volume

SPACING = (2.0, 2.0, 5.0)


def block_labels(shape=(6, 40, 60), values=range(1, 23)):
    """Each label a 6x6 in-plane block on slices 1-4 (4 slices)."""
    labels = np.zeros(shape, np.int16)
    for i, value in enumerate(values):
        r, c = divmod(i, 6)
        labels[1:5, 2 + r * 9: 8 + r * 9, 2 + c * 9: 8 + c * 9] = value
    return Volume(labels, SPACING, (0.0, 0.0, 0.0))


def maps_for(labels: Volume, rng=None):
    rng = rng or np.random.default_rng(0)
    lab = labels.array
    t2 = np.where(lab > 0, 30.0 + lab + rng.normal(0, 1.0, lab.shape), 0.0)
    ff = np.where(lab > 0, 2.0 * lab + rng.normal(0, 0.5, lab.shape), 0.0)
    return labels.with_array(t2.astype(np.float32)), labels.with_array(ff.astype(np.float32))


def row(result, key):
    return next(r for r in result["muscles"] if r["key"] == key)


def test_statistics_match_numpy():
    labels = block_labels()
    t2, ff = maps_for(labels)
    result = compute_statistics(labels, {"t2": t2, "ff": ff}, edema_threshold_ms=36.4)
    r = row(result, "vastus_lateralis_R")  # label 3
    values = t2.array[labels.array == 3].astype(float)
    assert r["volume_ml"] == pytest.approx(4 * 36 * 2 * 2 * 5 / 1000)
    assert r["n_slices"] == 4
    assert r["t2"]["mean"] == pytest.approx(values.mean())
    assert r["t2"]["median"] == pytest.approx(np.median(values))
    assert r["t2"]["sd"] == pytest.approx(values.std(ddof=1))
    assert r["t2"]["iqr"] == pytest.approx(np.subtract(*np.percentile(values, [75, 25])))
    assert r["t2"]["percent_above_edema_threshold"] == pytest.approx(100 * np.mean(values >= 36.4))
    assert r["ff"]["mean"] == pytest.approx(ff.array[labels.array == 3].mean(), rel=1e-6)
    assert result["erosion"]["applied"] is False


def test_erosion_is_in_plane_and_recorded():
    labels = block_labels()
    t2, ff = maps_for(labels)
    result = compute_statistics(labels, {"t2": t2}, erode=True, erosion_voxels=1)
    r = row(result, "sartorius_R")
    assert result["erosion"]["applied"] and result["erosion"]["voxels"] == 1
    assert result["erosion"]["plane"] == "in-plane (x, y)"
    assert result["erosion"]["per_map"]["t2"] == {"voxels": 1, "mm": 2.0}
    assert r["t2"]["n_mask_voxels"] == 4 * 4 * 4  # 6x6 -> 4x4 on each of the 4 slices
    assert r["volume_ml"] == pytest.approx(4 * 36 * 0.02)  # volume from the full mask


def test_mask_from_a_coarser_grid_is_eroded_by_one_of_its_voxels():
    """A network mask made on a 4.6 mm grid and written on the 2 mm map grid: its border is only
    certain to a 4.6 mm voxel, so erosion takes the nearest whole number of map voxels, 2."""
    labels = block_labels()
    labels = labels.with_array(labels.array, resolution_mm=4.6)
    t2, _ = maps_for(labels)
    big = np.zeros_like(labels.array)
    big[:, 2:14, 2:14] = 3          # a 12x12 muscle: 8x8 left after 2 voxels
    labels = labels.with_array(big)
    result = compute_statistics(labels, {"t2": t2}, erode=True, erosion_voxels=1)
    assert result["erosion"]["mask_resolution_mm"] == 4.6
    assert result["erosion"]["per_map"]["t2"] == {"voxels": 2, "mm": 4.0}
    assert row(result, "vastus_lateralis_R")["t2"]["n_mask_voxels"] == 6 * 8 * 8
    # Drawn on the map grid itself: one map voxel.
    same = compute_statistics(labels.with_array(big, resolution_mm=None), {"t2": t2}, erode=True)
    assert same["erosion"]["per_map"]["t2"]["voxels"] == 1


def test_nan_and_inf_are_excluded_and_counted():
    labels = block_labels()
    t2, ff = maps_for(labels)
    t2.array[2, 3, 3] = np.nan
    t2.array[2, 3, 4] = np.inf
    ff.array[3, 4, 4] = -np.inf
    result = compute_statistics(labels, {"t2": t2, "ff": ff})
    r = row(result, "sartorius_R")
    assert r["t2"]["n_excluded_nonfinite"] == 2 and r["t2"]["n_voxels"] == 144 - 2
    assert r["ff"]["n_excluded_nonfinite"] == 1
    assert np.isfinite(r["t2"]["mean"]) and np.isfinite(r["ff"]["mean"])
    assert result["quality"]["t2"]["nonfinite_voxels_in_muscles"] == 2


def test_empty_mask_is_reported_not_nan():
    labels = block_labels(values=[v for v in range(1, 23) if v != 7])
    t2, ff = maps_for(labels)
    result = compute_statistics(labels, {"t2": t2, "ff": ff})
    r = row(result, "gracilis_R")
    assert r["empty"] is True and r["volume_ml"] == 0 and r["t2"] is None and r["ff"] is None
    asym = next(a for a in result["asymmetry"] if a["muscle_key"] == "gracilis")
    assert asym["volume_ml"] is None and asym["t2_mean_ms"] is None
    assert result["whole_thigh"]["right"]["n_muscles"] == 10


def test_masks_aligned_by_geometry_on_a_finer_map_grid():
    labels = block_labels()
    # The same field of view sampled at half the in-plane spacing, origin shifted by half a
    # coarse voxel minus half a fine voxel so the voxel centres nest.
    fine = np.kron(labels.array, np.ones((1, 2, 2), np.int16))
    origin = (-0.5, -0.5, 0.0)
    t2 = Volume(np.where(fine > 0, 30.0 + fine, 0.0).astype(np.float32), (1.0, 1.0, 5.0), origin)
    result = compute_statistics(labels, {"t2": t2})
    r = row(result, "semitendinosus_L")  # label 20
    assert r["t2"]["n_voxels"] == 4 * 36 * 4
    assert r["t2"]["median"] == pytest.approx(50.0)
    assert result["quality"]["t2"]["same_grid_as_segmentation"] is False


def test_non_overlapping_map_is_an_input_error():
    labels = block_labels()
    t2, _ = maps_for(labels)
    far = Volume(t2.array, SPACING, (500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="overlap"):
        compute_statistics(labels, {"t2": far}, sources={"seg": "muscles.nii.gz"})


def test_labels_outside_the_schema_are_refused():
    labels = block_labels()
    labels.array[0, 0, 0] = 40
    with pytest.raises(InputError, match="schema"):
        compute_statistics(labels, {"t2": maps_for(labels)[0]})


def test_asymmetry_and_whole_thigh():
    labels = block_labels()
    t2, ff = maps_for(labels)
    result = compute_statistics(labels, {"t2": t2, "ff": ff})
    right, left = row(result, "sartorius_R"), row(result, "sartorius_L")
    asym = next(a for a in result["asymmetry"] if a["muscle_key"] == "sartorius")
    expected = 100 * (right["t2"]["median"] - left["t2"]["median"]) / ((right["t2"]["median"] + left["t2"]["median"]) / 2)
    assert asym["t2_median_ms"] == pytest.approx(expected)
    assert asym["volume_ml"] == pytest.approx(0.0)
    both = result["whole_thigh"]["both"]
    in_muscle = labels.array > 0
    assert both["t2_mean_ms"] == pytest.approx(t2.array[in_muscle].astype(float).mean(), rel=1e-6)
    assert both["ff_weighted_mean_percent"] == pytest.approx(ff.array[in_muscle].astype(float).mean(), rel=1e-5)
    assert both["muscle_volume_ml"] == pytest.approx(22 * 144 * 0.02)
    assert asymmetry_index(10.0, 0.0) == pytest.approx(200.0) and asymmetry_index(None, 1.0) is None


def test_slice_profiles():
    labels = block_labels()
    t2, ff = maps_for(labels)
    result = compute_statistics(labels, {"t2": t2, "ff": ff})
    profile = result["slice_profiles"]["t2"]
    assert profile["position_mm"] == [5.0, 10.0, 15.0, 20.0]
    sar = profile["muscles"]["sartorius_R"]
    assert sar["area_cm2"] == [pytest.approx(36 * 0.04)] * 4
    assert sar["mean"][0] == pytest.approx(t2.array[1][labels.array[1] == 1].mean(), rel=1e-6)


def test_thin_muscle_is_eroded_less_rather_than_erased():
    """A 6-voxel-wide muscle under a 2-voxel erosion would keep 2/6 of its width in each
    direction (1/9 of its area): it is eroded by 1 voxel instead (16/36 left); a 2-voxel-wide one
    is measured whole."""
    labels = block_labels()
    t2, _ = maps_for(labels)
    strip = labels.array.copy()
    strip[1:5, 2:8, 2:8] = 0
    strip[1:5, 2:8, 2:4] = 1          # sartorius R: 6x2 in-plane
    labels = labels.with_array(strip, resolution_mm=4.0)
    result = compute_statistics(labels, {"t2": t2}, erode=True, erosion_voxels=1)
    assert result["erosion"]["per_map"]["t2"]["voxels"] == 2
    six = row(result, "rectus_femoris_R")["t2"]
    assert six["eroded_voxels"] == 1 and six["n_mask_voxels"] == 4 * 4 * 4
    two = row(result, "sartorius_R")["t2"]
    assert two["eroded_voxels"] == 0 and not two["eroded"] and two["n_mask_voxels"] == 4 * 12
