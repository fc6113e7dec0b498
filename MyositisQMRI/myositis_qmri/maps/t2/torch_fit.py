"""The dictionary search of `projection` in torch, for a CUDA GPU (or torch on the CPU, for tests).

The same coarse-to-fine search as `projection.fit_compressed` and the same fixed-B1 row fit as
`projection.fit_fixed_b1`, step for step in float32, so the chosen atoms match numpy's except
at exact float ties; everything per voxel after the search (amplitudes, maps, Cramer-Rao
bound) stays in numpy. Projector tables move to the device once and are cached on it.
"""
from __future__ import annotations

import numpy as np
import torch

from . import projection as P

CHUNK = {"cuda": 262144, "cpu": 8192}   # voxels per search call


def fit_compressed_torch(proj: P.Projector, y: np.ndarray, device: str):
    """(b, t, b_off, t_off, energy) as numpy arrays, like `projection.fit_compressed`."""
    dev = _device(device)
    tables = _device_tables(proj, dev)
    outs = []
    step = CHUNK.get(dev.type, 8192)
    with torch.no_grad():
        for start in range(0, y.shape[0], step):
            yt = torch.from_numpy(np.ascontiguousarray(y[start:start + step], dtype=np.float32)).to(dev)
            outs.append([a.cpu().numpy() for a in _search(tables, yt)])
    return tuple(np.concatenate(parts) for parts in zip(*outs))


def fit_fixed_b1_torch(proj: P.Projector, y: np.ndarray, b1_index: np.ndarray, device: str):
    """Like `projection.fit_fixed_b1`, on the device."""
    dev = _device(device)
    tables = _device_tables(proj, dev)
    n_b, n_t, _ = proj.u.shape
    index = torch.from_numpy(np.asarray(b1_index, dtype=np.float32)).to(dev)
    lo = torch.clamp(torch.floor(index).long(), 0, n_b - 1)
    hi = torch.clamp(lo + 1, max=n_b - 1)
    weight = index - lo.float()
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(dev)
    step = CHUNK.get(dev.type, 8192) // 8
    tau, energy = torch.empty_like(index), torch.empty_like(index)
    with torch.no_grad():
        for start in range(0, y.shape[0], step):
            part = slice(start, start + step)
            tau_lo, e_lo = _row_fit(tables, yt[part], lo[part])
            tau_hi, e_hi = _row_fit(tables, yt[part], hi[part])
            w = weight[part]
            tau[part] = ((1 - w) * tau_lo + w * tau_hi).float()
            energy[part] = ((1 - w) * e_lo + w * e_hi).float()
    b = torch.where(weight >= 0.5, hi, lo)
    t = torch.clamp(torch.round(tau).long(), 0, n_t - 1)
    return (b.cpu().numpy(), t.cpu().numpy(), (index - b.float()).cpu().numpy(),
            (tau - t.float()).cpu().numpy(), energy.cpu().numpy())


def _device(device: str) -> torch.device:
    return torch.device("cpu" if device == "torch-cpu" else device)


def _device_tables(proj: P.Projector, dev: torch.device) -> dict:
    cache = proj.__dict__.setdefault("_torch_tables", {})
    key = str(dev)
    if key not in cache:
        numpy_tables = P._tables(proj)
        to = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        n_b, n_t, k = proj.u.shape
        cache[key] = {
            "n_b": n_b, "n_t": n_t, "has_fat": proj.f_hat is not None,
            "u": to(numpy_tables["u"]), "u_norm": to(numpy_tables["u_norm"]), "g": to(numpy_tables["g"]),
            "w_norm": to(numpy_tables["w_norm"]), "cb": to(numpy_tables["cb"]), "ct": to(numpy_tables["ct"]),
            "u_coarse_t": to(numpy_tables["u_coarse_t"]), "f_hat_t": to(numpy_tables["f_hat_t"]),
            "coarse_t": to(numpy_tables.get("coarse_t")), "coarse_fat_sign": to(numpy_tables.get("coarse_fat_sign")),
            "quad_pinv": to(P._QUAD_PINV),
            "u64": to(numpy_tables["u64"]), "u_norm64": to(numpy_tables["u_norm64"]),
            "g64": to(numpy_tables["g64"]), "w_norm64": to(numpy_tables["w_norm64"]),
            "f_hat_t64": to(numpy_tables["f_hat_t64"]),
        }
    return cache[key]


