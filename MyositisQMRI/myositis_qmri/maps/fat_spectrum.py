"""Multi-peak fat spectrum (ISMRM fat-water toolbox 6-peak model) and its signal phasor.

Convention: a species at frequency offset df (Hz) contributes exp(+2*pi*i*df*t), with fat
peaks below water (negative ppm). This is the ISMRM toolbox's model, which it calls clockwise
precession (PrecessionIsClockwise = 1); counter-clockwise data are conjugated before fitting.
"""
from __future__ import annotations

import numpy as np

GYROMAGNETIC_MHZ_PER_T = 42.577478518

FAT_PEAKS_PPM = np.array([-3.80, -3.40, -2.60, -1.94, -0.39, 0.60])
FAT_PEAK_AMPLITUDES = np.array([0.087, 0.693, 0.128, 0.004, 0.039, 0.048])


def fat_peak_frequencies_hz(field_t: float, peaks_ppm=FAT_PEAKS_PPM) -> np.ndarray:
    return np.asarray(peaks_ppm) * GYROMAGNETIC_MHZ_PER_T * field_t


def fat_phasor(echo_times_ms, field_t: float, peaks_ppm=FAT_PEAKS_PPM,
               amplitudes=FAT_PEAK_AMPLITUDES) -> np.ndarray:
    """Complex fat signal per echo for unit fat amplitude (relative amplitudes sum to 1)."""
    t_s = np.asarray(echo_times_ms, dtype=float)[:, None] / 1000.0
    amplitudes = np.asarray(amplitudes, dtype=float)
    freqs = fat_peak_frequencies_hz(field_t, peaks_ppm)[None, :]
    return (amplitudes[None, :] / amplitudes.sum() * np.exp(2j * np.pi * freqs * t_s)).sum(axis=1)
