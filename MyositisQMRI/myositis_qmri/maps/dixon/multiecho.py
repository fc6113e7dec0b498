"""Complex multi-echo water-fat separation: 6-peak fat, single R2*, swap-free field map.

Signal model (clockwise, as the ISMRM toolbox): S(t) = (W + F c(t)) exp((2 pi i f - R2*) t), c = fat phasor.
The field map comes from `fieldmap.estimate_field_map` (VARPRO curves + graph cut); then per
voxel a joint (field, R2*) grid refinement and a closed-form 2x2 least squares for W and F.
Three echoes or fewer carry too little information for R2*, which is then held at 0.
"""
from __future__ import annotations

import numpy as np

from ..fat_spectrum import fat_phasor
from ..noise import noise_sigma
from .fieldmap import CHUNK_VOXELS, FieldGrid, estimate_field_map, make_field_grid, projection_rows, residual_curves
from .noise import magnitude_discrimination_ff, signal_mask

R2STAR_SEARCH_PER_S = (0.0, 100.0, 250.0)
R2STAR_GRID_PER_S = np.arange(0.0, 501.0, 20.0)


def separate_complex(signal: np.ndarray, echo_times_ms, field_t: float, spacing_zyx,
                     mask: np.ndarray | None = None, fit_r2star: bool | None = None,
                     smoothness: float = 1.0) -> dict[str, np.ndarray]:
    """Water, fat (complex), PDFF (0-1), R2* (1/s) and field map (Hz) from (echo, z, y, x) data."""
    signal = np.asarray(signal, np.complex64)
    te_ms = np.asarray(echo_times_ms, float)
    if fit_r2star is None:
        fit_r2star = te_ms.size >= 4
    c = fat_phasor(te_ms, field_t)
    rms = np.sqrt(np.mean(np.abs(signal) ** 2, axis=0))
    if mask is None:
        mask = signal_mask(rms, noise_sigma(np.abs(signal[0])))
    mask = np.asarray(mask, bool)
    grid = make_field_grid(te_ms)
    r2_search = R2STAR_SEARCH_PER_S if fit_r2star else (0.0,)
    rows_cache: dict = {}

    def curves(signal_ev, freqs_hz):
        key = tuple(np.round(freqs_hz, 6))
        if key not in rows_cache:
            rows_cache[key] = projection_rows(te_ms, c, freqs_hz, r2_search)
        return residual_curves(signal_ev, rows_cache[key], len(freqs_hz))

    energy = np.sum(np.abs(signal) ** 2, axis=0)
    energy_ref = float(np.median(energy[mask])) if mask.any() else 1.0
    field = estimate_field_map(signal, curves, grid, mask,
                               spacing_zyx, energy_ref, smoothness, desc="multi-echo field map")
    water, fat, r2star, field = refine_and_fit(signal, te_ms, c, field, mask, grid, fit_r2star)
    ff = magnitude_discrimination_ff(water, fat)
    ff[~mask] = 0.0
    return {"water": water, "fat": fat, "ff": ff, "r2star": r2star, "field": field, "mask": mask}


def refine_and_fit(signal, te_ms, c, field, mask, grid: FieldGrid, fit_r2star: bool):
    """Joint grid refinement of (field, R2*) around the graph-cut field, then W and F by LS."""
    t = te_ms / 1000.0
    shape = signal.shape[1:]
    flat = signal.reshape(signal.shape[0], -1)
    index = np.flatnonzero(mask.ravel())
    field_flat = field.ravel().astype(float).copy()
    r2_flat = np.zeros(field_flat.size)
    water = np.zeros(field_flat.size, np.complex64)
    fat = np.zeros(field_flat.size, np.complex64)
    offsets = np.linspace(-grid.step_hz, grid.step_hz, 5)
    r2_values = R2STAR_GRID_PER_S if fit_r2star else np.array([0.0])
    rows = projection_rows(te_ms, c, offsets, r2_values)
    for start in range(0, index.size, CHUNK_VOXELS):
        voxels = index[start:start + CHUNK_VOXELS]
        s = flat[:, voxels] * np.exp(-2j * np.pi * field_flat[voxels][None, :] * t[:, None]).astype(np.complex64)
        y = rows @ s
        explained = (y.real ** 2 + y.imag ** 2).reshape(offsets.size, r2_values.size, 2, -1).sum(axis=2)
        best = explained.reshape(-1, voxels.size).argmax(axis=0)
        i_f, i_r = np.unravel_index(best, (offsets.size, r2_values.size))
        cols = np.arange(voxels.size)
        df = offsets[i_f] + _parabola_shift(explained[:, i_r, cols], i_f, cols) * (offsets[1] - offsets[0])
        r2 = r2_values[i_r]
        if r2_values.size > 1:
            r2 = r2 + _parabola_shift(explained[i_f, :, cols].T, i_r, cols) * (r2_values[1] - r2_values[0])
        r2 = np.maximum(r2, 0.0)
        field_flat[voxels] += df
        r2_flat[voxels] = r2
        w, f = fit_species(flat[:, voxels], t, c, field_flat[voxels], r2)
        water[voxels], fat[voxels] = w, f
    return (water.reshape(shape), fat.reshape(shape), r2_flat.reshape(shape).astype(np.float32),
            field_flat.reshape(shape).astype(np.float32))


def _parabola_shift(values_lv: np.ndarray, best: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sub-grid offset (grid units, |.|<=0.5) of a maximum through its two neighbours."""
    n = values_lv.shape[0]
    inner = (best > 0) & (best < n - 1)
    b = np.clip(best, 1, n - 2)
    v0, v1, v2 = values_lv[b - 1, cols], values_lv[b, cols], values_lv[b + 1, cols]
    denom = v0 - 2 * v1 + v2
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(denom < 0, 0.5 * (v0 - v2) / denom, 0.0)
    return np.where(inner, np.clip(np.nan_to_num(shift), -0.5, 0.5), 0.0)


def fit_species(signal_ev, t_s, c, field_hz, r2star_per_s):
    """Closed-form complex W, F per voxel for known field and R2* (2x2 normal equations)."""
    a = np.exp((2j * np.pi * field_hz[None, :] - r2star_per_s[None, :]) * t_s[:, None])
    c = c[:, None]
    aa = np.abs(a) ** 2
    m11 = aa.sum(axis=0)
    m12 = (c * aa).sum(axis=0)
    m22 = (np.abs(c) ** 2 * aa).sum(axis=0)
    b1 = (a.conj() * signal_ev).sum(axis=0)
    b2 = (c.conj() * a.conj() * signal_ev).sum(axis=0)
    det = m11 * m22 - np.abs(m12) ** 2
    det = np.where(np.abs(det) > 1e-12, det, 1e-12)
    water = (m22 * b1 - m12 * b2) / det
    fat = (m11 * b2 - np.conj(m12) * b1) / det
    return water.astype(np.complex64), fat.astype(np.complex64)
