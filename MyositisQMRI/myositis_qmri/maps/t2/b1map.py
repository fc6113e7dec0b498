"""Spatial smoothing of the fitted B1 map, and the test that lets a voxel take the smooth B1.

The transmit field varies slowly across a slice, but a voxel-wise fit reads it with noise and,
in the slice-selective model, with a near-degenerate branch above 1 where B1 and water T2
trade off. Smoothing B1 in plane (normalised convolution over the voxels whose B1 is
reliable, twice, the second pass down-weighting voxels far from the first) and refitting water
T2 with B1 fixed removes that trade-off from the T2 map. Slices are smoothed separately: MESE
slices are thick and often far apart.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

from ...errors import InputError

DEFAULT_B1_SMOOTHING_MM = None   # see fit_water_t2 / `myositis-qmri t2 --b1-smoothing`
MAX_FF_PERCENT = 50.0            # B1 of fat-dominated voxels is poorly determined
OUTLIER_B1 = 0.1                 # second pass: weight 1 / (1 + (deviation / OUTLIER_B1)^2)
F_TEST_LEVEL = 0.01
# A fitted B1 map further than this (median absolute deviation) from its smoothed self is not a
# smooth transmit field seen through noise (independently simulated voxels, or a wrong model):
# smoothing is then skipped. The real calf deviates by about 0.02, simulated smooth fields by
# 0.01-0.06 (SNR 100-50), independently simulated voxels by 0.10-0.15.
MAX_B1_DEVIATION = 0.08
MAX_B1_SMOOTHING_MM = 500.0


def checked_b1_smoothing_mm(fwhm_mm):
    """The --b1-smoothing FWHM (mm) as a float, or None; InputError outside 0-MAX_B1_SMOOTHING_MM."""
    if fwhm_mm is None:
        return None
    if not 0 <= float(fwhm_mm) <= MAX_B1_SMOOTHING_MM:
        raise InputError("--b1-smoothing", f"expected a FWHM of 0-{MAX_B1_SMOOTHING_MM:.0f} mm, got {fwhm_mm}")
    return float(fwhm_mm)


def smooth_b1(b1: np.ndarray, fit_mask: np.ndarray, ff_percent: np.ndarray, spacing_mm, fwhm_mm: float,
              b1_range=(0.4, 1.4)) -> tuple[np.ndarray, float]:
    """In-plane smoothed B1 (z, y, x) over fit_mask, and the median absolute deviation of the
    reliable voxels' B1 from it (how far the map is from smooth; see MAX_B1_DEVIATION).

    spacing_mm is (x, y, z) in mm; fwhm_mm the Gaussian full width at half maximum. Reliable
    voxels: fitted, FF below MAX_FF_PERCENT, B1 inside the search range (not on its edges).
    Voxels without reliable neighbours keep their own B1.
    """
    sigma_px = (fwhm_mm / 2.3548) / np.asarray(spacing_mm[:2], dtype=float)[::-1]   # (y, x)
    lo, hi = b1_range
    reliable = fit_mask & np.isfinite(b1) & (np.nan_to_num(ff_percent, nan=100.0) < MAX_FF_PERCENT) \
        & (b1 > lo + 1e-3) & (b1 < hi - 1e-3)
    values = np.where(reliable, b1, 0.0).astype(np.float64)
    weight = reliable.astype(np.float64)
    first = _normalised_convolution(values, weight, sigma_px)
    deviation = np.where(reliable, b1 - np.nan_to_num(first), 0.0)
    weight = weight / (1.0 + np.square(deviation / OUTLIER_B1))
    second = _normalised_convolution(values * (weight > 0), weight, sigma_px)
    out = np.where(np.isfinite(second), second, b1)
    spread = np.abs(b1 - out)[reliable]
    deviation = float(np.median(spread)) if spread.size else 0.0
    return np.where(fit_mask, out, 0.0).astype(np.float32), deviation


def _normalised_convolution(values, weight, sigma_px):
    """Per slice: G * (values * weight) / G * weight, NaN where the weight sum is negligible."""
    out = np.full(values.shape, np.nan)
    for z in range(values.shape[0]):
        num = ndimage.gaussian_filter(values[z] * weight[z], sigma_px, mode="constant", truncate=3.0)
        den = ndimage.gaussian_filter(weight[z], sigma_px, mode="constant", truncate=3.0)
        ok = den > 0.05 * den.max() if den.max() > 0 else np.zeros_like(den, bool)
        out[z][ok] = num[ok] / den[ok]
    return out


def b1_fixed_acceptable(residual_free, residual_fixed, n_echoes: int, n_parameters: int = 4,
                        level: float = F_TEST_LEVEL) -> np.ndarray:
    """Voxels where fixing B1 does not worsen the fit significantly (nested-model F test).

    Residuals are normalised by the same train norm in both fits, so their squares compare as
    residual sums of squares; the free fit's residual per degree of freedom stands for the
    noise (and any misfit of the model itself).
    """
    dof = max(n_echoes - n_parameters, 1)
    free = np.square(np.asarray(residual_free, dtype=np.float64))
    fixed = np.square(np.asarray(residual_fixed, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (fixed - free) / (free / dof)
    return np.nan_to_num(f, nan=np.inf, posinf=np.inf) < stats.f.ppf(1.0 - level, 1, dof)
