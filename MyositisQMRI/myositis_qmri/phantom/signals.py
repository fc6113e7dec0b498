"""Signal models of the synthetic exam: tissue properties, smooth fields and the images.

- MESE magnitude: (1-ff)*EPG(water T2, B1, water T1) + ff*EPG(fat T2, B1, fat T1), with the
  non-selective CPMG EPG of maps.epg, then Rician noise.
- Multi-echo GRE: complex water + 6-peak fat (maps.fat_spectrum, clockwise sense), a single
  R2* per voxel, a smooth B0 field and initial phase, then complex Gaussian noise.
- Vendor water/fat/FF and a T1-weighted structural image.
Every image is quantised the way its DICOM stores it, so a written exam reads back exactly.
"""
from __future__ import annotations

import numpy as np

from ..maps.epg import cpmg_echo_amplitudes
from ..maps.fat_spectrum import fat_phasor
from ..maps.relaxation import FAT_T1_MS, FAT_T2_MS, WATER_T1_MS
from . import anatomy as A

# Per-tissue properties (muscles get theirs from the per-muscle truth table).
# proton density (relative), water T2 (ms), fat fraction (%), R2* (1/s), T1w brightness.
TISSUE_PROPERTIES = {
    A.BACKGROUND: (0.0, 0.0, 0.0, 0.0),
    A.SKIN: (0.75, 35.0, 20.0, 45.0),
    A.SUBCUTANEOUS_FAT: (1.0, 30.0, 92.0, 70.0),
    A.INTERMUSCULAR_FAT: (1.0, 30.0, 90.0, 70.0),
    A.CORTEX: (0.0, 0.0, 0.0, 0.0),
    A.MARROW: (1.0, 30.0, 88.0, 90.0),
}
MUSCLE_R2STAR_PER_S = 35.0
FAT_R2STAR_PER_S = 70.0
SIGNAL_SCALE = 1400.0                 # equilibrium magnetisation of full proton density
PHASE_LEVELS = 4096                   # phase stored as 12-bit integers


def smooth_field(shape_zyx, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A smooth random field (quadratic polynomial plus a broad bump) scaled to [low, high]."""
    nz, ny, nx = shape_zyx
    z, y, x = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx),
                          indexing="ij")
    terms = [x, y, z, x * x, y * y, x * y, x * z, y * z, z * z]
    field = sum(rng.normal() * t for t in terms)
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    field = field + rng.uniform(1.0, 2.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.4)
    span = field.max() - field.min()
    field = (field - field.min()) / (span if span > 0 else 1.0)
    return low + (high - low) * field


def tissue_maps(tissue: np.ndarray, labels: np.ndarray, truth: dict):
    """Voxel maps (proton density, water T2 ms, FF %, R2* 1/s) from the label maps."""
    pd = np.zeros(tissue.shape, np.float32)
    t2 = np.zeros(tissue.shape, np.float32)
    ff = np.zeros(tissue.shape, np.float32)
    r2s = np.zeros(tissue.shape, np.float32)
    for code, (p, w, f, r) in TISSUE_PROPERTIES.items():
        mask = tissue == code
        pd[mask], t2[mask], ff[mask], r2s[mask] = p, w, f, r
    for value, entry in truth.items():
        mask = labels == value
        fraction = entry["ff_percent"] / 100.0
        pd[mask] = 1.0
        t2[mask] = entry["water_t2_ms"]
        ff[mask] = entry["ff_percent"]
        r2s[mask] = (1 - fraction) * MUSCLE_R2STAR_PER_S + fraction * FAT_R2STAR_PER_S
    return pd, t2, ff, r2s


def _b1_table(b1: np.ndarray):
    """A B1 grid covering `b1` and each voxel's (index, weight) on it for linear interpolation."""
    low, high = float(b1.min()), float(b1.max())
    if high - low < 1e-9:
        return np.array([low]), np.zeros(b1.shape, int), np.zeros(b1.shape)
    grid = np.linspace(low, high, 161)
    position = (b1 - low) / (grid[1] - grid[0])
    index = np.clip(np.floor(position).astype(int), 0, grid.size - 2)
    return grid, index, position - index


def mese_noise_free(pd, water_t2_ms, ff_percent, b1, n_echoes: int, echo_spacing_ms: float,
                    refocusing_angle_deg: float = 180.0) -> np.ndarray:
    """Noise-free MESE magnitude (echo, z, y, x) in signal units.

    The EPG runs once per distinct T2 on a fine B1 grid and is interpolated per voxel (the
    echo amplitudes are smooth in B1), which keeps a full exam to a second of work.
    """
    grid, index, weight = _b1_table(b1)
    epg = lambda t2, t1: cpmg_echo_amplitudes(t2, grid, n_echoes, echo_spacing_ms, t1, refocusing_angle_deg)

    def at_voxels(table, where):
        i, w = index[where], weight[where][:, None]
        upper = table[np.minimum(i + 1, len(grid) - 1)]
        return table[i] * (1 - w) + upper * w

    signal = np.zeros((n_echoes,) + pd.shape, np.float64)
    body = pd > 0
    fat_table = epg(FAT_T2_MS, FAT_T1_MS)
    for t2 in np.unique(water_t2_ms[body]):
        where = body & (water_t2_ms == t2)
        fraction = ff_percent[where][:, None] / 100.0
        echoes = (1 - fraction) * at_voxels(epg(float(t2), WATER_T1_MS), where) + fraction * at_voxels(fat_table, where)
        signal[:, where] = (SIGNAL_SCALE * pd[where][:, None] * echoes).T
    return signal


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, sigma, (2,) + signal.shape)
    return np.hypot(signal + noise[0], noise[1])


def gre_noise_free(pd, ff_percent, r2star_per_s, b0_hz, phase0_rad, echo_times_ms, field_t: float):
    """Complex multi-echo GRE (echo, z, y, x), clockwise precession (the core's model sense)."""
    fat = fat_phasor(echo_times_ms, field_t)
    fraction = ff_percent / 100.0
    out = np.empty((len(echo_times_ms),) + pd.shape, np.complex128)
    for e, te_ms in enumerate(echo_times_ms):
        t_s = te_ms / 1000.0
        species = (1 - fraction) + fraction * fat[e]
        out[e] = (SIGNAL_SCALE * pd * species * np.exp(-r2star_per_s * t_s)
                  * np.exp(1j * (2 * np.pi * b0_hz * t_s + phase0_rad)))
    return out


def quantise_phase(phase_rad: np.ndarray) -> np.ndarray:
    """Phase as 12-bit integers 0..4095 (Siemens style, value = 2*stored - 4096 over pi/4096)."""
    stored = np.round((np.angle(np.exp(1j * phase_rad)) + np.pi) / (2 * np.pi) * PHASE_LEVELS).astype(int)
    return stored % PHASE_LEVELS


def phase_from_stored(stored: np.ndarray) -> np.ndarray:
    return (2.0 * stored - PHASE_LEVELS) * np.pi / PHASE_LEVELS


def t1w_noise_free(pd, ff_percent, tissue, shading) -> np.ndarray:
    """T1-weighted TSE: fat bright, muscle intermediate (brighter with fat), cortex dark."""
    fraction = ff_percent / 100.0
    signal = SIGNAL_SCALE * pd * ((1 - fraction) * 0.30 + fraction * 0.95) * shading
    signal[tissue == A.SKIN] *= 0.8
    return signal
