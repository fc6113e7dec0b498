"""Variable-projection dictionary fit of echo trains: water (+ fat) amplitudes solved linearly.

For each dictionary atom (B1, T2w) the non-negative amplitudes of the water train w and the
fat train f that best explain a voxel follow in closed form from two dot products: with
f^ = f/|f| and u = the unit part of w orthogonal to f, the explained energy is
c_f^2 + c_u^2 (c = dot products with the voxel), or the better single-component fit when a
non-negative amplitude would be violated. Atoms are compressed to the K-dimensional SVD
subspace of the dictionary, so all dot products for all atoms are one float32 matrix
product. The search runs on a coarse sub-grid, then on the full grid in a window around
each voxel's coarse optimum (voxels grouped by coarse cell, one matrix product per group),
then refines off the grid by parabolic interpolation in log T2 and B1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COARSE_B1_STEP = 5   # coarse grid keeps every 5th B1 (0.05) and every 4th T2 (8 %)
COARSE_T2_STEP = 4


@dataclass
class Projector:
    """Precomputed per-atom quantities in the compressed subspace (float32)."""

    basis: np.ndarray        # (E, K) orthonormal
    t2_grid_ms: np.ndarray   # (T,)
    b1_grid: np.ndarray      # (B,)
    w: np.ndarray            # (B, T, K) water atoms
    f: np.ndarray | None     # (B, K) fat atoms (None: single-component fit)
    f_hat: np.ndarray | None  # (B, K)
    f_norm: np.ndarray | None  # (B,)
    u: np.ndarray            # (B, T, K) water orthogonal to fat, unit norm (w^ when no fat)
    u_norm: np.ndarray       # (B, T) |w_perp|
    g: np.ndarray            # (B, T) w . f^
    w_norm: np.ndarray       # (B, T)

    @classmethod
    def from_atoms(cls, water: np.ndarray, fat: np.ndarray | None, t2_grid_ms, b1_grid) -> "Projector":
        water = np.asarray(water, dtype=float)
        atoms = water.reshape(-1, water.shape[-1])
        if fat is not None:
            atoms = np.concatenate([atoms, np.asarray(fat, dtype=float)])
        _, s, vt = np.linalg.svd(atoms, full_matrices=False)
        energy = np.cumsum(s ** 2) / np.sum(s ** 2)
        k = int(min(np.searchsorted(energy, 1 - 1e-9) + 1, vt.shape[0]))
        basis = vt[:k].T
        w = water @ basis
        w_norm = np.linalg.norm(w, axis=-1)
        if fat is None:
            u, u_norm, g = w / w_norm[..., None], w_norm, np.zeros_like(w_norm)
            f = f_hat = f_norm = None
        else:
            f = np.asarray(fat, dtype=float) @ basis
            f_norm = np.linalg.norm(f, axis=-1)
            f_hat = f / f_norm[:, None]
            g = np.einsum("btk,bk->bt", w, f_hat)
            w_perp = w - g[..., None] * f_hat[:, None, :]
            u_norm = np.maximum(np.linalg.norm(w_perp, axis=-1), 1e-12)
            u = w_perp / u_norm[..., None]
        f32 = lambda a: None if a is None else np.ascontiguousarray(a, dtype=np.float32)
        return cls(f32(basis), np.asarray(t2_grid_ms, float), np.asarray(b1_grid, float), f32(w), f32(f),
                   f32(f_hat), f32(f_norm), f32(u), f32(u_norm), f32(g), f32(w_norm))

    @property
    def has_fat(self) -> bool:
        return self.f is not None

    def compress(self, signals: np.ndarray) -> np.ndarray:
        return np.asarray(signals, dtype=np.float32) @ self.basis


def _energy(cf, cu, u_norm, g, f_norm, w_norm):
    """Explained energy with non-negative water and fat amplitudes (arrays broadcast)."""
    if cf is None:
        return np.square(np.maximum(cu, 0))
    water_amp = cu / u_norm
    fat_amp = cf - water_amp * g            # times |f|, sign is what matters
    both = (water_amp >= 0) & (fat_amp >= 0)
    water_only = np.square(np.maximum((cu * u_norm + g * cf) / w_norm, 0))
    fat_only = np.square(np.maximum(cf, 0))
    return np.where(both, cf * cf + cu * cu, np.maximum(water_only, fat_only))


def _window_starts(centre, step, size):
    half = step
    width = 2 * half + 1
    if size <= width:
        return np.zeros_like(centre), size
    return np.clip(centre - half, 0, size - width), width


def fit_compressed(proj: Projector, y: np.ndarray, chunk: int = 32768):
    """Best grid atom per voxel and parabolic offsets. `y` is (n, K) compressed, normalised.

    Returns b_index, t_index (ints), b_offset, t_offset (in grid steps, |.| <= 0.5) and the
    explained energy at the best grid atom.
    """
    n = y.shape[0]
    n_b, n_t = proj.u.shape[:2]
    cb_idx = np.arange(0, n_b, COARSE_B1_STEP) if n_b > 1 else np.zeros(1, int)
    if n_b > 1 and cb_idx[-1] != n_b - 1:
        cb_idx = np.append(cb_idx, n_b - 1)
    ct_idx = np.arange(0, n_t, COARSE_T2_STEP)
    if ct_idx[-1] != n_t - 1:
        ct_idx = np.append(ct_idx, n_t - 1)
    u_coarse = proj.u[np.ix_(cb_idx, ct_idx)].reshape(-1, y.shape[1]).T      # (K, Bc*Tc)
    coarse_cell = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        yc = y[start:start + chunk]
        score = np.maximum(yc @ u_coarse, 0)
        np.square(score, out=score)
        if proj.has_fat:
            cf = yc @ proj.f_hat[cb_idx].T                                        # (m, Bc)
            score = score.reshape(len(yc), len(cb_idx), len(ct_idx))
            score += np.square(cf)[:, :, None]
            score = score.reshape(len(yc), -1)
        coarse_cell[start:start + chunk] = np.argmax(score, axis=1)
    return _fine_search(proj, y, coarse_cell, cb_idx, ct_idx)


def _fine_search(proj, y, coarse_cell, cb_idx, ct_idx, max_recentre: int = 4):
    """Full-grid search in a window around each voxel's coarse optimum.

    A voxel whose best atom lies on its window's edge (but not on the grid's) is searched
    again around that atom, so a valley that runs diagonally in (B1, T2) is followed.
    """
    n = y.shape[0]
    n_b, n_t = proj.u.shape[:2]
    res = {"b": np.empty(n, np.int64), "t": np.empty(n, np.int64), "b_off": np.zeros(n, np.float32),
           "t_off": np.zeros(n, np.float32), "energy": np.empty(n, np.float32),
           "edge": np.zeros(n, bool)}
    centre_b = cb_idx[coarse_cell // len(ct_idx)]
    centre_t = ct_idx[coarse_cell % len(ct_idx)]
    half_b = COARSE_B1_STEP if n_b > 1 else 0
    todo = np.arange(n)
    for _ in range(max_recentre + 1):
        _window_pass(proj, y, todo, centre_b[todo] if _ else centre_b, centre_t[todo] if _ else centre_t,
                     half_b, COARSE_T2_STEP, res)
        todo = todo[res["edge"][todo]]
        if todo.size == 0:
            break
        centre_b = np.zeros(n, np.int64)
        centre_t = np.zeros(n, np.int64)
        centre_b[todo], centre_t[todo] = res["b"][todo], res["t"][todo]
    return res["b"], res["t"], res["b_off"], res["t_off"], res["energy"]


def _window_pass(proj, y, voxels, centre_b, centre_t, half_b, half_t, res):
    n_b, n_t = proj.u.shape[:2]
    cell = centre_b * n_t + centre_t
    order = np.argsort(cell, kind="stable")
    cells, starts = np.unique(cell[order], return_index=True)
    ends = np.append(starts[1:], len(voxels))
    for c, s, e in zip(cells, starts, ends):
        idx = voxels[order[s:e]]
        yc = y[idx]
        b0, wb = _window_starts(np.int64(c // n_t), half_b, n_b)
        t0, wt = _window_starts(np.int64(c % n_t), half_t, n_t)
        bs, ts = slice(int(b0), int(b0) + wb), slice(int(t0), int(t0) + wt)
        u = proj.u[bs, ts]                                                     # (wb, wt, K)
        cu = (yc @ u.reshape(-1, u.shape[-1]).T).reshape(len(idx), wb, wt)
        cf = None
        if proj.has_fat:
            cf = (yc @ proj.f_hat[bs].T)[:, :, None]
        score = _energy(cf, cu, proj.u_norm[bs, ts], proj.g[bs, ts],
                        None if cf is None else proj.f_norm[bs, None], proj.w_norm[bs, ts])
        flat = np.argmax(score.reshape(len(idx), -1), axis=1)
        bi, ti = np.divmod(flat, wt)
        rows = np.arange(len(idx))
        res["energy"][idx] = score[rows, bi, ti]
        res["t_off"][idx] = _parabola(score, rows, bi, ti, axis=2)
        if wb > 1:
            res["b_off"][idx] = _parabola(score, rows, bi, ti, axis=1)
            _quadratic_vertex(score, rows, bi, ti, res, idx)
        res["b"][idx] = b0 + bi
        res["t"][idx] = t0 + ti
        on_edge = ((ti == 0) & (t0 > 0)) | ((ti == wt - 1) & (t0 + wt < n_t))
        if wb > 1:
            on_edge |= ((bi == 0) & (b0 > 0)) | ((bi == wb - 1) & (b0 + wb < n_b))
        res["edge"][idx] = on_edge


_QX, _QY = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")   # (b, t) offsets
_QUAD_PINV = np.linalg.pinv(np.stack([np.ones(9), _QX.ravel(), _QY.ravel(), _QX.ravel() ** 2,
                                      _QY.ravel() ** 2, (_QX * _QY).ravel()], axis=1)).astype(np.float32)


def _quadratic_vertex(score, rows, bi, ti, res, idx):
    """Joint (B1, T2) vertex of a quadratic through the 3x3 scores around the best atom.

    B1 and T2 trade off along a tilted valley at low B1; two separate parabolas would miss
    its bottom, the joint quadratic follows it. Used where the 3x3 block is inside the window
    and the quadratic has a maximum within one step; elsewhere the 1-D parabolas stay.
    """
    wb, wt = score.shape[1:]
    inner = (bi > 0) & (bi < wb - 1) & (ti > 0) & (ti < wt - 1)
    if not inner.any():
        return
    r, b, t = rows[inner], bi[inner], ti[inner]
    block = np.stack([score[r, b + db, t + dt] for db in (-1, 0, 1) for dt in (-1, 0, 1)], axis=1)
    c = block @ _QUAD_PINV.T
    hbb, htt, hbt = 2 * c[:, 3], 2 * c[:, 4], c[:, 5]
    det = hbb * htt - hbt * hbt
    ok = (hbb < 0) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        db_ = (-c[:, 1] * htt + c[:, 2] * hbt) / det
        dt_ = (-c[:, 2] * hbb + c[:, 1] * hbt) / det
    ok &= (np.abs(db_) <= 1) & (np.abs(dt_) <= 1)
    target = idx[inner][ok]
    res["b_off"][target] = db_[ok]
    res["t_off"][target] = dt_[ok]


def _parabola(score, rows, bi, ti, axis):
    """Vertex offset (grid steps) of the parabola through the best score and its two neighbours."""
    size = score.shape[axis]
    centre = ti if axis == 2 else bi
    inner = (centre > 0) & (centre < size - 1)
    lo = np.clip(centre - 1, 0, size - 1)
    hi = np.clip(centre + 1, 0, size - 1)
    if axis == 2:
        s_lo, s0, s_hi = score[rows, bi, lo], score[rows, bi, ti], score[rows, bi, hi]
    else:
        s_lo, s0, s_hi = score[rows, lo, ti], score[rows, bi, ti], score[rows, hi, ti]
    curvature = s_lo - 2 * s0 + s_hi
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(inner & (curvature < 0), 0.5 * (s_lo - s_hi) / curvature, 0.0)
    return np.clip(np.nan_to_num(offset), -0.5, 0.5).astype(np.float32)


def amplitudes(proj: Projector, y: np.ndarray, b: np.ndarray, t: np.ndarray):
    """Non-negative water and fat amplitudes at atoms (b, t) for compressed voxels y (n, K)."""
    u = proj.u[b, t]
    cu = np.einsum("nk,nk->n", y, u)
    if not proj.has_fat:
        water = np.maximum(cu, 0) / proj.w_norm[b, t]
        return water, np.zeros_like(water)
    cf = np.einsum("nk,nk->n", y, proj.f_hat[b])
    un, g, fn, wn = proj.u_norm[b, t], proj.g[b, t], proj.f_norm[b], proj.w_norm[b, t]
    water = cu / un
    fat_along = cf - water * g
    both = (water >= 0) & (fat_along >= 0)
    water_only = np.maximum((cu * un + g * cf) / wn, 0) / wn
    fat_only = np.maximum(cf, 0) / fn
    use_water = water_only * wn >= np.maximum(cf, 0)
    water_out = np.where(both, water, np.where(use_water, water_only, 0.0))
    fat_out = np.where(both, fat_along / fn, np.where(use_water, 0.0, fat_only))
    return water_out.astype(np.float32), fat_out.astype(np.float32)


def t2_crlb(proj: Projector, b, t, water, fat, sigma, fit_b1: bool = True):
    """Cramer-Rao bound (same unit as the T2 grid) of T2 given per-echo noise `sigma` (n,).

    Jacobian columns: water train, fat train, a * dw/dlogT2, a * dw/dB1 + b * df/dB1; the
    bound for T2 is sigma / |component of dS/dT2 orthogonal to the other columns|.
    """
    n_b, n_t = proj.w.shape[:2]
    t_lo, t_hi = np.clip(t - 1, 0, n_t - 1), np.clip(t + 1, 0, n_t - 1)
    dlog = np.log(proj.t2_grid_ms[t_hi] / proj.t2_grid_ms[t_lo])[:, None]
    t2 = proj.t2_grid_ms[t][:, None]
    d_t2 = water[:, None] * (proj.w[b, t_hi] - proj.w[b, t_lo]) / (dlog * t2)
    others = [proj.w[b, t]]
    if proj.has_fat:
        others.append(proj.f[b])
    if fit_b1 and n_b > 1:
        b_lo, b_hi = np.clip(b - 1, 0, n_b - 1), np.clip(b + 1, 0, n_b - 1)
        db = (proj.b1_grid[b_hi] - proj.b1_grid[b_lo])[:, None]
        d_b1 = water[:, None] * (proj.w[b_hi, t] - proj.w[b_lo, t]) / db
        if proj.has_fat:
            d_b1 = d_b1 + fat[:, None] * (proj.f[b_hi] - proj.f[b_lo]) / db
        others.append(d_b1)
    q = []
    for col in others:   # Gram-Schmidt over the nuisance columns
        v = col.astype(np.float64)
        for qi in q:
            v = v - np.einsum("nk,nk->n", v, qi)[:, None] * qi
        q.append(v / np.maximum(np.linalg.norm(v, axis=1), 1e-12)[:, None])
    v = d_t2.astype(np.float64)
    for qi in q:
        v = v - np.einsum("nk,nk->n", v, qi)[:, None] * qi
    with np.errstate(divide="ignore"):
        return (sigma / np.linalg.norm(v, axis=1)).astype(np.float32)
