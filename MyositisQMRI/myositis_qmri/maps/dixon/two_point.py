"""Two-point Dixon with flexible echo times (after Eggers et al. 2011), multi-peak fat.

Magnitudes alone give |S_n|^2 = rho^2 (cos^2 th + 2 Re(c_n) cos th sin th + |c_n|^2 sin^2 th)
with W = rho cos th, F = rho sin th: their ratio fixes th up to (usually) two roots, the
water-fat ambiguity. Each root implies a phase error between the echoes (the field map term);
the swap-free choice is the root whose field is spatially smooth, found by the same graph cut
as the multi-echo method. Echo times need not be in/opposed phase. Near in/opposed echoes
leave one global ambiguity (everything swapped is as smooth), settled by the mean field
being near 0 Hz in a shimmed magnet.
"""
from __future__ import annotations

import numpy as np

from ..fat_spectrum import fat_phasor
from ..noise import noise_sigma
from .fieldmap import CHUNK_VOXELS, estimate_field_map, make_field_grid
from .noise import signal_mask

THETA = np.linspace(0.0, np.pi / 2, 181)


def candidates(signal_ev: np.ndarray, c: np.ndarray, delta_t_s: float):
    """Two (water, fat, field_hz) candidates per voxel; equal when the root is unique."""
    m1sq = np.abs(signal_ev[0]) ** 2
    m2sq = np.abs(signal_ev[1]) ** 2
    cos, sin = np.cos(THETA)[:, None], np.sin(THETA)[:, None]
    g = [cos ** 2 + 2 * cn.real * cos * sin + abs(cn) ** 2 * sin ** 2 for cn in c]
    h = m1sq[None, :] * g[1] - m2sq[None, :] * g[0]
    change = np.signbit(h[:-1]) != np.signbit(h[1:])
    n = signal_ev.shape[1]
    cols = np.arange(n)
    first = np.where(change.any(axis=0), np.argmax(change, axis=0), -1)
    last = np.where(change.any(axis=0), change.shape[0] - 1 - np.argmax(change[::-1], axis=0), -1)
    fallback = np.argmin(np.abs(h) / (m1sq + m2sq + 1e-30)[None, :], axis=0)
    out = []
    for k in (first, last):
        theta = np.where(k >= 0, _root(h, np.maximum(k, 0), cols), THETA[fallback])
        gc1 = np.cos(theta) ** 2 + 2 * c[0].real * np.cos(theta) * np.sin(theta) + abs(c[0]) ** 2 * np.sin(theta) ** 2
        rho = np.sqrt(m1sq / np.maximum(gc1, 1e-12))
        water, fat = rho * np.cos(theta), rho * np.sin(theta)
        phasor = signal_ev[1] * np.conj(signal_ev[0]) * (water + fat * c[0]) * np.conj(water + fat * c[1])
        field = np.angle(phasor) / (2 * np.pi * delta_t_s)
        out.append((water, fat, field))
    return out


def _resolve_global_ambiguity(field, energy, mask, delta_t):
    """Pick between the smooth field and its everywhere-swapped twin (half a period away).

    With near in/opposed echoes both are equally smooth; a shimmed magnet keeps the mean
    off-resonance well inside +-1/4 period (+-227 Hz at 3 T, 1.1 ms spacing), which decides.
    """
    phasor = np.sum(energy[mask] * np.exp(2j * np.pi * field[mask] * delta_t))
    mean_hz = np.angle(phasor) / (2 * np.pi * delta_t)
    half_period = 0.5 / delta_t
    if abs(mean_hz) > half_period / 2:
        field = field - np.sign(mean_hz) * half_period
    return field


def _root(h, k, cols):
    h0, h1 = h[k, cols], h[k + 1, cols]
    frac = np.clip(h0 / np.where(h0 - h1 == 0, 1e-30, h0 - h1), 0.0, 1.0)
    return THETA[k] + frac * (THETA[1] - THETA[0])


def separate_two_point(signal: np.ndarray, echo_times_ms, field_t: float, spacing_zyx,
                       mask: np.ndarray | None = None, smoothness: float = 1.0) -> dict[str, np.ndarray]:
    """Water, fat (magnitudes), FF (0-1) and field map (Hz) from 2 complex echoes (echo, z, y, x)."""
    te_ms = np.asarray(echo_times_ms, float)
    c = fat_phasor(te_ms, field_t)
    delta_t = (te_ms[1] - te_ms[0]) / 1000.0
    rms = np.sqrt(np.mean(np.abs(signal) ** 2, axis=0))
    if mask is None:
        mask = signal_mask(rms, noise_sigma(np.abs(signal[0])))
    mask = np.asarray(mask, bool)
    grid = make_field_grid(te_ms)
    energy = np.sum(np.abs(signal) ** 2, axis=0)
    energy_ref = float(np.median(energy[mask])) if mask.any() else 1.0

    def curves(signal_ev, freqs_hz):
        # Zero cost at each candidate field, rising like a residual away from it.
        cost = None
        for _, _, field in candidates(signal_ev, c, delta_t):
            term = 0.5 * (1 - np.cos(2 * np.pi * (freqs_hz[:, None] - field[None, :]) * delta_t))
            cost = term if cost is None else np.minimum(cost, term)
        return cost * np.sum(np.abs(signal_ev) ** 2, axis=0)[None, :]

    field = estimate_field_map(signal, curves, grid, mask, spacing_zyx, energy_ref, smoothness,
                               desc="two-point field map")
    field = _resolve_global_ambiguity(field, energy, mask, delta_t)
    flat = signal.reshape(2, -1)
    index = np.flatnonzero(mask.ravel())
    water = np.zeros(flat.shape[1], np.float32)
    fat = np.zeros(flat.shape[1], np.float32)
    field_flat = field.ravel()
    for start in range(0, index.size, CHUNK_VOXELS):
        voxels = index[start:start + CHUNK_VOXELS]
        (w1, f1, b1), (w2, f2, b2) = candidates(flat[:, voxels], c, delta_t)
        target = field_flat[voxels]
        d1 = 1 - np.cos(2 * np.pi * (b1 - target) * delta_t)
        d2 = 1 - np.cos(2 * np.pi * (b2 - target) * delta_t)
        first = d1 <= d2
        water[voxels] = np.where(first, w1, w2)
        fat[voxels] = np.where(first, f1, f2)
    water, fat = water.reshape(signal.shape[1:]), fat.reshape(signal.shape[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.nan_to_num(fat / (water + fat))
    ff[~mask] = 0.0
    return {"water": water, "fat": fat, "ff": np.clip(ff, 0, 1), "r2star": None,
            "field": field_flat.reshape(signal.shape[1:]).astype(np.float32), "mask": mask}
