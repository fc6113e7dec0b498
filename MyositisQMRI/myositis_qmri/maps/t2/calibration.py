"""Per-series choice of the slice-profile model: refocusing/excitation width ratio, or 3d.

A scanner's refocusing slice is often wider than its excitation slice, by an amount that
depends on vendor and protocol, and a 2-D EPG model with the wrong ratio absorbs the error
as a wrong B1 and T2 (a Siemens calf reads B1 at the 1.4 search limit with the 1.2 default).
Bright low-fat voxels of the series are fitted with each candidate model; the candidate with
the least median normalised residual replaces the default only when it clearly wins: the
paired improvement is significant over the voxels AND the median voxel's chi-square drops by
at least MIN_CHI2_GAIN (the 95 % point of chi-square with one degree of freedom), so the
better profile is worth its parameter within a single typical voxel, not only after pooling
thousands. A pooled-significant but voxel-invisible gain would only trade one model-mismatch
bias for another: on trains simulated with MyoQMRI's SLR profiles, which no Bloch ratio
reproduces, the least-residual ratio (1.45) reads water T2 about 2.5 ms longer than the 1.2
default; their gain reaches the threshold only above a first-echo SNR of about 250. Candidates are fitted on coarser
dictionaries (T2 steps of 4 %, B1 steps of 0.02), which are quick to simulate and cached.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..noise import BackgroundNoise
from ..relaxation import FAT_T2_MS
from .dictionary import SequenceModel, build_dictionary, default_grids
from .fitting import fit_signals, normalised, projector_from

REFOCUSING_RATIO_CANDIDATES = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0)
REFOCUSING_RATIO_STEP = 0.05   # the refined ratio is rounded to this, so its dictionary is reused
SIGNIFICANT_Z = 3.0            # paired z of the per-voxel gain, pooled over the voxels
MIN_CHI2_GAIN = 3.84           # median per-voxel chi-square gain: chi2(1 dof) at 95 %
MIN_RELATIVE_GAIN = 0.1        # without a noise estimate: median residual energy must drop 10 %
MIN_VOXELS = 200
MIN_CALIBRATION_SNR = 20.0
MAX_CANDIDATE_VOXELS = 100_000   # mask voxels looked at (a fixed-seed subsample beyond this)
CALIBRATION_T2_RATIO = 1.04
CALIBRATION_B1_STEP = 0.02


def calibration_voxels(seq: SequenceModel, array, fit_mask, noise, fat_t2_ms: float = FAT_T2_MS,
                       max_voxels: int = 5000, max_ff_percent: float = 10.0) -> np.ndarray:
    """Up to `max_voxels` bright, low-fat echo trains (n, echoes), picked deterministically.

    Bright: first echo above MIN_CALIBRATION_SNR noise SDs and above a fifth of the mask's
    median (high SNR, no partial volume with background; not above the median itself, which
    in a uniform-density phantom or simulation selects the fattest voxels). Low fat: FF below
    `max_ff_percent` in a first fit with `seq` as given, so the water train shape, which the
    slice profile shapes, dominates the residual. noise: BackgroundNoise, or P of a Rician background.
    """
    noise = BackgroundNoise.of(noise)
    rng = np.random.default_rng(0)
    # a fixed-seed subsample of the mask before gathering, so a large volume is never copied
    voxels = np.flatnonzero(fit_mask)
    if voxels.size > MAX_CANDIDATE_VOXELS:
        voxels = np.sort(rng.choice(voxels, MAX_CANDIDATE_VOXELS, replace=False))
    signals = np.asarray(array[(slice(None),) + np.unravel_index(voxels, fit_mask.shape)]).T
    first_echo = signals[:, 0]
    threshold = 0.2 * np.median(first_echo)
    if noise.power > 0:
        threshold = max(threshold, MIN_CALIBRATION_SNR * noise.sigma)
    signals = signals[first_echo > threshold]
    if signals.shape[0] > 4 * max_voxels:
        signals = signals[np.sort(rng.choice(signals.shape[0], 4 * max_voxels, replace=False))]
    proj = _calibration_projector(seq, fat_t2_ms, False)
    first = fit_signals(proj, signals, noise)
    return signals[first["ff"] < max_ff_percent][:max_voxels]


def calibrate_slice_profile(seq: SequenceModel, signals, noise, fat_t2_ms: float = FAT_T2_MS,
                            fat_suppressed: bool = False, candidates=REFOCUSING_RATIO_CANDIDATES,
                            allow_3d: bool = False):
    """The sequence model (2d ratio, or 3d when `allow_3d`) that best explains `signals`.

    `seq` (a 2d model) is the default that a candidate must clearly beat (see the module
    docstring). The winning 2d ratio is refined by a parabola in log(residual) over log(ratio)
    through it and its neighbours and rounded to REFOCUSING_RATIO_STEP. Returns
    (sequence model, calibration dict with the residual curve and the decision). Fewer than
    MIN_VOXELS voxels: `seq` unchanged. noise: BackgroundNoise, or P of a Rician background.
    """
    noise = BackgroundNoise.of(noise)
    signals = np.asarray(signals, dtype=np.float32)
    default = float(seq.refocusing_width_ratio)
    if signals.shape[0] < MIN_VOXELS:
        return seq, {"ratio": default, "profile": seq.profile, "voxels": int(signals.shape[0]),
                     "note": f"too few bright low-fat voxels ({signals.shape[0]}); default model kept"}
    ratios = np.unique(np.append(np.asarray(candidates, dtype=float), default))
    models = [replace(seq, refocusing_width_ratio=float(r)) for r in ratios]
    labels = [f"2d ratio {r:g}" for r in ratios]
    if allow_3d:
        models.append(replace(seq, profile="3d", refocusing_width_ratio=SequenceModel.refocusing_width_ratio))
        labels.append("3d")
    floor_free, scale = normalised(signals, noise)
    norm2 = np.square(scale) * np.einsum("ne,ne->n", floor_free, floor_free)     # |train|^2
    residual = np.stack([_residuals(m, signals, noise, fat_t2_ms, fat_suppressed) for m in models])
    energy = np.square(residual) * norm2[None, :]        # residual energy, signal units^2
    medians = np.nanmedian(residual, axis=1)
    best = int(np.argmin(medians))
    i_default = int(np.flatnonzero(ratios == default)[0])
    gain = energy[i_default] - energy[best]
    z = _paired_z(gain)
    if noise.power > 0:
        clear = float(np.nanmedian(gain) / noise.sigma ** 2)
        wins = z > SIGNIFICANT_Z and clear >= MIN_CHI2_GAIN
        measure = {"median_chi2_gain": clear}
    else:
        clear = float(np.nanmedian(gain) / max(np.nanmedian(energy[i_default]), 1e-30))
        wins = z > SIGNIFICANT_Z and clear >= MIN_RELATIVE_GAIN
        measure = {"median_relative_gain": clear}
    chosen = models[best] if wins else seq
    if wins and chosen.profile == "2d" and 0 < best < ratios.size - 1:
        x, y = np.log(ratios[best - 1:best + 2]), np.log(medians[best - 1:best + 2])
        a, b, _ = np.polyfit(x, y, 2)
        if a > 0:
            refined = float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))
            chosen = replace(seq, refocusing_width_ratio=refined)
    if chosen.profile == "2d":
        ratio = round(round(chosen.refocusing_width_ratio / REFOCUSING_RATIO_STEP) * REFOCUSING_RATIO_STEP, 4)
        chosen = replace(chosen, refocusing_width_ratio=ratio)
    chosen_label = f"2d ratio {chosen.refocusing_width_ratio:g}" if chosen.profile == "2d" else "3d"
    note = (f"{labels[best]} fits clearly better than the default ratio {default:g}; {chosen_label} used"
            if wins else
            f"default ratio {default:g} kept: no candidate fits clearly better "
            f"(best {labels[best]}, paired z {z:.1f}, {measure})")
    return chosen, {"ratio": chosen.refocusing_width_ratio if chosen.profile == "2d" else None,
                    "profile": chosen.profile, "voxels": int(signals.shape[0]), "candidates": labels,
                    "median_residual": [float(r) for r in medians], "z_gain_vs_default": float(z),
                    **measure, "note": note}


def calibrate_refocusing_ratio(seq: SequenceModel, signals, noise, fat_t2_ms: float = FAT_T2_MS,
                               fat_suppressed: bool = False, candidates=REFOCUSING_RATIO_CANDIDATES):
    """The 2d refocusing/excitation width ratio for `signals` (see `calibrate_slice_profile`);
    returns (ratio, calibration dict)."""
    chosen, info = calibrate_slice_profile(seq, signals, noise, fat_t2_ms, fat_suppressed, candidates)
    return chosen.refocusing_width_ratio, info


def _calibration_projector(seq: SequenceModel, fat_t2_ms: float, fat_suppressed: bool):
    t2_grid, b1_grid = default_grids(seq.profile, t2_ratio=CALIBRATION_T2_RATIO, b1_step=CALIBRATION_B1_STEP)
    return projector_from(build_dictionary(seq, fat_t2_ms, t2_grid, b1_grid), fat_suppressed)


def _residuals(seq, signals, noise, fat_t2_ms, fat_suppressed) -> np.ndarray:
    proj = _calibration_projector(seq, fat_t2_ms, fat_suppressed)
    return fit_signals(proj, signals, noise)["residual"].astype(float)


def _paired_z(gain) -> float:
    """z score of the mean per-voxel gain (positive: the candidate fits better)."""
    d = gain[np.isfinite(gain)]
    sd = float(np.std(d)) if d.size else 0.0
    return 0.0 if d.size < 2 or sd == 0 else float(np.mean(d) / (sd / np.sqrt(d.size)))
