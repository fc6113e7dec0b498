"""Fat fraction from magnitude water and fat images (vendor Dixon outputs).

Magnitude images carry a Rician noise floor: in pure-water muscle the fat image is noise, which
would read several percent, and in air both are noise, which would read ~50 %. So: estimate the
noise sigma from the background, remove the floor (A^2 = M^2 - 2 sigma^2 for each image),
compute FF by magnitude discrimination (the dominant species in the numerator), and set
voxels without signal to 0.
"""
from __future__ import annotations

import numpy as np

from ..noise import noise_sigma
from .noise import signal_mask


def water_fat_ff(water: np.ndarray, fat: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """FF (0-1), noise-corrected water and fat magnitudes and the signal mask."""
    water = np.abs(np.nan_to_num(np.asarray(water, np.float32)))
    fat = np.abs(np.nan_to_num(np.asarray(fat, np.float32)))
    total = water + fat
    sigma = min(noise_sigma(water), noise_sigma(fat)) if total.max() > 0 else 0.0
    if mask is None:
        mask = signal_mask(np.sqrt(water ** 2 + fat ** 2), sigma)
    mask = np.asarray(mask, bool)
    water_c = np.sqrt(np.maximum(water ** 2 - 2 * sigma ** 2, 0.0))
    fat_c = np.sqrt(np.maximum(fat ** 2 - 2 * sigma ** 2, 0.0))
    denom = water_c + fat_c
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(fat_c > water_c, fat_c / denom, 1.0 - water_c / denom)
    ff = np.clip(np.nan_to_num(ff), 0.0, 1.0)
    ff[~mask] = 0.0
    return {"ff": ff.astype(np.float32), "water": water_c.astype(np.float32), "fat": fat_c.astype(np.float32),
            "mask": mask, "sigma": sigma}
