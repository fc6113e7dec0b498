"""Where the dictionary fit runs: numpy on the CPU, or torch on a CUDA GPU when one is present."""
from __future__ import annotations

import os
import sys

from ...errors import InputError

DEVICES = ("auto", "cpu", "cuda", "torch-cpu")


def resolve_device(device: str | None) -> str:
    """"auto": "cuda" when torch sees a CUDA GPU, else "cpu" (numpy). "torch-cpu" runs the torch
    path on the CPU (used to check it against numpy); "cuda" without a GPU is an error."""
    device = (device or "auto").strip().lower()
    if device not in DEVICES:
        raise InputError("--device", f"expected one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise InputError("--device", "cuda requested but torch sees no CUDA GPU")
    return device


def cuda_available() -> bool:
    # On Linux without the NVIDIA driver there is no CUDA device: answer without importing
    # torch, which takes seconds and ~150 MB that a CPU-only fit does not need.
    if sys.platform.startswith("linux") and "torch" not in sys.modules \
            and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
