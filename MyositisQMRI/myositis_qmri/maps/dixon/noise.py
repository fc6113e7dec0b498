"""Signal mask of magnitude images, and magnitude-discrimination PDFF.

Background voxels are pure noise: their fat fraction is undefined and would read about 50 %,
so every method masks them (FF 0) with a threshold a few noise standard deviations up (sigma
from `maps.noise.noise_sigma`, the estimator the T2 stage uses too).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..noise import noise_sigma


def signal_mask(magnitude: np.ndarray, sigma: float | None = None, snr_threshold: float = 5.0,
                min_fraction_of_p99: float = 0.04) -> np.ndarray:
    """Voxels carrying signal: above `snr_threshold` sigma and a small fraction of the bright tissue."""
    magnitude = np.nan_to_num(np.asarray(magnitude, float))
    if sigma is None:
        sigma = noise_sigma(magnitude)
    level = max(snr_threshold * sigma, min_fraction_of_p99 * float(np.percentile(magnitude, 99)))
    mask = magnitude > level
    # Single isolated noise spikes are not tissue.
    return ndimage.binary_opening(mask, structure=np.ones((1, 2, 2))) | (magnitude > 3 * level)


def magnitude_discrimination_ff(water: np.ndarray, fat: np.ndarray) -> np.ndarray:
    """Fat fraction (0-1) by magnitude discrimination (Liu et al. 2007).

    The dominant species sets the formula so the noise-biased minor species never sits alone
    in the numerator: FF = |F|/|W+F| where fat dominates, else 1 - |W|/|W+F|.
    """
    water = np.asarray(water)
    fat = np.asarray(fat)
    total = np.abs(water + fat)
    aw, af = np.abs(water), np.abs(fat)
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(af > aw, af / total, 1.0 - aw / total)
    return np.clip(np.nan_to_num(ff, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
