"""The Rician / noncentral-chi noise of MESE magnitudes: its floor, taken out before fitting, and
the per-echo noise variance that the precision and bias estimates need.

Magnitude noise never averages to zero: where the true echo is A, E[M^2] = A^2 + P, with P the
noise power of the background (2 N sigma^2 for N root-sum-of-squares channels of per-channel
sigma; measured by `maps.noise.estimate_background_noise`). Well above the noise, M varies
around A with variance sigma^2 only (the noise along the signal), while the 2N - 1 other noise
components add (2N - 1) sigma^2 / (2A) to its mean. Fitting M directly reads that late-echo
floor as a long-T2 (fat) component; sqrt(max(M^2 - (P - sigma^2), 0)) has mean A to second
order (see `remove_noise_floor`). For one channel P - sigma^2 = P / 2; for 4 channels
subtracting only P / 2 would leave +0.29 sigma at A = 5 sigma (simulated).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EchoNoise:
    """Background noise of an echo series. power: P = E[M^2] of the background (signal units
    squared); channels: effective root-sum-of-squares channels N (1: Rician)."""

    power: float = 0.0
    channels: float = 1.0

    @classmethod
    def of(cls, noise) -> "EchoNoise":
        """An EchoNoise as is; a number as the power of a one-channel (Rician) background."""
        if isinstance(noise, EchoNoise):
            return noise
        return cls(float(noise or 0.0), 1.0)

    @property
    def variance(self) -> float:
        """sigma^2: the variance of a magnitude well above the noise (signal units squared)."""
        return self.power / (2.0 * self.channels)

    @property
    def floor(self) -> float:
        """P - sigma^2: what M^2 carries on top of A^2, less the part that averages out in M."""
        return self.power - self.variance


def remove_noise_floor(magnitude: np.ndarray, noise) -> np.ndarray:
    """sqrt(max(M^2 - (P - sigma^2), 0)): magnitude with the noise floor's bias taken out.

    noise: an EchoNoise, or the power P of a one-channel background. The result has mean
    A + O(sigma^4 / A^3) where the echo stands above the noise; subtracting all of P
    (E[M^2] = A^2 + P) would bias every echo low by about sigma^2 / (2 A). Where the echo is
    buried in noise, the clipped difference keeps only a small residue.
    """
    noise = EchoNoise.of(noise)
    if noise.power <= 0:
        return magnitude.astype(np.float32, copy=False)
    out = np.square(magnitude.astype(np.float32)) - np.float32(noise.floor)
    np.maximum(out, 0, out=out)
    return np.sqrt(out, out=out)
