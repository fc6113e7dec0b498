"""Volume-level validation: held-out real label maps rendered as whole scans, segmented end to end.

The training loop validates on single synthetic slices with random contrast. This module asks
the question a user asks: given a whole thigh volume in a familiar contrast, how well does
`segment_muscles` (orientation, leg split, resampling, test-time augmentation, post-processing)
recover the muscles? Each held-out label map is rendered slice by slice with the training
tissue model (synth.add_tissues: fat, skin, femur, fascia...) and fixed intensities for each
structural contrast the issue names (T1w, T2w, STIR, Dixon water, fat, in-phase and
opposed-phase, first MESE echo), plus a smooth coil bias and Rician noise.
`cross_contrast_agreement` is the label-free check on real scans: several co-registered images
of one subject (Dixon water, fat, echoes) segmented separately should give the same muscles.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..io import read_volume
from ..volume import Volume
from . import synth
from .canonical import leg_windows, reorient
from .labels import LEFT_OFFSET, N_MUSCLES
from .model import dice_per_label

# Mean intensity per tissue (relative units) for the common structural contrasts. The order fixes
# each contrast's noise seed (validate_label_map), so the first three keep their earlier renderings.
TISSUE_INTENSITIES = {
    "t1w": {"muscle": 0.30, synth.FAT: 0.90, synth.MARROW: 0.85, synth.FASCIA: 0.55,
            synth.CORTEX: 0.03, synth.SKIN: 0.50, synth.VESSEL: 0.20, 0: 0.02},
    "dixon_water": {"muscle": 0.50, synth.FAT: 0.06, synth.MARROW: 0.10, synth.FASCIA: 0.30,
                    synth.CORTEX: 0.03, synth.SKIN: 0.40, synth.VESSEL: 0.60, 0: 0.02},
    "stir": {"muscle": 0.25, synth.FAT: 0.04, synth.MARROW: 0.05, synth.FASCIA: 0.15,
             synth.CORTEX: 0.02, synth.SKIN: 0.30, synth.VESSEL: 0.80, 0: 0.02},
    "t2w": {"muscle": 0.20, synth.FAT: 0.80, synth.MARROW: 0.70, synth.FASCIA: 0.40,
            synth.CORTEX: 0.02, synth.SKIN: 0.40, synth.VESSEL: 0.60, 0: 0.02},
    "mese_echo1": {"muscle": 0.60, synth.FAT: 0.90, synth.MARROW: 0.85, synth.FASCIA: 0.70,
                   synth.CORTEX: 0.03, synth.SKIN: 0.60, synth.VESSEL: 0.50, 0: 0.02},
    "dixon_fat": {"muscle": 0.04, synth.FAT: 0.85, synth.MARROW: 0.80, synth.FASCIA: 0.30,
                  synth.CORTEX: 0.02, synth.SKIN: 0.15, synth.VESSEL: 0.03, 0: 0.02},
}
# In-phase and opposed-phase images are the sum and the difference of the water and fat images.
# Both are blurred first (partial volume), so the difference cancels along every muscle-fat
# border: the dark edge that outlines muscles on opposed-phase images.
DIXON_SUMS = {"dixon_in_phase": 1.0, "dixon_opposed_phase": -1.0}
PARTIAL_VOLUME_SIGMA_PX = 0.6
CONTRASTS = (*TISSUE_INTENSITIES, *DIXON_SUMS)
NOISE_SIGMA = 0.02       # Rician noise, relative to the intensities above (muscle SNR 12-25)


@dataclass
class VolumeResult:
    label_map: str
    contrast: str
    dice: dict[int, float]   # muscle index 1..11 (both sides pooled) -> Dice
    seconds: float

    @property
    def mean_dice(self) -> float:
        return float(np.nanmean(list(self.dice.values())))


def tissue_map(muscles_zyx: np.ndarray, spacing_mm: float, seed: int) -> np.ndarray:
    """Tissue classes (synth.py values) for a canonical both-leg muscle map, leg by leg, slice by slice."""
    tissue = np.zeros(muscles_zyx.shape, np.uint8)
    windows = leg_windows(muscles_zyx > 0)
    for z in range(muscles_zyx.shape[0]):
        for window in windows:
            a, b = window.x_range
            own = np.zeros_like(muscles_zyx[z])
            own[:, a:b] = muscles_zyx[z, :, a:b]
            other = np.where((muscles_zyx[z] > 0) & (own == 0), synth.OTHER_LEG, 0).astype(np.uint8)
            drawn = synth.add_tissues(np.random.default_rng([seed, z]), own + other, spacing_mm)
            tissue[z, :, a:b] = drawn[:, a:b]
    return tissue


def _tissue_image(tissue_zyx: np.ndarray, contrast: str, rng) -> np.ndarray:
    """Noise-free image of a tissue map with one of TISSUE_INTENSITIES (muscles differ slightly)."""
    table = TISSUE_INTENSITIES[contrast]
    means = np.zeros(synth.N_TISSUES)
    means[1:synth.OTHER_LEG + 1] = table["muscle"] + rng.normal(0, 0.015, synth.OTHER_LEG)
    means[synth.OTHER_MUSCLE] = table["muscle"]
    for tissue, value in table.items():
        if tissue != "muscle":
            means[tissue] = value
    return means[tissue_zyx] + rng.normal(0, 0.01, tissue_zyx.shape)


def _dixon_sum(tissue_zyx: np.ndarray, sign: float, rng) -> np.ndarray:
    """|water + sign * fat|, each image blurred in-plane by the partial-volume kernel."""
    sigma = (0, PARTIAL_VOLUME_SIGMA_PX, PARTIAL_VOLUME_SIGMA_PX)
    water, fat = (ndimage.gaussian_filter(_tissue_image(tissue_zyx, name, rng), sigma)
                  for name in ("dixon_water", "dixon_fat"))
    return np.abs(water + sign * fat)


def render(tissue_zyx: np.ndarray, contrast: str, seed: int) -> np.ndarray:
    """Magnitude image (float32) of a tissue map in one of CONTRASTS."""
    rng = np.random.default_rng(seed)
    if contrast in DIXON_SUMS:
        image = _dixon_sum(tissue_zyx, DIXON_SUMS[contrast], rng)
    else:
        image = _tissue_image(tissue_zyx, contrast, rng)
    ny, nx = tissue_zyx.shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx]
    image *= np.exp(0.2 * np.sin(np.pi * yy / ny) * np.cos(2 * xx / nx))[None]
    noise = rng.normal(0, NOISE_SIGMA, (2,) + image.shape)
    return np.hypot(image + noise[0], noise[1]).astype(np.float32)


def validate_label_map(path: Path, contrasts=tuple(CONTRASTS), model_path=None, seed: int = 0,
                       test_time_augmentation: bool = True) -> list[VolumeResult]:
    """Render one label map in each contrast, segment it, and score every muscle (sides pooled)."""
    from .infer import segment_muscles
    labels_image = reorient(sitk.Cast(read_volume(path).to_sitk(), sitk.sitkUInt8))
    muscles = sitk.GetArrayFromImage(labels_image)
    muscles = np.where(muscles <= N_MUSCLES, muscles, 0).astype(np.uint8)
    tissue = tissue_map(muscles, float(np.mean(labels_image.GetSpacing()[:2])), seed)
    results = []
    for index, contrast in enumerate(contrasts):
        image = sitk.GetImageFromArray(render(tissue, contrast, seed + index))
        image.CopyInformation(labels_image)
        started = time.perf_counter()
        predicted = segment_muscles(Volume.from_sitk(image), model_path,
                                    test_time_augmentation=test_time_augmentation).array
        seconds = time.perf_counter() - started
        predicted = np.where(predicted > LEFT_OFFSET, predicted - LEFT_OFFSET, predicted)
        results.append(VolumeResult(Path(path).name, contrast,
                                    dice_per_label(predicted, muscles, range(1, N_MUSCLES + 1)), seconds))
    return results


@dataclass
class AgreementResult:
    images: list[str]
    dice: dict[tuple[str, str], float]        # mean Dice over the labels present, per image pair
    dice_per_slice: dict[tuple[str, str], list[float]]
    labels: dict[str, np.ndarray]             # each image's label map (int16, its own grid)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values())))


def cross_contrast_agreement(images: dict[str, Volume], model_path=None,
                             test_time_augmentation: bool = True) -> AgreementResult:
    """Segment each co-registered image of one subject and compare every pair (all 22 labels).

    Needs no reference: two segmentations of the same anatomy cannot both be right where they
    differ, so disagreement is a floor under the error on real scans, where the rendered volumes
    above cannot reach (real texture, fascia, vessels, partial volume).
    """
    from .infer import segment_muscles
    names = list(images)
    first = images[names[0]].geometry
    for name in names[1:]:
        if not images[name].geometry.same_grid(first):
            raise InputError(name, f"not on the grid of {names[0]}; cross-contrast agreement compares "
                                   "co-registered images voxel by voxel")
    labels = {n: segment_muscles(images[n], model_path, test_time_augmentation=test_time_augmentation).array
              for n in names}
    dice, per_slice = {}, {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            dice[(a, b)] = _mean_label_dice(labels[a], labels[b])
            per_slice[(a, b)] = [_mean_label_dice(sa, sb) for sa, sb in zip(labels[a], labels[b])]
    return AgreementResult(names, dice, per_slice, labels)


def _mean_label_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the muscle labels (both sides) present in either map; NaN if none is."""
    scores = [d for d in dice_per_label(a, b, range(1, LEFT_OFFSET + N_MUSCLES + 1)).values() if not np.isnan(d)]
    return float(np.mean(scores)) if scores else float("nan")
