"""Variable-projection dictionary fit of echo trains: water (+ fat) amplitudes solved linearly.

For each dictionary atom (B1, T2w) the non-negative amplitudes of the water train w and the
fat train f that best explain a voxel follow in closed form from two dot products: with
f^ = f/|f| and u = the unit part of w orthogonal to f, the explained energy is
c_f^2 + c_u^2 (c = dot products with the voxel), or the better single-component fit when a
non-negative amplitude would be violated. Atoms are compressed to the few SVD directions
that keep every atom (see MAX_ATOM_RESIDUAL), so the coarse search over all voxels is one thin
float32 matrix product. The search then narrows in 3x3 windows at halving grid steps down to
the full grid (windows gathered per voxel by vectorised indexing, re-centred when the best atom
lies on an edge), then refines off the grid with a joint quadratic in (B1, log T2).

The search is written once against an array namespace `xp` (see `arrays`): numpy here, torch
tensors on a GPU through `torch_fit`; everything per voxel after the search stays in numpy.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from .arrays import NUMPY

MAX_ATOM_RESIDUAL = 0.003  # relative norm of an atom lost by the subspace compression
COARSE_B1_STEP = 8   # coarse grid: every 8th B1 (0.08) and every 8th T2 (17 %); then halving
COARSE_T2_STEP = 8   # steps with 5x5 windows down to the full grid


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
        # Rank: the fewest SVD directions that keep every (unit-norm) atom to within
        # MAX_ATOM_RESIDUAL of itself; the rest is far below any echo noise, and the
        # matrix products shrink with it.
        unit = atoms / np.maximum(np.linalg.norm(atoms, axis=1, keepdims=True), 1e-30)
        _, _, vt = np.linalg.svd(unit, full_matrices=False)
        k = vt.shape[0]
        for rank in range(1, vt.shape[0] + 1):
            kept = unit @ vt[:rank].T
            if np.max(1.0 - np.einsum("ak,ak->a", kept, kept)) < MAX_ATOM_RESIDUAL ** 2:
                k = rank
                break
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


def fit_compressed(proj: Projector, y: np.ndarray, chunk: int = 8192, xp=NUMPY):
    """Best grid atom per voxel and sub-grid offsets. `y` is (n, K) compressed, normalised.

    Returns b_index, t_index (ints), b_offset, t_offset (in grid steps, |.| <= 1) and the
    explained energy at the best grid atom, as numpy arrays. Chunks keep the working arrays in
    cache (or, on a GPU, bound its memory); `xp` is where the search runs (see `arrays`).
    """
    n = y.shape[0]
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.zeros(n, np.float32),
           np.zeros(n, np.float32), np.empty(n, np.float32))
    tables = _tables(proj, xp)

    for start in range(0, n, chunk):
        part = _fit_chunk(tables, xp.asarray(np.ascontiguousarray(y[start:start + chunk])), xp)
        for array, values in zip(out, part):
            array[start:start + chunk] = xp.to_numpy(values)
    return out


def map_chunks(function, n: int, chunk: int = 8192) -> None:
    """Call function(start, stop) over [0, n) in chunks, on one thread per core.

    BLAS is held to one thread meanwhile: the products are thin (K ~ 9), where multi-threaded
    BLAS mostly spins, and numpy releases the GIL in the heavy calls, so threads scale.
    """
    starts = range(0, n, chunk)
    work = lambda start: function(start, min(start + chunk, n))
    workers = min(fit_threads(), len(starts))
    with threadpool_limits(1):
        if workers <= 1:
            for start in starts:
                work(start)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(work, starts))


def fit_threads() -> int:
    """Worker threads for the fit: $MYOSITIS_QMRI_THREADS, else the CPUs this process may use."""
    env = os.environ.get("MYOSITIS_QMRI_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _tables(proj: Projector, xp=NUMPY) -> dict:
    """Flattened per-atom arrays and the coarse grid, computed once per projector and moved
    once to each array namespace (device) that asks for them."""
    cache = proj.__dict__.setdefault("_tables", {})
    if NUMPY.key not in cache:
        cache[NUMPY.key] = _host_tables(proj)
    if xp.key not in cache:
        cache[xp.key] = {name: xp.asarray(value) for name, value in cache[NUMPY.key].items()}
    return cache[xp.key]


def _host_tables(proj: Projector) -> dict:
    n_b, n_t, k = proj.u.shape
    cb = _coarse_indices(n_b, COARSE_B1_STEP)
    ct = _coarse_indices(n_t, COARSE_T2_STEP)
    tables = {
        "u": proj.u.reshape(-1, k), "u_norm": proj.u_norm.ravel(), "g": proj.g.ravel(),
        "w_norm": proj.w_norm.ravel(), "cb": cb, "ct": ct, "n_b": n_b, "n_t": n_t,
        "u_coarse_t": np.ascontiguousarray(proj.u[np.ix_(cb, ct)].reshape(-1, k).T),
        "f_hat_t": None if proj.f_hat is None else np.ascontiguousarray(proj.f_hat.T),
        # float64 copies for the final windows: the sub-grid vertex comes from small score
        # differences between neighbouring atoms, which float32 rounding would blur
        "u64": proj.u.reshape(-1, k).astype(np.float64), "u_norm64": proj.u_norm.ravel().astype(np.float64),
        "g64": proj.g.ravel().astype(np.float64), "w_norm64": proj.w_norm.ravel().astype(np.float64),
        "f_hat_t64": None if proj.f_hat is None else np.ascontiguousarray(proj.f_hat.T, dtype=np.float64),
        "quad_pinv": _QUAD_PINV, "quad_db": _QX.ravel().astype(np.int64), "quad_dt": _QY.ravel().astype(np.int64),
    }
    if proj.f_hat is not None:
        tables["coarse_t"], tables["coarse_fat_sign"] = _coarse_table(proj, cb, ct)
    return tables


def _coarse_best(y, cf_all, tables, xp):
    """Index of the best coarse atom per voxel under the non-negative amplitude constraint.

    The unconstrained two-atom energy cu+^2 + cf^2 is an upper bound of the constrained one,
    equal to it where the fat amplitude is >= 0. Its argmax is therefore exact wherever that
    atom's fat amplitude is >= 0; elsewhere (long-T2 water atoms paired with negative fat,
    which would send the window search into the wrong basin) the constrained energy is
    evaluated over all coarse atoms for just those voxels.
    """
    m = y.shape[0]
    cb, ct = tables["cb"], tables["ct"]
    score = xp.positive_square_(y @ tables["u_coarse_t"])                           # (m, Bc*Tc)
    if cf_all is None:
        return xp.argmax(score, 1)
    cf = cf_all[:, cb]
    score = score.reshape(m, len(cb), len(ct))
    score += xp.square(cf)[:, :, None]
    best = xp.argmax(score.reshape(m, -1), 1)
    sign_dirs = tables["coarse_fat_sign"]                                           # (Bc*Tc, K)
    negative_fat = xp.einsum("mk,mk->m", y, xp.take(sign_dirs, best)) < 0
    if negative_fat.any():
        rows = xp.flatnonzero(negative_fat)
        best[rows] = xp.argmax(_coarse_energy(y[rows], cf[rows], tables["coarse_t"], xp), 1)
    return best


def _coarse_table(proj: Projector, cb, ct):
    """Coarse-atom directions for _coarse_energy: (K, 3 * Bc * Tc) holding, per atom, u (water
    orthogonal to fat, unit), v (fat minus its part along water: y . v has the sign of the
    unconstrained fat amplitude) and w^ (unit water); and v alone, (Bc * Tc, K)."""
    k = proj.u.shape[-1]
    u = proj.u[np.ix_(cb, ct)].reshape(-1, k).astype(np.float64)
    w = proj.w[np.ix_(cb, ct)].reshape(-1, k).astype(np.float64)
    w_hat = w / np.linalg.norm(w, axis=1, keepdims=True)
    f_hat = np.repeat(proj.f_hat[cb].astype(np.float64), ct.size, axis=0)
    v = f_hat - np.einsum("ak,ak->a", f_hat, w_hat)[:, None] * w_hat
    table = np.ascontiguousarray(np.concatenate([u, v, w_hat]).T, dtype=np.float32)
    return table, np.ascontiguousarray(v, dtype=np.float32)


def _coarse_energy(y, cf, table, xp):
    """Constrained (non-negative amplitude) energy at the coarse atoms, (m, Bc*Tc).

    With two atoms the non-negative fit is both atoms where both unconstrained amplitudes are
    >= 0, water alone where the fat amplitude is negative, else fat alone (cu < 0): the
    energy is cu+^2 + cf+^2, or cw+^2 where y . v < 0.
    """
    m = y.shape[0]
    n = table.shape[1] // 3
    prod = y @ table
    cu, v, cw = prod[:, :n], prod[:, n:2 * n], prod[:, 2 * n:]
    cu = xp.positive_square_(cu).reshape(m, cf.shape[1], -1)
    cu += xp.square(xp.relu(cf))[:, :, None]
    cu = cu.reshape(m, n)
    return xp.where(v < 0, xp.positive_square_(cw), cu)


def _coarse_indices(size: int, step: int) -> np.ndarray:
    idx = np.arange(0, size, step)
    if idx[-1] != size - 1:
        idx = np.append(idx, size - 1)
    return idx


def _fit_chunk(tables, y, xp):
    """Coarse grid for all voxels, then 3x3 windows at halving steps down to the full grid."""
    m = y.shape[0]
    cb, ct = tables["cb"], tables["ct"]
    cf_all = None if tables["f_hat_t"] is None else y @ tables["f_hat_t"]          # (m, B)
    best = _coarse_best(y, cf_all, tables, xp)
    b, t = cb[best // len(ct)], ct[best % len(ct)]
    b_off, t_off, energy = xp.zeros(m, "float32"), xp.zeros(m, "float32"), xp.zeros(m, "float32")
    step_b, step_t = COARSE_B1_STEP, COARSE_T2_STEP
    while step_b > 1 or step_t > 1:
        step_b, step_t = max(step_b // 2, 1), max(step_t // 2, 1)
        final = step_b == 1 and step_t == 1
        if final:
            y = xp.as_float64(y)
            cf_all = None if cf_all is None else y @ tables["f_hat_t64"]
        todo = xp.arange(m)
        for _ in range(6 if final else 3):   # re-centre voxels whose best atom is on the window edge
            bi, ti, b0, t0, win, edge = _window(tables, y, cf_all, todo, b[todo], t[todo],
                                                step_b, step_t, xp, precise=final)
            b[todo], t[todo] = b0 + bi * step_b, t0 + ti * step_t
            if final:
                rows = xp.arange(len(todo))
                energy[todo] = xp.as_float32(win[rows, bi, ti])
                t_off[todo] = _parabola(win, rows, bi, ti, 2, xp)
                if win.shape[1] > 1:
                    b_off[todo] = _parabola(win, rows, bi, ti, 1, xp)
                    _quadratic_vertex(tables, win, rows, bi, ti, b_off, t_off, todo, xp)
            todo = todo[edge]
            if len(todo) == 0:
                break
    return b, t, b_off, t_off, energy


def _window(tables, y, cf_all, voxels, centre_b, centre_t, step_b, step_t, xp, half: int = 1,
            precise: bool = False):
    """Constrained energies on a (2*half+1)^2 window of atoms spaced (step_b, step_t) per voxel.

    The window is gathered from the flattened atom table by vectorised indexing. Returns the
    best window position (bi, ti), the window origin (b0, t0), the scores (m, wb, wt), and
    whether the best lies on a window edge that is not the grid edge.
    """
    n_b, n_t = tables["n_b"], tables["n_t"]
    m = len(voxels)
    b0, wb = _origin(centre_b, step_b, half, n_b, xp)
    t0, wt = _origin(centre_t, step_t, half, n_t, xp)
    b_idx = b0[:, None] + step_b * xp.arange(wb)[None, :]                          # (m, wb)
    t_idx = t0[:, None] + step_t * xp.arange(wt)[None, :]
    atoms = (b_idx[:, :, None] * n_t + t_idx[:, None, :]).reshape(m, -1)          # (m, wb*wt)
    yv = xp.take(y, voxels)
    suffix = "64" if precise else ""
    cu = xp.einsum("mak,mk->ma", xp.take(tables["u" + suffix], atoms), yv)
    if cf_all is None:
        score = xp.square(xp.relu(cu))
    else:
        cf = xp.take_flat(cf_all, voxels[:, None] * cf_all.shape[1] + b_idx)      # (m, wb)
        cf = xp.repeat(cf, wt)                                                     # (m, wb*wt)
        score = _energy(cf, cu, xp.take(tables["u_norm" + suffix], atoms), xp.take(tables["g" + suffix], atoms),
                        xp.take(tables["w_norm" + suffix], atoms), xp)
    score = score.reshape(m, wb, wt)
    bi, ti = xp.divmod(xp.argmax(score.reshape(m, -1), 1), wt)
    edge = ((ti == 0) & (t0 > 0)) | ((ti == wt - 1) & (t0 + (wt - 1) * step_t < n_t - 1))
    if wb > 1:
        edge |= ((bi == 0) & (b0 > 0)) | ((bi == wb - 1) & (b0 + (wb - 1) * step_b < n_b - 1))
    return bi, ti, b0, t0, score, edge


def _origin(centre, step, half, size, xp):
    """First index of a window of 2*half+1 points spaced `step`, kept inside [0, size)."""
    width = min(2 * half + 1, (size - 1) // step + 1)
    return xp.clip(centre - half * step, 0, size - 1 - (width - 1) * step), width


def _energy(cf, cu, u_norm, g, w_norm, xp=NUMPY):
    """Explained energy with non-negative water and fat amplitudes (arrays broadcast to cu's shape)."""
    both = (cu >= 0) & (cf * u_norm >= cu * g)      # water and fat amplitudes both >= 0
    water_only = xp.positive_square_((cu * u_norm + g * cf) / w_norm)
    fat_only = xp.square(xp.relu(cf))
    xp.maximum(water_only, fat_only, out=water_only)
    return xp.where(both, cf * cf + cu * cu, water_only)


_QX, _QY = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")   # (b, t) offsets
_QUAD_PINV = np.linalg.pinv(np.stack([np.ones(9), _QX.ravel(), _QY.ravel(), _QX.ravel() ** 2,
                                      _QY.ravel() ** 2, (_QX * _QY).ravel()], axis=1))


def _quadratic_vertex(tables, score, rows, bi, ti, b_off, t_off, idx, xp):
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
    block = score[r[:, None], b[:, None] + tables["quad_db"], t[:, None] + tables["quad_dt"]]   # (n, 9)
    c = block @ tables["quad_pinv"].T
    hbb, htt, hbt = 2 * c[:, 3], 2 * c[:, 4], c[:, 5]
    det = hbb * htt - hbt * hbt
    ok = (hbb < 0) & (det > 0)
    with xp.quiet():
        db_ = (-c[:, 1] * htt + c[:, 2] * hbt) / det
        dt_ = (-c[:, 2] * hbb + c[:, 1] * hbt) / det
    ok &= (abs(db_) <= 1) & (abs(dt_) <= 1)
    target = idx[inner][ok]
    b_off[target] = xp.as_float32(db_[ok])
    t_off[target] = xp.as_float32(dt_[ok])


def _parabola(score, rows, bi, ti, axis, xp):
    """Vertex offset (grid steps) of the parabola through the best score and its two neighbours."""
    size = score.shape[axis]
    centre = ti if axis == 2 else bi
    inner = (centre > 0) & (centre < size - 1)
    lo = xp.clip(centre - 1, 0, size - 1)
    hi = xp.clip(centre + 1, 0, size - 1)
    if axis == 2:
        s_lo, s0, s_hi = score[rows, bi, lo], score[rows, bi, ti], score[rows, bi, hi]
    else:
        s_lo, s0, s_hi = score[rows, lo, ti], score[rows, bi, ti], score[rows, hi, ti]
    curvature = s_lo - 2 * s0 + s_hi
    with xp.quiet():
        offset = xp.where(inner & (curvature < 0), 0.5 * (s_lo - s_hi) / curvature, 0.0)
    return xp.as_float32(xp.clip(xp.nan_to_num(offset), -0.5, 0.5))


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


def t2_precision(proj: Projector, b, t, water, fat, sigma, fit_b1: bool = True):
    """Cramer-Rao bound of T2 and the second-order bias of its estimate (both in ms), per voxel.

    Parameters: water and fat amplitudes, T2 and (when searched) B1; the Jacobian and the
    per-echo Hessians of the model come from central differences on the dictionary around
    atom (b, t). With F = J'J / sigma^2 the Fisher information, the bound is sqrt(F^-1)_T2, and
    Box's (1971) O(sigma^2) bias of a least-squares estimate is
    -(sigma^2 / 2) (J'J)^-1 J' d,  d_e = trace((J'J)^-1 H_e).
    The search is maximum likelihood, whose water T2 is skewed upwards where fat or B1 compete
    for the same decay (the bias grows with FF and T2); `fitting` subtracts this estimate.
    Where the fat amplitude sits on its bound (zero) it is not a free parameter, so the bias
    is that of the water-only model there; the bound keeps fat as a nuisance everywhere.
    sigma: per-echo noise (n,) in the units of the normalised trains.
    """
    diff = _dictionary_derivatives(proj, b, t, fit_b1)
    a_w, a_f = water.astype(np.float64)[:, None], fat.astype(np.float64)[:, None]
    crlb, bias = _box_terms(diff, a_w, a_f, sigma, proj.has_fat)
    if proj.has_fat:
        no_fat = fat <= 0
        if no_fat.any():
            water_only = {k: v[no_fat] for k, v in diff.items()}
            bias[no_fat] = _box_terms(water_only, a_w[no_fat], a_f[no_fat], sigma[no_fat], False)[1]
    with np.errstate(invalid="ignore"):
        return crlb.astype(np.float32), np.nan_to_num(bias).astype(np.float32)


def _box_terms(diff: dict, a_w, a_f, sigma, with_fat: bool):
    """(Cramer-Rao bound, Box bias) of T2 for the model with the given free parameters."""
    names = ["aw"] + (["af"] if with_fat else []) + ["t2"] + (["b1"] if "wB" in diff else [])
    fat_b1 = with_fat and "fB" in diff
    column = {"aw": diff["w"], "af": diff.get("f"), "t2": a_w * diff["wT"]}
    second = {("aw", "t2"): diff["wT"], ("t2", "t2"): a_w * diff["wTT"]}
    if "b1" in names:
        column["b1"] = a_w * diff["wB"] + (a_f * diff["fB"] if fat_b1 else 0.0)
        second.update({("aw", "b1"): diff["wB"], ("t2", "b1"): a_w * diff["wTB"],
                       ("b1", "b1"): a_w * diff["wBB"] + (a_f * diff["fBB"] if fat_b1 else 0.0)})
        if fat_b1:
            second[("af", "b1")] = diff["fB"]
    jac = np.stack([column[p] for p in names], axis=2)               # (n, K, P)
    info = np.einsum("nkp,nkq->npq", jac, jac)
    inv = np.linalg.pinv(info)
    index = {p: i for i, p in enumerate(names)}
    d = sum((1.0 if p == q else 2.0) * inv[:, index[p], index[q], None] * h for (p, q), h in second.items())
    it = index["t2"]
    bias = -0.5 * np.square(sigma) * np.einsum("np,np->n", inv[:, it], np.einsum("nkp,nk->np", jac, d))
    crlb = sigma * np.sqrt(np.maximum(inv[:, it, it], 0))
    # no water (a fat-only voxel): the data say nothing about water T2, an unbounded spread
    undetermined = info[:, it, it] <= 1e-12 * np.maximum(np.trace(info, axis1=1, axis2=2), 1e-30)
    return np.where(undetermined, np.inf, crlb), np.where(undetermined, 0.0, bias)


def _dictionary_derivatives(proj: Projector, b, t, fit_b1: bool) -> dict:
    """Atoms and their first and second derivatives in T2 (per ms) and B1 at atoms (b, t), by
    central differences one grid step away (atoms on an edge use the next one inside)."""
    n_b, n_t = proj.w.shape[:2]
    # gather, then widen: only the atoms used are converted, not the whole dictionary per chunk
    w = lambda bi, ti: proj.w[bi, ti].astype(np.float64)   # noqa: E731
    f = lambda bi: proj.f[bi].astype(np.float64)           # noqa: E731
    out = {"w": w(b, t)}
    t = np.clip(t, 1, n_t - 2)
    grid = proj.t2_grid_ms
    h_up, h_down = (grid[t + 1] - grid[t])[:, None], (grid[t] - grid[t - 1])[:, None]
    out["wT"] = (w(b, t + 1) - w(b, t - 1)) / (h_up + h_down)
    out["wTT"] = 2 * (w(b, t + 1) / (h_up * (h_up + h_down)) - w(b, t) / (h_up * h_down)
                      + w(b, t - 1) / (h_down * (h_up + h_down)))
    if proj.has_fat:
        out["f"] = f(b)
    if fit_b1 and n_b > 2:
        b = np.clip(b, 1, n_b - 2)
        h = (proj.b1_grid[1] - proj.b1_grid[0])
        out["wB"] = (w(b + 1, t) - w(b - 1, t)) / (2 * h)
        out["wBB"] = (w(b + 1, t) - 2 * w(b, t) + w(b - 1, t)) / h ** 2
        out["wTB"] = (w(b + 1, t + 1) - w(b + 1, t - 1) - w(b - 1, t + 1) + w(b - 1, t - 1)) / (
            2 * h * (h_up + h_down))
        if proj.has_fat:
            out["fB"] = (f(b + 1) - f(b - 1)) / (2 * h)
            out["fBB"] = (f(b + 1) - 2 * f(b) + f(b - 1)) / h ** 2
    return out


def fit_fixed_b1(proj: Projector, y: np.ndarray, b1_index: np.ndarray, chunk: int = 2048, xp=NUMPY):
    """Best T2 per voxel with B1 fixed at a fractional grid index (n,), same outputs as
    `fit_compressed` (numpy arrays; the row search runs in `xp`).

    Each voxel is fitted over every T2 atom of the two B1 rows around its B1 (refined by a
    parabola on each row); the fractional T2 index and the energy are then interpolated
    linearly between the rows. The T2 grid is log-uniform, so the index is linear in log T2.
    """
    n = y.shape[0]
    n_b, n_t, k = proj.u.shape
    lo = np.clip(np.floor(b1_index).astype(np.int64), 0, n_b - 1)
    hi = np.minimum(lo + 1, n_b - 1)
    weight = (b1_index - lo).astype(np.float32)
    tau = np.empty(n, np.float32)
    energy = np.empty(n, np.float32)
    tables = _tables(proj, xp)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        y_part = xp.asarray(y[part])
        tau_lo, e_lo = map(xp.to_numpy, _row_fit(tables, y_part, xp.asarray(lo[part]), xp))
        tau_hi, e_hi = map(xp.to_numpy, _row_fit(tables, y_part, xp.asarray(hi[part]), xp))
        w = weight[part]
        tau[part] = (1 - w) * tau_lo + w * tau_hi
        energy[part] = (1 - w) * e_lo + w * e_hi
    b = np.where(weight >= 0.5, hi, lo)
    t = np.clip(np.rint(tau).astype(np.int64), 0, n_t - 1)
    return b, t, (b1_index - b).astype(np.float32), (tau - t).astype(np.float32), energy


def _row_fit(tables, y, rows, xp):
    """Fractional T2 index (parabola-refined) and energy of the best atom on each voxel's B1 row.

    The row is scanned in float32; the best atom and its two neighbours are rescored in float64
    for the parabola (see the float64 tables in `_tables`).
    """
    m, n_t = y.shape[0], tables["n_t"]
    best = xp.argmax(_row_scores(tables, y, rows[:, None] * n_t + xp.arange(n_t)[None, :], "", xp), 1)
    near = xp.clip(best[:, None] + xp.arange(-1, 2)[None, :], 0, n_t - 1)
    score = _row_scores(tables, xp.as_float64(y), rows[:, None] * n_t + near, "64", xp)   # (m, 3)
    r = xp.arange(m)
    centre = xp.where(best == 0, 0, xp.where(best == n_t - 1, 2, 1))
    offset = _parabola(score[:, None, :], r, xp.zeros(m, "int64"), centre, 2, xp)
    offset = xp.where((best == 0) | (best == n_t - 1), 0.0, offset)
    return xp.as_float64(best) + offset, score[r, centre]


def _row_scores(tables, y, atoms, suffix, xp):
    """Constrained energies of voxels y (m, K) at atoms (m, a) of the flattened table."""
    cu = xp.einsum("mak,mk->ma", xp.take(tables["u" + suffix], atoms), y)
    if tables["f_hat_t"] is None:
        return xp.square(xp.relu(cu))
    rows = atoms[:, 0] // tables["n_t"]
    cf = xp.einsum("mk,mk->m", xp.take(tables["f_hat_t" + suffix].T, rows), y)[:, None]
    return _energy(cf, cu, xp.take(tables["u_norm" + suffix], atoms), xp.take(tables["g" + suffix], atoms),
                   xp.take(tables["w_norm" + suffix], atoms), xp)
