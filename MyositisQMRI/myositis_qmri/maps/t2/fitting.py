"""Fit echo trains against a dictionary projector: B1 free, or B1 fixed per voxel.

`fit_signals` takes (n, echoes) magnitude trains, removes the noise floor, normalises each
train, and returns water T2 (ms; maximum likelihood less its second-order bias), FF (%), B1,
the normalised residual, the Cramer-Rao bound of T2 and the water and fat amplitudes. With
`b1` given, each voxel is fitted on the dictionary rows around its own B1 (used after B1 has
been smoothed, see `b1map`).
"""
from __future__ import annotations

import numpy as np

from ..relaxation import FAT_T2_MS
from .dictionary import EpgDictionary, SequenceModel, build_dictionary
from ..noise import BackgroundNoise
from .noise import remove_noise_floor
from .projection import Projector, amplitudes, fit_compressed, fit_fixed_b1, map_chunks, t2_precision

FIT_KEYS = ("t2", "ff", "b1", "residual", "crlb", "water", "fat")
# The second-order (Box) bias of water T2 is subtracted only where it is small against the
# first-order spread, |bias| <= this many Cramer-Rao bounds: the bias grows as sigma^2 and the
# bound as sigma, so as SNR falls the O(sigma^2) expansion stops holding voxel by voxel, and
# the correction then overshoots (clipping it at 0.5 bounds instead read -1.6 ms at SNR 25).
MAX_BIAS_CORRECTION_CRLB = 0.3


def fit_signals(proj: Projector, signals: np.ndarray, noise: BackgroundNoise | float = 0.0, fit_b1: bool = True,
                b1=None, device: str = "cpu", bias_correction: bool = True) -> dict:
    """Fit (n, echoes) magnitude trains; returns dict of (n,) arrays (t2, ff, b1, residual, crlb,
    water, fat; residual relative to the train's norm).

    noise: the background's BackgroundNoise, or its power P for a one-channel (Rician) background.
    b1: None (B1 searched), or (n,) fixed relative B1 per voxel. device: "cpu" (numpy, chunks in
    parallel threads, see `projection.map_chunks`) or a torch device ("cuda", "torch-cpu" for
    torch on the CPU); see `resolve_device`. bias_correction: subtract the second-order bias of
    the maximum-likelihood T2 (see `projection.t2_precision`; needs a known noise power).
    """
    noise = BackgroundNoise.of(noise)
    n = len(signals)
    out = {k: np.empty(n, np.float32) for k in FIT_KEYS}
    if device != "cpu":
        # the search runs on the device, one large chunk at a time; the per-voxel rest in numpy
        step = 262144
        for start in range(0, n, step):
            part = None if b1 is None else b1[start:start + step]
            for key, values in _fit_chunk(proj, signals[start:start + step], noise, fit_b1, part,
                                          device, bias_correction).items():
                out[key][start:start + step] = values
        return out

    def fit(start, stop):
        part = None if b1 is None else b1[start:stop]
        for key, values in _fit_chunk(proj, signals[start:stop], noise, fit_b1, part,
                                      bias_correction=bias_correction).items():
            out[key][start:stop] = values

    map_chunks(fit, n)
    return out


def normalised(signals: np.ndarray, noise):
    """Floor-free trains scaled to a maximum of 1, and the scale (n,); noise as in fit_signals."""
    signals = remove_noise_floor(np.asarray(signals, dtype=np.float32), noise)
    scale = np.maximum(signals.max(axis=1), np.float32(1e-20))
    return signals / scale[:, None], scale


def _fit_chunk(proj: Projector, signals: np.ndarray, noise: BackgroundNoise, fit_b1: bool, b1=None,
               device: str = "cpu", bias_correction: bool = True) -> dict:
    y_full, scale = normalised(signals, noise)
    y = proj.compress(y_full)
    if device != "cpu":
        from .torch_fit import fit_compressed_torch, fit_fixed_b1_torch
        if b1 is None:
            b, t, b_off, t_off, energy = fit_compressed_torch(proj, y, device)
        else:
            b, t, b_off, t_off, energy = fit_fixed_b1_torch(proj, y, b1_index(proj, b1), device)
    elif b1 is None:
        b, t, b_off, t_off, energy = fit_compressed(proj, y)
    else:
        b, t, b_off, t_off, energy = fit_fixed_b1(proj, y, b1_index(proj, b1))
    water, fat = amplitudes(proj, y, b, t)
    return _maps(proj, y_full, scale, b, t, b_off, t_off, energy, water, fat, noise, fit_b1,
                 bias_correction)


def b1_index(proj: Projector, b1) -> np.ndarray:
    """Fractional index of relative B1 values on the projector's (uniform) B1 grid."""
    grid = proj.b1_grid
    if grid.size == 1:
        return np.zeros(len(b1), np.float32)
    position = (np.asarray(b1, dtype=np.float64) - grid[0]) / (grid[1] - grid[0])
    return np.clip(np.nan_to_num(position, nan=0.0), 0, grid.size - 1).astype(np.float32)


def _maps(proj, y_full, scale, b, t, b_off, t_off, energy, water, fat, noise, fit_b1,
          bias_correction) -> dict:
    t2 = proj.t2_grid_ms[t] * np.exp(t_off * _log_step(proj.t2_grid_ms, t, t_off))
    b1 = proj.b1_grid[b] + b_off * (proj.b1_grid[1] - proj.b1_grid[0] if proj.b1_grid.size > 1 else 0.0)
    total = water + fat
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(total > 0, 100.0 * fat / total, np.nan)
        norm2 = np.einsum("ne,ne->n", y_full, y_full)
        residual = np.sqrt(np.maximum(norm2 - energy, 0) / np.maximum(norm2, 1e-20))
    sigma = noise.sigma / scale
    crlb, bias = t2_precision(proj, b, t, water, fat, sigma, fit_b1)
    if bias_correction:
        limit = MAX_BIAS_CORRECTION_CRLB * crlb
        t2 = t2 - np.where(np.abs(bias) <= limit, bias, 0.0)
    t2 = np.where(total > 0, t2, np.nan)
    return {"t2": t2.astype(np.float32), "ff": ff.astype(np.float32), "b1": b1.astype(np.float32),
            "residual": residual.astype(np.float32), "crlb": crlb.astype(np.float32),
            "water": water * scale, "fat": fat * scale}


def epg_projector(seq: SequenceModel, fat_t2_ms: float = FAT_T2_MS, fat_suppressed: bool = False,
                  t2_grid_ms=None, b1_grid=None) -> Projector:
    """The fitting projector for a sequence (dictionary from cache or simulated)."""
    dictionary = build_dictionary(seq, fat_t2_ms, t2_grid_ms, b1_grid)
    return projector_from(dictionary, fat_suppressed)


def projector_from(dictionary: EpgDictionary, fat_suppressed: bool) -> Projector:
    key = (id(dictionary), fat_suppressed)
    cached = _PROJECTORS.get(key)
    if cached is None:
        cached = Projector.from_atoms(dictionary.water, None if fat_suppressed else dictionary.fat,
                                      dictionary.t2_grid_ms, dictionary.b1_grid)
        _PROJECTORS[key] = cached
    return cached


_PROJECTORS: dict = {}


def _log_step(grid, index, offset):
    n = grid.size
    other = np.clip(index + np.where(offset >= 0, 1, -1), 0, n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.abs(np.log(grid[other] / grid[index]))
    return np.nan_to_num(step)
