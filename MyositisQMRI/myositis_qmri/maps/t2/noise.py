"""Background noise of magnitude images and the Rician / noncentral-chi floor.

Magnitude noise never averages to zero: where the true echo is A, E[M^2] = A^2 + P with P the
noise power of the background (2 sigma^2 for one channel, 2 N sigma^2 for N-channel
root-sum-of-squares). Fitting M directly reads the late-echo floor as a long-T2 (fat)
component; fitting sqrt(max(M^2 - P, 0)) removes the floor's bias in the energy and most of
it in amplitude, whatever the number of channels, so only P is needed.
"""
from __future__ import annotations

import numpy as np

MIN_BACKGROUND_VOXELS = 200


def estimate_noise_power(magnitude: np.ndarray) -> tuple[float, int]:
    """Noise power P (signal units squared) from background voxels of an (echo, ...) array.

    Background: voxels whose mean over echoes is nonzero but below 10 % of the 99th
    percentile (well below any tissue). For pure noise M^2 is exponential (one channel) so
    P = median(M^2) / ln 2, robust to the odd tissue voxel. Returns (P, n_background); P is
    0 when there is too little background (then no floor correction is made).
    """
    echoes = magnitude.reshape(magnitude.shape[0], -1)
    mean = echoes.mean(axis=0, dtype=np.float64)
    positive = mean[mean > 0]
    if positive.size == 0:
        return 0.0, 0
    threshold = 0.1 * np.percentile(positive, 99)
    background = (mean > 0) & (mean < threshold)
    count = int(background.sum())
    if count < MIN_BACKGROUND_VOXELS:
        return 0.0, count
    squares = np.square(echoes[:, background].astype(np.float64))
    return float(np.median(squares) / np.log(2)), count


def remove_noise_floor(magnitude: np.ndarray, noise_power: float) -> np.ndarray:
    """sqrt(max(M^2 - P, 0)): magnitude with the Rician / noncentral-chi floor taken out."""
    if noise_power <= 0:
        return magnitude.astype(np.float32, copy=False)
    out = np.square(magnitude.astype(np.float32)) - np.float32(noise_power)
    np.maximum(out, 0, out=out)
    return np.sqrt(out, out=out)
