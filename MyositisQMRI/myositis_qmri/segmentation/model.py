"""The segmentation model file: safetensors weights plus a JSON header, and the network.

A model file is a `.safetensors` file whose metadata holds one key, `myositis_qmri`, with a
JSON header (format version, architecture, labels, orientation, spacing, normalisation,
provenance, metrics). Nothing else is accepted: pickled files (.pt/.pth/.ckpt) are refused,
so loading a model never runs code from the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..io.atomic import atomic_path
from .canonical import CANONICAL_ORIENTATION
from .labels import MUSCLES, N_MUSCLES

FORMAT = "myositis-qmri-segmentation"
FORMAT_VERSION = 1
HEADER_KEY = "myositis_qmri"
DEFAULT_MODEL_NAME = "thigh_muscles_2d"
MODEL_ENV = "MYOSITIS_QMRI_MODEL"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")

DEFAULT_ARCHITECTURE = {"name": "monai.UNet", "spatial_dims": 2, "in_channels": 1,
                        "out_channels": N_MUSCLES + 1, "channels": [24, 48, 96, 192, 384],
                        "strides": [2, 2, 2, 2], "num_res_units": 2}


def base_header(spacing_mm: float = 2.3, crop_px: int = 96) -> dict:
    """A header for a new one-leg model (the left leg is mirrored onto the right)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": dict(DEFAULT_ARCHITECTURE),
        "labels": {str(m.index): m.key for m in MUSCLES},
        "background": 0,
        "canonical_side": "right",
        "orientation": CANONICAL_ORIENTATION,
        "spacing_mm": [spacing_mm, spacing_mm],
        "crop_px": crop_px,
        "normalisation": "per-slice percentiles 0.5/99.5 -> 0/1, clipped to [-0.5, 1.5]",
        "model_version": 1,
        "provenance": {},
        "metrics": {},
    }


def build_network(architecture: dict):
    """The torch module an architecture entry describes (only known MONAI networks)."""
    from monai.networks.nets import UNet
    if architecture.get("name") != "monai.UNet":
        raise ModelFileError(None, f"unknown network architecture {architecture.get('name')!r}")
    return UNet(spatial_dims=int(architecture["spatial_dims"]), in_channels=int(architecture["in_channels"]),
                out_channels=int(architecture["out_channels"]), channels=tuple(architecture["channels"]),
                strides=tuple(architecture["strides"]), num_res_units=int(architecture["num_res_units"]))


# Label keys of earlier model files, read as today's: the adductor row was "adductor_magnus" before it
# was named for the group it covers (labels.py).
LEGACY_LABEL_KEYS = {"adductor_magnus": "adductors"}


def _check_header(header: dict, path) -> None:
    if header.get("format") != FORMAT:
        raise ModelFileError(path, f"header format is {header.get('format')!r}, expected {FORMAT!r}")
    if int(header.get("format_version", -1)) > FORMAT_VERSION:
        raise ModelFileError(path, f"model format version {header.get('format_version')} is newer than "
                                   f"this software reads ({FORMAT_VERSION})")
    expected = {str(m.index): m.key for m in MUSCLES}
    labels = {k: LEGACY_LABEL_KEYS.get(v, v) for k, v in (header.get("labels") or {}).items()}
    if labels != expected:
        raise ModelFileError(path, "header labels do not match this software's label schema")
    arch = header.get("architecture") or {}
    if int(arch.get("out_channels", -1)) != N_MUSCLES + 1:
        raise ModelFileError(path, f"network has {arch.get('out_channels')} outputs, expected {N_MUSCLES + 1}")
    for key in ("orientation", "spacing_mm", "crop_px", "normalisation"):
        if key not in header:
            raise ModelFileError(path, f"header lacks {key!r}")


