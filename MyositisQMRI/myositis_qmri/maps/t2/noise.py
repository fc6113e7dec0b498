"""Background noise of magnitude images and the Rician / noncentral-chi floor.

Magnitude noise never averages to zero: where the true echo is A, E[M^2] = A^2 + P with P the
noise power of the background (2 sigma^2 for one channel, 2 N sigma^2 for N-channel
root-sum-of-squares). Fitting M directly reads the late-echo floor as a long-T2 (fat)
component; fitting sqrt(max(M^2 - P/2, 0)) removes the floor's bias in amplitude to second
order (see `remove_noise_floor`), whatever the number of channels, so only P is needed.
"""
from __future__ import annotations

import numpy as np

MIN_BACKGROUND_VOXELS = 200
MAX_NOISE_SAMPLES = 1_000_000   # background magnitudes drawn for the median; plenty for 0.1 %
SLAB_BYTES = 64 * 2**20         # echo data handled per pass, so memory stays bounded


def estimate_noise_power(magnitude: np.ndarray, seed: int = 0) -> tuple[float, int]:
    """Noise power P (signal units squared) from background voxels of an (echo, z, ...) array.

    Background: voxels whose mean over echoes is nonzero but below 10 % of the 99th
    percentile (well below any tissue). For pure noise M^2 is exponential (one channel) so
    P = median(M^2) / ln 2, robust to the odd tissue voxel. The mean runs slab by slab of
    slices and the median uses a random subsample of at most MAX_NOISE_SAMPLES background
    magnitudes (fixed seed, so the result is reproducible), so memory stays a small fraction
    of the data. Returns (P, n_background); P is 0 when there is too little background.
    """
    n_echoes = magnitude.shape[0]
    slabs = _slabs(magnitude)
    mean = np.concatenate([magnitude[:, a:b].reshape(n_echoes, -1).mean(axis=0, dtype=np.float32)
                           for a, b in slabs])
    positive = mean[mean > 0]
    if positive.size == 0:
        return 0.0, 0
    threshold = 0.1 * np.percentile(positive[::max(1, positive.size // MAX_NOISE_SAMPLES)], 99)
    background = (mean > 0) & (mean < threshold)
    del mean, positive
    count = int(background.sum())
    if count < MIN_BACKGROUND_VOXELS:
        return 0.0, count
    # a random subset of (echo, background voxel) samples, drawn slab by slab
    keep = min(1.0, MAX_NOISE_SAMPLES / (count * n_echoes))
    rng = np.random.default_rng(seed)
    samples, offset = [], 0
    for a, b in slabs:
        size = int(np.prod(magnitude.shape[2:], dtype=np.int64)) * (b - a)
        voxels = np.flatnonzero(background[offset:offset + size])
        offset += size
        if voxels.size == 0:
            continue
        values = magnitude[:, a:b].reshape(n_echoes, -1)[:, voxels].ravel()
        if keep < 1.0:
            values = values[rng.random(values.size) < keep]
        samples.append(np.square(values.astype(np.float64)))
    return float(np.median(np.concatenate(samples)) / np.log(2)), count


def _slabs(magnitude: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) slice ranges along axis 1 holding about SLAB_BYTES of echo data each."""
    per_slice = max(1, magnitude[:, :1].nbytes)
    step = max(1, SLAB_BYTES // per_slice)
    return [(a, min(a + step, magnitude.shape[1])) for a in range(0, magnitude.shape[1], step)]


def remove_noise_floor(magnitude: np.ndarray, noise_power: float) -> np.ndarray:
    """sqrt(max(M^2 - P/2, 0)): magnitude with the Rician / noncentral-chi bias taken out.

    With M^2 = (A + n_r)^2 + n_i^2 (n_r, n_i of variance P/2 each), sqrt(M^2 - P/2) has mean
    A + O(P^2 / A^3): unbiased to second order where the echo stands above the noise, while
    subtracting all of P (E[M^2] = A^2 + P) biases every echo low by about P / (4 A).
    Where the echo is buried in noise, the clipped difference keeps only a small residue.
    """
    if noise_power <= 0:
        return magnitude.astype(np.float32, copy=False)
    out = np.square(magnitude.astype(np.float32)) - np.float32(0.5 * noise_power)
    np.maximum(out, 0, out=out)
    return np.sqrt(out, out=out)
