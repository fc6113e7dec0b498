"""Background noise of magnitude images: the one estimator of every map stage (T2, fat fraction).

Units. sigma is the standard deviation of the Gaussian noise in each of the real and imaginary
channels of one coil, in signal units. Where the true signal is 0 the magnitude M of one channel
is Rayleigh; root-sum-of-squares of N coils is noncentral chi with 2N degrees of freedom. The
noise power P = E[M^2] = 2 N sigma^2 is what a magnitude carries on top of A^2 (E[M^2] = A^2 + P).

The estimator. Background: voxels whose mean over echoes is nonzero (scanners zero-fill outside
the reconstructed field of view) and below 10 % of its 99th percentile, well below any tissue;
a percentile, so a few very bright artefact voxels do not move it. For pure noise M^2 / sigma^2
is chi-squared with 2N degrees of freedom. N (effective, possibly fractional: coils are
correlated) comes from the shape of the background, the ratio of the upper to the lower quartile
of M^2 (4.8 for one channel, 2.0 for 4, 1.6 for 8), and sigma^2 = median(M^2) / median(chi2_2N).
Quantiles ignore the odd tissue or ghost voxel among the background. A background with heavier
tails than one channel (a mixture of noise levels, as parallel imaging leaves it), or one stored
in too few distinct integer levels to show its shape, is read as one channel, the conservative
choice. Against the former fat-fraction estimator (a Rayleigh quartile below an Otsu threshold)
it is unbiased where that read sigma 10 % high on a clean simulated background and 45 % high
with 20 spike voxels, and with too little background it reports 0 instead of a tissue level.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_BACKGROUND_VOXELS = 200
MAX_CHANNELS = 32               # effective coils a background may be read as
MIN_DISTINCT_LEVELS = 64        # fewer distinct background values: too coarse to read N
BACKGROUND_FRACTION_OF_P99 = 0.1
MAX_NOISE_SAMPLES = 1_000_000   # background magnitudes drawn for the median; plenty for 0.1 %
SLAB_BYTES = 64 * 2**20         # echo data handled per pass, so memory stays bounded


@dataclass(frozen=True)
class BackgroundNoise:
    """sigma: per-channel Gaussian noise sd (signal units); 0 when the images have too little
    background to measure it (fewer than MIN_BACKGROUND_VOXELS voxels). n_background: voxels used
    (None: given, not measured). channels: effective number of root-sum-of-squares channels N
    (1 for a Rician background)."""

    sigma: float
    n_background: int | None = None
    channels: float = 1.0

    @classmethod
    def of(cls, noise) -> "BackgroundNoise":
        """A BackgroundNoise as is; a number as the power P of a one-channel (Rician) background."""
        if isinstance(noise, BackgroundNoise):
            return noise
        return cls(float(np.sqrt(max(float(noise or 0.0), 0.0) / 2.0)))

    @property
    def power(self) -> float:
        """Noise power P = E[M^2] of the background, 2 N sigma^2 (signal units squared)."""
        return 2.0 * self.channels * self.sigma ** 2

    @property
    def floor(self) -> float:
        """P - sigma^2: what M^2 carries on top of A^2 well above the noise, less the part along
        the signal that averages out in M (see `maps.t2.noise`)."""
        return self.power - self.sigma ** 2


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
    squares = _background_squares(echoes, background, slabs, count, seed)
    degrees = _degrees_of_freedom(squares)
    sigma = np.sqrt(float(np.median(squares)) / stats.chi2.median(degrees))
    return BackgroundNoise(float(sigma), count, degrees / 2.0)


def _degrees_of_freedom(squares: np.ndarray) -> float:
    """2N of a chi-squared background, from its quartile ratio (2 where it cannot be read)."""
    q25, q75 = np.percentile(squares, [25, 75])
    if q25 <= 0 or np.unique(squares[:100_000]).size < MIN_DISTINCT_LEVELS:
        return 2.0
    degrees = _DEGREES[::-1]
    return float(np.interp(q75 / q25, _QUARTILE_RATIO[::-1], degrees, left=degrees[0], right=degrees[-1]))


_DEGREES = np.linspace(2.0, 2.0 * MAX_CHANNELS, 311)
_QUARTILE_RATIO = stats.chi2.ppf(0.75, _DEGREES) / stats.chi2.ppf(0.25, _DEGREES)   # decreasing


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
