"""Simulated chemical-shift-encoded gradient echo with known PDFF, R2* and a smooth B0 field.

Used by the tests and the benchmarks: a cylinder-like "thigh" with a subcutaneous fat ring,
muscle of graded fat fraction and a marrow-like fat core in noise-only background.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..fat_spectrum import fat_phasor


@dataclass
class SimulatedGRE:
    signal: np.ndarray        # (echo, z, y, x) complex64, counter-clockwise
    echo_times_ms: np.ndarray
    field_t: float
    ff: np.ndarray            # truth, 0-1
    r2star: np.ndarray        # truth, 1/s
    field_hz: np.ndarray      # truth, Hz
    tissue: np.ndarray        # bool, where signal is present
    sigma: float


def simulate_gre(shape_zyx=(8, 96, 96), echo_times_ms=None, field_t: float = 3.0, snr: float = 50.0,
                 field_amplitude_hz: float = 400.0, seed: int = 0) -> SimulatedGRE:
    """Tissue fills an ellipse; FF ramps 0-100 % across x in muscle, fat ring 95 %, R2* 20-200 1/s."""
    rng = np.random.default_rng(seed)
    if echo_times_ms is None:
        echo_times_ms = 1.2 + 1.1 * np.arange(6)
    te = np.asarray(echo_times_ms, float)
    nz, ny, nx = shape_zyx
    z, y, x = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx),
                          indexing="ij")
    radius = np.sqrt((x / 0.9) ** 2 + (y / 0.8) ** 2)
    tissue = radius < 1.0
    ring = tissue & (radius > 0.82)
    ff = np.clip((x + 0.8) / 1.6, 0.0, 1.0)       # 0..100 % across the muscle
    ff = np.where(ring, 0.95, ff)
    ff = np.where(np.sqrt((x + 0.1) ** 2 + (y - 0.1) ** 2) < 0.12, 0.9, ff)
    r2star = 20.0 + 180.0 * (y + 1) / 2
    # A smooth field with gradients and a bump: spans +-field_amplitude over the object.
    field = field_amplitude_hz * (0.6 * x + 0.3 * y * y - 0.2 * z + 0.35 * np.exp(-((x - 0.3) ** 2 + y ** 2) / 0.2))
    field = field / max(np.abs(field[tissue]).max(), 1e-9) * field_amplitude_hz
    phi0 = 0.8 * x - 0.5 * y
    c = fat_phasor(te, field_t)
    t = te[:, None, None, None] / 1000.0
    rho = np.where(tissue, 1.0, 0.0)
    species = rho * ((1 - ff) + ff * c[:, None, None, None])
    signal = species * np.exp((2j * np.pi * field - r2star) * t) * np.exp(1j * phi0)
    sigma = 1.0 / snr
    noise = rng.normal(scale=sigma, size=signal.shape) + 1j * rng.normal(scale=sigma, size=signal.shape)
    return SimulatedGRE((signal + noise).astype(np.complex64), te, field_t, np.where(tissue, ff, 0.0),
                        np.where(tissue, r2star, 0.0), np.where(tissue, field, 0.0), tissue, sigma)
