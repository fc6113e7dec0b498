"""Background noise of magnitude images: the one estimator of every map stage (T2, fat fraction).

Units. sigma is the standard deviation of the Gaussian noise in each of the real and imaginary
channels, in signal units. Where the true signal is 0 the magnitude M is then Rayleigh, and the
noise power P = E[M^2] = 2 sigma^2 is what a Rician magnitude carries on top of A^2
(E[M^2] = A^2 + P). Root-sum-of-squares of N coils gives a noncentral-chi background with
E[M^2] = 2 N sigma^2, which this estimator (built on the Rayleigh law) reads 30-40 % high in
P for N = 4-8 (simulated).

The estimator. Background: voxels whose mean over echoes is nonzero (scanners zero-fill outside
the reconstructed field of view) and below 10 % of its 99th percentile, well below any tissue;
a percentile, so a few very bright artefact voxels do not move it. For pure noise M^2 / sigma^2
is chi-squared with 2 degrees of freedom, so sigma^2 = median(M^2) / (2 ln 2); the median
ignores the odd tissue or ghost voxel among the background. Compared with a Rayleigh quartile
below an Otsu threshold (the former fat-fraction estimator), it is unbiased where the other read
sigma 10 % high on a clean simulated background and 45 % high with 20 spike voxels (Otsu's
histogram spans the spikes), and with too little background it reports 0 instead of a tissue
level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_BACKGROUND_VOXELS = 200
BACKGROUND_FRACTION_OF_P99 = 0.1
MAX_NOISE_SAMPLES = 1_000_000   # background magnitudes drawn for the median; plenty for 0.1 %
SLAB_BYTES = 64 * 2**20         # echo data handled per pass, so memory stays bounded


@dataclass(frozen=True)
class BackgroundNoise:
    """sigma: per-channel Gaussian noise sd (signal units); 0 when the images have too little
    background to measure it (fewer than MIN_BACKGROUND_VOXELS voxels). n_background: voxels used."""

    sigma: float
    n_background: int

    @property
    def power(self) -> float:
        """Noise power P = E[M^2] of a Rician background, 2 sigma^2 (signal units squared)."""
        return 2.0 * self.sigma ** 2


def estimate_background_noise(echoes: np.ndarray, seed: int = 0) -> BackgroundNoise:
    """Noise of an (echo, z, ...) magnitude array from its background (see the module docstring).

    The mean over echoes runs slab by slab of slices and the median uses a random subsample of
    at most MAX_NOISE_SAMPLES background magnitudes (fixed seed, so the result is
    reproducible), so memory stays a small fraction of the data.
    """
    echoes = np.asarray(echoes)
    n_echoes = echoes.shape[0]
    slabs = _slabs(echoes)
    mean = np.concatenate([echoes[:, a:b].reshape(n_echoes, -1).mean(axis=0, dtype=np.float32)
                           for a, b in slabs])
    positive = mean[(mean > 0) & np.isfinite(mean)]
    if positive.size == 0:
        return BackgroundNoise(0.0, 0)
    threshold = BACKGROUND_FRACTION_OF_P99 * np.percentile(
        positive[::max(1, positive.size // MAX_NOISE_SAMPLES)], 99)
    background = (mean > 0) & (mean < threshold)
    del mean, positive
    count = int(background.sum())
    if count < MIN_BACKGROUND_VOXELS:
        return BackgroundNoise(0.0, count)
    median_square = float(np.median(_background_squares(echoes, background, slabs, count, seed)))
    return BackgroundNoise(float(np.sqrt(median_square / (2.0 * np.log(2)))), count)


def noise_sigma(image: np.ndarray) -> float:
    """Per-channel Gaussian noise sigma (signal units) of one magnitude image; 0 without background."""
    return estimate_background_noise(np.asarray(image)[None]).sigma


def _background_squares(echoes, background, slabs, count, seed) -> np.ndarray:
    """M^2 of a random subset of (echo, background voxel) samples, drawn slab by slab."""
    n_echoes = echoes.shape[0]
    keep = min(1.0, MAX_NOISE_SAMPLES / (count * n_echoes))
    rng = np.random.default_rng(seed)
    samples, offset = [], 0
    for a, b in slabs:
        size = int(np.prod(echoes.shape[2:], dtype=np.int64)) * (b - a)
        voxels = np.flatnonzero(background[offset:offset + size])
        offset += size
        if voxels.size == 0:
            continue
        values = echoes[:, a:b].reshape(n_echoes, -1)[:, voxels].ravel()
        if keep < 1.0:
            values = values[rng.random(values.size) < keep]
        samples.append(np.square(values.astype(np.float64)))
    return np.concatenate(samples)


def _slabs(echoes: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) slice ranges along axis 1 holding about SLAB_BYTES of echo data each."""
    per_slice = max(1, echoes[:, :1].nbytes)
    step = max(1, SLAB_BYTES // per_slice)
    return [(a, min(a + step, echoes.shape[1])) for a in range(0, echoes.shape[1], step)]