def save_model(network, header: dict, path: str | Path) -> Path:
    """Write weights (safetensors) and header atomically."""
    from safetensors.torch import save_file
    path = Path(path)
    _check_header(header, path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    return path


def record_metrics(path: str | Path | None, name: str, result: dict) -> Path:
    """Store a benchmark result in a model file's header under metrics[name] (weights untouched,
    the file replaced atomically); None records into the shipped model."""
    path = Path(path) if path is not None else default_model_path()
    network, header = load_model(path)
    header.setdefault("metrics", {})[name] = result
    return save_model(network, header, path)


def read_header(path: str | Path, file_bytes: bytes | None = None) -> dict:
    """The JSON header of a model file (refusing anything that is not safetensors + header).

    file_bytes, the file's content already read, is checked instead of the file on disk.
    """
    path = _check_model_path(path)
    if file_bytes is None:
        with path.open("rb") as handle:
            head = handle.read(8)
    else:
        head = file_bytes[:8]
    if len(head) < 8 or head[:2] == b"\x80\x02" or head[:2] == b"PK":
        raise ModelFileError(path, "not a safetensors file (looks like a pickle or zip archive)")
    metadata = _safetensors_metadata(path, file_bytes)
    if HEADER_KEY not in metadata:
        raise ModelFileError(path, f"safetensors file has no {HEADER_KEY!r} JSON header")
    try:
        header = json.loads(metadata[HEADER_KEY])
    except ValueError as exc:
        raise ModelFileError(path, f"model header is not valid JSON ({exc})") from None
    _check_header(header, path)
    return header


def _check_model_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "model file not found")
    if path.suffix.lower() in PICKLE_SUFFIXES or path.suffix.lower() != ".safetensors":
        raise ModelFileError(path, "not a .safetensors model file (pickled PyTorch files are refused "
                                   "because loading them can run code)")
    return path


def _safetensors_metadata(path: Path, file_bytes: bytes | None) -> dict:
    """The string metadata of a safetensors file: an 8-byte little-endian length, then that much JSON."""
    from safetensors import safe_open
    try:
        if file_bytes is None:
            with safe_open(str(path), framework="pt") as handle:
                return handle.metadata() or {}
        length = int.from_bytes(file_bytes[:8], "little")
        if length > len(file_bytes) - 8:
            raise ValueError(f"header length {length} runs past the end of the file")
        return json.loads(file_bytes[8:8 + length]).get("__metadata__") or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(path, f"not a readable safetensors file ({exc})") from None


def read_model_bytes(path: str | Path) -> bytes:
    """A model file's content, read once; load_model(file_bytes=...) checks its header from them."""
    return _check_model_path(path).read_bytes()


def load_model(path: str | Path | None = None, device: str | None = None, file_bytes: bytes | None = None):
    """(network in eval mode, header) from a model file; None loads the shipped default.

    file_bytes, the file's content already read, gives both the header and the weights, so that
    a caller hashing the same bytes names exactly the model it ran.
    """
    from safetensors.torch import load, load_file
    path = Path(path) if path is not None else default_model_path()
    header = read_header(path, file_bytes)
    network = build_network(header["architecture"])
    tensors = load(file_bytes) if file_bytes is not None else load_file(str(path), device="cpu")
    expected = network.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise ModelFileError(path, "weights do not match the network the header describes")
    network.load_state_dict(tensors)
    network.eval()
    if device:
        network.to(device)
    return network, header


def model_identity(path: str | Path, file_bytes: bytes | None = None) -> dict:
    """The model file's name and sha256: which model made a segmentation, or started a training run.

    file_bytes, the file's content already read, is hashed instead of reading the file again.
    """
    content = file_bytes if file_bytes is not None else Path(path).read_bytes()
    return {"file": Path(path).name, "sha256": hashlib.sha256(content).hexdigest()}


def default_model_path() -> Path:
    """The shipped model: $MYOSITIS_QMRI_MODEL, the source tree, or the installed data files."""
    name = DEFAULT_MODEL_NAME + ".safetensors"
    candidates = []
    if os.environ.get(MODEL_ENV):
        candidates.append(Path(os.environ[MODEL_ENV]))
    candidates.append(Path(__file__).resolve().parents[2] / "Resources" / "Models" / name)
    candidates.append(Path(sys.prefix) / "share" / "myositis-qmri" / "Models" / name)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ModelFileError(candidates[0], "no segmentation model found; set MYOSITIS_QMRI_MODEL or run "
                                        "`myositis-qmri train --out FILE`")


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, values) -> dict[int, float]:
    """Dice per label value (NaN where the label is absent from both)."""
    out = {}
    for value in values:
        p, t = prediction == value, truth == value
        denom = p.sum() + t.sum()
        out[int(value)] = float(2 * (p & t).sum() / denom) if denom else float("nan")
    return out
