"""Array namespaces for the dictionary search: numpy on the CPU, or torch on a device.

`projection`'s search is written once against an `xp` object. Functions spelled alike in numpy
and torch (where, square, einsum, clip, maximum, nan_to_num, ...) are the module's own, reached
through `xp.<name>`; the few spelled differently are methods here. The numpy namespace keeps
the fast numpy forms (np.take for gathers, in-place ufuncs), so the CPU path costs no more than
plain numpy code. torch is imported only when a torch namespace is made.
"""
from __future__ import annotations

import contextlib

import numpy as np


class NumpyNamespace:
    """numpy arrays on the host."""

    key = "numpy"

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np, name)

    def asarray(self, a):
        return a

    def to_numpy(self, a):
        return a

    def arange(self, *args):
        return np.arange(*args)

    def zeros(self, n: int, dtype: str):
        return np.zeros(n, dtype)

    def as_float32(self, a):
        return a.astype(np.float32)

    def as_float64(self, a):
        return a.astype(np.float64)

    def take(self, a, index):
        """a[index] along the first axis; np.take is several times faster than fancy indexing."""
        return np.take(a, index, axis=0)

    def take_flat(self, a, index):
        return np.take(a, index)

    def argmax(self, a, axis: int):
        return np.argmax(a, axis=axis)

    def repeat(self, a, count: int):
        """Each column repeated `count` times in place (a0 a0 a1 a1 ...)."""
        return np.repeat(a, count, axis=1)

    def divmod(self, a, n: int):
        return np.divmod(a, n)

    def relu(self, a):
        return np.maximum(a, 0)

    def positive_square_(self, a):
        """max(a, 0)^2 in place."""
        np.maximum(a, 0, out=a)
        return np.square(a, out=a)

    def flatnonzero(self, a):
        return np.flatnonzero(a)

    def quiet(self):
        """Division by zero and 0/0 are masked by the caller: no warnings."""
        return np.errstate(divide="ignore", invalid="ignore")


class TorchNamespace:
    """torch tensors on one device ("cpu", "cuda", "cuda:1", ...)."""

    def __init__(self, device: str):
        import torch
        self.torch = torch
        self.device = torch.device(device)
        self.key = f"torch:{self.device}"

    def __getattr__(self, name):
        if name.startswith("_") or name == "torch":
            raise AttributeError(name)
        return getattr(self.torch, name)

    def asarray(self, a):
        """numpy array to a tensor on the device; ints and None as they are."""
        if not isinstance(a, np.ndarray):
            return a
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def to_numpy(self, a):
        return a.cpu().numpy()

    def arange(self, *args):
        return self.torch.arange(*args, device=self.device)

    def zeros(self, n: int, dtype: str):
        return self.torch.zeros(n, dtype=getattr(self.torch, dtype), device=self.device)

    def as_float32(self, a):
        return a.float()

    def as_float64(self, a):
        return a.double()

    def take(self, a, index):
        return a[index]

    def take_flat(self, a, index):
        return a.reshape(-1)[index]

    def argmax(self, a, axis: int):
        return self.torch.argmax(a, dim=axis)

    def repeat(self, a, count: int):
        return self.torch.repeat_interleave(a, count, dim=1)

    def divmod(self, a, n: int):
        return a // n, a % n

    def relu(self, a):
        return self.torch.clamp(a, min=0)

    def positive_square_(self, a):
        return a.clamp_(min=0).square_()

    def flatnonzero(self, a):
        return self.torch.nonzero(a).flatten()

    def quiet(self):
        return contextlib.nullcontext()


NUMPY = NumpyNamespace()
