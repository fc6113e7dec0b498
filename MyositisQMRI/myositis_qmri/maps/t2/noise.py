"""The Rician / noncentral-chi noise floor of MESE magnitudes, taken out before fitting.

Magnitude noise never averages to zero: where the true echo is A, E[M^2] = A^2 + P with P the
noise power of the background (2 sigma^2 for one channel, 2 N sigma^2 for N-channel
root-sum-of-squares; measured by `maps.noise.estimate_background_noise`, whose `.power` is P).
Fitting M directly reads the late-echo floor as a long-T2 (fat) component; fitting
sqrt(max(M^2 - P/2, 0)) removes the floor's bias in amplitude to second order (see
`remove_noise_floor`), whatever the number of channels, so only P is needed.
"""
from __future__ import annotations

import numpy as np

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