def _energy(cf, cu, u_norm, g, w_norm):
    both = (cu >= 0) & (cf * u_norm >= cu * g)
    water_only = torch.square(torch.clamp((cu * u_norm + g * cf) / w_norm, min=0))
    fat_only = torch.square(torch.clamp(cf, min=0))
    return torch.where(both, cf * cf + cu * cu, torch.maximum(water_only, fat_only))


def _coarse_best(tab, y, cf_all):
    m = y.shape[0]
    cb, ct = tab["cb"], tab["ct"]
    score = torch.square(torch.clamp(y @ tab["u_coarse_t"], min=0))
    if cf_all is None:
        return torch.argmax(score, dim=1)
    cf = cf_all[:, cb]
    score = (score.reshape(m, cb.numel(), ct.numel()) + torch.square(cf)[:, :, None]).reshape(m, -1)
    best = torch.argmax(score, dim=1)
    negative = torch.einsum("mk,mk->m", y, tab["coarse_fat_sign"][best]) < 0
    rows = torch.nonzero(negative).flatten()
    if rows.numel():
        n = tab["coarse_t"].shape[1] // 3
        prod = y[rows] @ tab["coarse_t"]
        cu, v, cw = prod[:, :n], prod[:, n:2 * n], prod[:, 2 * n:]
        both = (torch.square(torch.clamp(cu, min=0)).reshape(rows.numel(), cb.numel(), -1)
                + torch.square(torch.clamp(cf[rows], min=0))[:, :, None]).reshape(rows.numel(), n)
        energy = torch.where(v < 0, torch.square(torch.clamp(cw, min=0)), both)
        best[rows] = torch.argmax(energy, dim=1)
    return best


