"""The dictionary search of `projection` on a torch device: a CUDA GPU (or the CPU, for tests).

The search itself is `projection`'s, run on torch tensors through `arrays.TorchNamespace`, so
the chosen atoms match numpy's except at float ties (the float32 products may round
differently); everything per voxel after the search (amplitudes, maps, Cramer-Rao bound) stays
in numpy. Projector tables move to the device once and are cached on the projector.
"""
from __future__ import annotations

import numpy as np

from . import projection as P
from .arrays import TorchNamespace

CHUNK = {"cuda": 262144, "cpu": 8192}   # voxels per search call


def fit_compressed_torch(proj: P.Projector, y: np.ndarray, device: str):
    """(b, t, b_off, t_off, energy) as numpy arrays, like `projection.fit_compressed`."""
    xp = _namespace(device)
    return P.fit_compressed(proj, y, CHUNK.get(xp.device.type, 8192), xp)


def fit_fixed_b1_torch(proj: P.Projector, y: np.ndarray, b1_index: np.ndarray, device: str):
    """Like `projection.fit_fixed_b1`, on the device."""
    xp = _namespace(device)
    return P.fit_fixed_b1(proj, y, b1_index, CHUNK.get(xp.device.type, 8192) // 8, xp)


def _namespace(device: str) -> TorchNamespace:
    return TorchNamespace("cpu" if device == "torch-cpu" else device)
