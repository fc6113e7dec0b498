"""Whole-volume B0 field map without fat-water swaps: VARPRO residual curves plus a graph cut.

1. For every voxel, the VARPRO residual ||S||^2 - ||Q^H D_f^H S||^2 over a grid of field values
   (water + multi-peak fat basis, optional R2* values) is one matrix product per chunk.
2. Residual curves are summed over blocks (a coarse grid of ~15k voxels) and the field is chosen
   there by an exact single min-cut (Ishikawa construction with PyMaxflow): unary = residual
   at each field label, pairwise = lambda * |label difference|. The labels span more than one
   residual period so wraps are unwrapped instead of becoming swaps.
3. On the full grid each voxel takes the residual minimum nearest the upsampled coarse field
   (a quadratic pull towards it), refined by a parabola through the grid neighbours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import maxflow
import numpy as np
from scipy import ndimage

from ...progress import Progress

COARSE_TARGET_VOXELS = 3000
COARSE_LABEL_STRIDE = 3  # coarse labels every 3rd field value (~1/16 period)
CHUNK_VOXELS = 60000


@dataclass
class FieldGrid:
    """Field values (Hz) tested per voxel: `step_hz` apart, spanning more than one period."""

    freqs_hz: np.ndarray
    period_hz: float
    points_per_period: int
    periodic: bool  # uniform echo spacing: the residual repeats every period

    def keys(self, labels: np.ndarray) -> np.ndarray:
        """Index of the distinct residual value a label needs (labels one period apart share it)."""
        if not self.periodic:
            return np.asarray(labels)
        return np.round(self.freqs_hz[labels] / self.step_hz).astype(int) % self.points_per_period

    def key_freqs_hz(self, keys: np.ndarray) -> np.ndarray:
        return keys * self.step_hz if self.periodic else self.freqs_hz[keys]

    @property
    def step_hz(self) -> float:
        return float(self.freqs_hz[1] - self.freqs_hz[0])


def make_field_grid(echo_times_ms, span_hz: float = 1000.0, points_per_period: int = 48) -> FieldGrid:
    """Labels over max(2 periods, span) capped at 3 periods; period = 1 / median echo spacing."""
    te_s = np.sort(np.asarray(echo_times_ms, float)) / 1000.0
    spacing = np.diff(te_s)
    period = 1.0 / float(np.median(spacing))
    periodic = bool(np.allclose(spacing, np.median(spacing), rtol=0.005))
    step = period / points_per_period
    half = float(np.clip(span_hz, 2 * period, 3 * period)) / 2.0
    n_half = int(math.ceil(half / step))
    return FieldGrid(np.arange(-n_half, n_half + 1) * step, period, points_per_period, periodic)


def projection_rows(echo_times_ms, fat_phasor_per_echo, freqs_hz, r2star_values=(0.0,)) -> np.ndarray:
    """Rows P[(f, r), k, echo] with ||P S||^2 = energy of S explained by the model at (f, R2*).

    P = Q^H D_f^H where Q is an orthonormal basis of [e^{-R2* t}, c e^{-R2* t}].
    Returned shape (n_freq * n_r2 * 2, n_echo), complex64.
    """
    t = np.asarray(echo_times_ms, float) / 1000.0
    c = np.asarray(fat_phasor_per_echo, complex)
    rows = []
    for f in np.atleast_1d(freqs_hz):
        demod = np.exp(-2j * np.pi * f * t)
        for r2 in r2star_values:
            decay = np.exp(-r2 * t)
            basis = np.stack([decay, c * decay], axis=1)
            q, _ = np.linalg.qr(basis)
            rows.append(q.conj().T * demod[None, :])
    return np.concatenate(rows, axis=0).astype(np.complex64)


def residual_curves(signal_ev: np.ndarray, rows: np.ndarray, n_freq: int) -> np.ndarray:
    """Residual energy (n_freq, n_voxel) for signal (echo, voxel); best R2* value per field."""
    energy = np.sum(np.abs(signal_ev) ** 2, axis=0)
    y = rows @ signal_ev.astype(np.complex64, copy=False)
    explained = (y.real ** 2 + y.imag ** 2).reshape(n_freq, -1, 2, y.shape[-1]).sum(axis=2).max(axis=1)
    return np.maximum(energy[None, :] - explained, 0.0)


def coarse_factors(shape_zyx, spacing_zyx, target: int = COARSE_TARGET_VOXELS) -> tuple[int, int, int]:
    """Block size per axis so the coarse grid has about `target` voxels, blocks ~isotropic in mm."""
    shape = np.asarray(shape_zyx)
    spacing = np.asarray(spacing_zyx, float)
    block_mm = float(spacing.min())
    while True:
        factors = np.maximum(1, np.round(block_mm / spacing)).astype(int)
        if np.prod(np.ceil(shape / factors)) <= target or np.all(factors >= shape):
            return tuple(int(f) for f in factors)
        block_mm *= 1.15


def ishikawa_labels(unary_lzyx: np.ndarray, weights_zyx: tuple[float, float, float]) -> np.ndarray:
    """Exact minimiser of sum_v D_v(l_v) + sum_edges w_axis |l_p - l_q| by one min-cut.

    Node (k, v) in the source set means label(v) > k; cutting chain edge k-1 -> k costs D(k).
    """
    n_labels = unary_lzyx.shape[0]
    d = unary_lzyx - unary_lzyx.min(axis=0, keepdims=True) + 1e-6
    big = float(d.sum()) + 1.0
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes((n_labels - 1,) + unary_lzyx.shape[1:])
    forward = np.zeros((3, 3, 3, 3))
    forward[2, 1, 1, 1] = 1
    backward = np.zeros((3, 3, 3, 3))
    backward[0, 1, 1, 1] = 1
    graph.add_grid_edges(nodes, weights=d[1:], structure=forward, symmetric=False)
    graph.add_grid_edges(nodes, weights=big, structure=backward, symmetric=False)
    for axis, weight in enumerate(weights_zyx):
        if weight <= 0 or nodes.shape[axis + 1] < 2:
            continue
        spatial = np.zeros((3, 3, 3, 3))
        index = [1, 1, 1, 1]
        index[axis + 1] = 2
        spatial[tuple(index)] = 1
        graph.add_grid_edges(nodes, weights=float(weight), structure=spatial, symmetric=True)
    source = np.zeros(nodes.shape)
    sink = np.zeros(nodes.shape)
    source[0] = d[0]
    sink[-1] = d[-1]
    graph.add_grid_tedges(nodes, source, sink)
    graph.maxflow()
    in_sink = graph.get_grid_segments(nodes)
    return np.sum(~in_sink, axis=0)


def _costs(curve_fn, signal_ev, grid: FieldGrid, labels: np.ndarray) -> np.ndarray:
    """curve_fn at the field labels given, evaluating each distinct residual once."""
    keys = grid.keys(labels)
    needed, where = np.unique(keys, return_inverse=True)
    return curve_fn(signal_ev, grid.key_freqs_hz(needed))[where.ravel()]


def _chunks(n: int, size: int = CHUNK_VOXELS):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def estimate_field_map(signal: np.ndarray, unary_fn, grid: FieldGrid, mask: np.ndarray,
                       spacing_zyx, energy_ref: float, smoothness: float = 1.0,
                       fine_pull: float = 1.0, desc: str = "field map") -> np.ndarray:
    """Field map (Hz, z y x) from per-voxel costs `unary_fn(signal (echo, n), freqs_hz) -> (n_freq, n)`.

    `signal` is (echo, z, y, x) complex; only `mask` voxels carry cost. `energy_ref` scales
    costs (a typical tissue signal energy) so `smoothness` is unit-free.
    """
    n_echo = signal.shape[0]
    shape = signal.shape[1:]
    n_freq = grid.freqs_hz.size
    factors = coarse_factors(shape, spacing_zyx)
    coarse_shape = tuple(int(math.ceil(s / f)) for s, f in zip(shape, factors))
    flat = signal.reshape(n_echo, -1)
    index = np.flatnonzero(mask.ravel())
    coarse_index = _coarse_index(shape, factors)[index]
    coarse_labels = np.arange(0, n_freq, COARSE_LABEL_STRIDE)
    all_labels = np.arange(n_freq)
    unary = np.zeros((coarse_labels.size, int(np.prod(coarse_shape))), np.float64)
    with Progress(2 * len(range(0, index.size, CHUNK_VOXELS)) + 1, desc) as progress:
        for part in _chunks(index.size):
            cost = _costs(unary_fn, flat[:, index[part]], grid, coarse_labels) / energy_ref
            for label in range(coarse_labels.size):
                unary[label] += np.bincount(coarse_index[part], cost[label], unary.shape[1])
            progress.update()
        unary = unary.reshape((coarse_labels.size,) + coarse_shape)
        block_mm = np.asarray(factors) * np.asarray(spacing_zyx, float)
        # Edge weights fall with block distance; scaled by block cross-section so the balance
        # between data and smoothness does not depend on the coarse block size.
        voxels_per_block = float(np.prod(factors))
        label_fraction = COARSE_LABEL_STRIDE * grid.step_hz / grid.period_hz   # one label in periods
        weights = tuple(smoothness * voxels_per_block * block_mm.min() / b * label_fraction if s > 1 else 0.0
                        for b, s in zip(block_mm, coarse_shape))
        labels = ishikawa_labels(unary, weights)
        progress.update()
        coarse_field = grid.freqs_hz[coarse_labels][labels]
        prior = _upsample(coarse_field, factors, shape).ravel()
        field = prior.copy()
        for part in _chunks(index.size):
            voxels = index[part]
            cost = _costs(unary_fn, flat[:, voxels], grid, all_labels)
            energy = np.sum(np.abs(flat[:, voxels]) ** 2, axis=0)
            distance = (grid.freqs_hz[:, None] - prior[voxels][None, :]) / (grid.period_hz / 2)
            cost = cost + fine_pull * energy[None, :] * 0.25 * distance ** 2
            cost[np.abs(distance) > 1] = np.inf
            field[voxels] = _parabolic_argmin(cost, grid.freqs_hz)
            progress.update()
    return field.reshape(shape)


def _coarse_index(shape, factors) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*(np.arange(s) // f for s, f in zip(shape, factors)), indexing="ij")
    coarse_shape = [int(math.ceil(s / f)) for s, f in zip(shape, factors)]
    return np.ravel_multi_index((zz.ravel(), yy.ravel(), xx.ravel()), coarse_shape)


def _upsample(coarse: np.ndarray, factors, shape) -> np.ndarray:
    """Linear interpolation of block centres back onto the full grid."""
    coords = [(np.arange(s) + 0.5) / f - 0.5 for s, f in zip(shape, factors)]
    grid = np.meshgrid(*coords, indexing="ij")
    return ndimage.map_coordinates(coarse, grid, order=1, mode="nearest")


def _parabolic_argmin(cost: np.ndarray, freqs_hz: np.ndarray) -> np.ndarray:
    """Sub-grid minimum along axis 0 of (n_freq, n) through a parabola on the neighbours."""
    best = np.argmin(cost, axis=0)
    inner = np.clip(best, 1, cost.shape[0] - 2)
    cols = np.arange(cost.shape[1])
    c0, c1, c2 = cost[inner - 1, cols], cost[inner, cols], cost[inner + 1, cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = c0 - 2 * c1 + c2
        shift = np.where(np.isfinite(denom) & (denom > 0), 0.5 * (c0 - c2) / denom, 0.0)
    shift = np.where(best == inner, np.clip(shift, -0.5, 0.5), 0.0)
    step = freqs_hz[1] - freqs_hz[0]
    return freqs_hz[best] + shift * step
