"""The background-noise estimator shared by the T2 and fat-fraction stages (`maps.noise`),
against the sigma used to simulate a Rician background."""
from __future__ import annotations

import numpy as np
import pytest

from myositis_qmri.maps.noise import MIN_BACKGROUND_VOXELS, estimate_background_noise, noise_sigma

SIGMA = 10.0


def _echoes(rng, tissue_radius=0.6, shape=(4, 8, 64, 64)):
    """Magnitude echoes of a disc of tissue (SNR 20-100, decaying) in air, Rician noise of SIGMA."""
    n_echoes, nz, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    disc = np.hypot((yy - ny / 2) / (ny / 2), (xx - nx / 2) / (nx / 2)) < tissue_radius
    amplitude = np.where(disc, rng.uniform(200, 1000, (nz, ny, nx)), 0.0)
    signal = amplitude[None] * np.exp(-np.arange(1, n_echoes + 1)[:, None, None, None] * 10.0 / 35.0)
    noise = rng.normal(0, SIGMA, (2, *signal.shape))
    return np.hypot(signal + noise[0], noise[1]).astype(np.float32), disc


def test_rician_background_gives_the_simulated_sigma_and_power():
    echoes, disc = _echoes(np.random.default_rng(0))
    noise = estimate_background_noise(echoes)
    assert noise.sigma == pytest.approx(SIGMA, rel=0.02)
    assert noise.power == pytest.approx(2 * noise.sigma ** 2)
    assert noise.n_background > 0.9 * (~disc).sum() * echoes.shape[1]
    assert noise_sigma(echoes[0]) == pytest.approx(SIGMA, rel=0.03)   # one image


def test_a_few_bright_artefact_voxels_do_not_move_it():
    rng = np.random.default_rng(1)
    echoes, disc = _echoes(rng)
    air = np.flatnonzero(np.broadcast_to(~disc, echoes.shape[1:]).ravel())
    spikes = echoes.reshape(echoes.shape[0], -1)
    spikes[:, rng.choice(air, 20, replace=False)] = 1e5   # 100 x the brightest tissue
    assert noise_sigma(spikes.reshape(echoes.shape)[0]) == pytest.approx(SIGMA, rel=0.03)


def test_no_background_reads_zero_not_a_tissue_level():
    """All tissue (or an all-zero image): too little background, so sigma is 0, the documented
    fallback (the T2 fit then removes no floor; the FF signal mask thresholds on tissue only)."""
    echoes, _ = _echoes(np.random.default_rng(2), tissue_radius=3.0)
    noise = estimate_background_noise(echoes)
    assert noise.sigma == 0.0 and noise.power == 0.0 and noise.n_background < MIN_BACKGROUND_VOXELS
    assert noise_sigma(np.zeros((4, 32, 32))) == 0.0


def _coil_echoes(rng, channels: int, shape=(4, 8, 64, 64)):
    """Root-sum-of-squares magnitude of `channels` coils (per-channel noise SIGMA) over the disc."""
    signal, disc = _echoes(rng, shape=shape)
    signal = np.where(disc, 600.0, 0.0)[None, None] * np.ones(shape)
    coils = signal[..., None] / np.sqrt(channels) + rng.normal(0, SIGMA, (*shape, channels))
    return np.sqrt(np.sum(coils ** 2 + rng.normal(0, SIGMA, (*shape, channels)) ** 2, axis=-1)).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 4, 8])
def test_root_sum_of_squares_channels_are_read_from_the_background(channels):
    """A noncentral-chi background of N coils: N, sigma and P = 2 N sigma^2 as simulated (a
    Rayleigh-only estimator reads P 32 % high for 4 coils and 38 % for 8)."""
    noise = estimate_background_noise(_coil_echoes(np.random.default_rng(channels), channels))
    assert noise.channels == pytest.approx(channels, rel=0.05)
    assert noise.sigma == pytest.approx(SIGMA, rel=0.03)
    assert noise.power == pytest.approx(2 * channels * SIGMA ** 2, rel=0.03)


def test_coarse_integer_background_is_read_as_one_channel():
    """A background stored in a handful of integer levels (sigma about 2.5 counts, as in the real
    calf MESE) cannot show its distribution's shape: one channel, the conservative reading."""
    echoes = np.round(_coil_echoes(np.random.default_rng(3), 4) / 4.0)
    assert estimate_background_noise(echoes).channels == 1.0