def _search(tab, y):
    m, dev = y.shape[0], y.device
    cb, ct = tab["cb"], tab["ct"]
    cf_all = None if tab["f_hat_t"] is None else y @ tab["f_hat_t"]
    best = _coarse_best(tab, y, cf_all)
    b, t = cb[best // ct.numel()].clone(), ct[best % ct.numel()].clone()
    b_off = torch.zeros(m, dtype=torch.float32, device=dev)
    t_off = torch.zeros_like(b_off)
    energy = torch.zeros_like(b_off)
    step_b, step_t = P.COARSE_B1_STEP, P.COARSE_T2_STEP
    while step_b > 1 or step_t > 1:
        step_b, step_t = max(step_b // 2, 1), max(step_t // 2, 1)
        final = step_b == 1 and step_t == 1
        if final:   # float64 for the sub-grid vertex, as in numpy
            y = y.double()
            cf_all = None if cf_all is None else y @ tab["f_hat_t64"]
        todo = torch.arange(m, device=dev)
        for _ in range(6 if final else 3):
            bi, ti, b0, t0, win, edge = _window(tab, y, cf_all, todo, b[todo], t[todo], step_b, step_t,
                                                precise=final)
            b[todo], t[todo] = b0 + bi * step_b, t0 + ti * step_t
            if final:
                rows = torch.arange(todo.numel(), device=dev)
                energy[todo] = win[rows, bi, ti].float()
                t_off[todo] = _parabola(win, rows, bi, ti, axis=2).float()
                if win.shape[1] > 1:
                    b_off[todo] = _parabola(win, rows, bi, ti, axis=1).float()
                    _quadratic_vertex(tab, win, rows, bi, ti, b_off, t_off, todo)
            todo = todo[edge]
            if todo.numel() == 0:
                break
    return b, t, b_off, t_off, energy


def _origin(centre, step, half, size):
    width = min(2 * half + 1, (size - 1) // step + 1)
    return torch.clamp(centre - half * step, 0, size - 1 - (width - 1) * step), width


def _window(tab, y, cf_all, voxels, centre_b, centre_t, step_b, step_t, half: int = 1, precise: bool = False):
    n_b, n_t = tab["n_b"], tab["n_t"]
    m, dev = voxels.numel(), y.device
    b0, wb = _origin(centre_b, step_b, half, n_b)
    t0, wt = _origin(centre_t, step_t, half, n_t)
    b_idx = b0[:, None] + step_b * torch.arange(wb, device=dev)[None, :]
    t_idx = t0[:, None] + step_t * torch.arange(wt, device=dev)[None, :]
    atoms = (b_idx[:, :, None] * n_t + t_idx[:, None, :]).reshape(m, -1)
    yv = y[voxels]
    x = "64" if precise else ""
    cu = torch.einsum("mak,mk->ma", tab["u" + x][atoms], yv)
    if cf_all is None:
        score = torch.square(torch.clamp(cu, min=0))
    else:
        cf = torch.repeat_interleave(cf_all[voxels[:, None], b_idx], wt, dim=1)
        score = _energy(cf, cu, tab["u_norm" + x][atoms], tab["g" + x][atoms], tab["w_norm" + x][atoms])
    score = score.reshape(m, wb, wt)
    flat = torch.argmax(score.reshape(m, -1), dim=1)
    bi, ti = flat // wt, flat % wt
    edge = ((ti == 0) & (t0 > 0)) | ((ti == wt - 1) & (t0 + (wt - 1) * step_t < n_t - 1))
    if wb > 1:
        edge |= ((bi == 0) & (b0 > 0)) | ((bi == wb - 1) & (b0 + (wb - 1) * step_b < n_b - 1))
    return bi, ti, b0, t0, score, edge


def _parabola(score, rows, bi, ti, axis):
    size = score.shape[axis]
    centre = ti if axis == 2 else bi
    inner = (centre > 0) & (centre < size - 1)
    lo = torch.clamp(centre - 1, 0, size - 1)
    hi = torch.clamp(centre + 1, 0, size - 1)
    if axis == 2:
        s_lo, s0, s_hi = score[rows, bi, lo], score[rows, bi, ti], score[rows, bi, hi]
    else:
        s_lo, s0, s_hi = score[rows, lo, ti], score[rows, bi, ti], score[rows, hi, ti]
    curvature = s_lo - 2 * s0 + s_hi
    ok = inner & (curvature < 0)
    offset = torch.where(ok, 0.5 * (s_lo - s_hi) / torch.where(ok, curvature, torch.ones_like(curvature)),
                         torch.zeros_like(curvature))
    return torch.clamp(torch.nan_to_num(offset), -0.5, 0.5)


def _quadratic_vertex(tab, score, rows, bi, ti, b_off, t_off, idx):
    wb, wt = score.shape[1:]
    inner = (bi > 0) & (bi < wb - 1) & (ti > 0) & (ti < wt - 1)
    if not bool(inner.any()):
        return
    r, b, t = rows[inner], bi[inner], ti[inner]
    block = torch.stack([score[r, b + db, t + dt] for db in (-1, 0, 1) for dt in (-1, 0, 1)], dim=1)
    c = block @ tab["quad_pinv"].T
    hbb, htt, hbt = 2 * c[:, 3], 2 * c[:, 4], c[:, 5]
    det = hbb * htt - hbt * hbt
    db_ = (-c[:, 1] * htt + c[:, 2] * hbt) / det
    dt_ = (-c[:, 2] * hbb + c[:, 1] * hbt) / det
    ok = (hbb < 0) & (det > 0) & (torch.abs(db_) <= 1) & (torch.abs(dt_) <= 1)
    target = idx[inner][ok]
    b_off[target] = db_[ok].float()
    t_off[target] = dt_[ok].float()


def _row_fit(tab, y, rows):
    m, n_t = y.shape[0], tab["n_t"]
    best = torch.argmax(_row_scores(tab, y, rows[:, None] * n_t + torch.arange(n_t, device=y.device)[None, :], ""),
                        dim=1)
    near = torch.clamp(best[:, None] + torch.arange(-1, 2, device=y.device)[None, :], 0, n_t - 1)
    score = _row_scores(tab, y.double(), rows[:, None] * n_t + near, "64")
    r = torch.arange(m, device=y.device)
    edge = (best == 0) | (best == n_t - 1)
    centre = torch.where(best == 0, 0, torch.where(best == n_t - 1, 2, 1))
    offset = _parabola(score[:, None, :], r, torch.zeros_like(best), centre, axis=2)
    offset = torch.where(edge, torch.zeros_like(offset), offset)
    return best.double() + offset, score[r, centre]


def _row_scores(tab, y, atoms, x):
    cu = torch.einsum("mak,mk->ma", tab["u" + x][atoms], y)
    if not tab["has_fat"]:
        return torch.square(torch.clamp(cu, min=0))
    rows = atoms[:, 0] // tab["n_t"]
    cf = torch.einsum("mk,mk->m", tab["f_hat_t" + x].T[rows], y)[:, None]
    return _energy(cf.expand_as(cu), cu, tab["u_norm" + x][atoms], tab["g" + x][atoms], tab["w_norm" + x][atoms])
