"""Federated averaging of model weights, shared by the Flower server and the offline merge.

Only models of one schema can be averaged: the same network, labels, orientation, grid
(spacing, crop) and intensity normalisation. Averaging two models that differ in any of
these would give weights that mean nothing, so the difference is named and the merge refused.
Weights travel as a list of arrays in the network's state_dict order, which is fixed by the
architecture entry of the header.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError, ModelFileError
from .model import build_network, load_model, model_identity, read_model_bytes, save_model

# Header entries that must agree for two models' weights to be averaged (or exchanged).
SCHEMA_KEYS = ("architecture", "labels", "background", "canonical_side", "orientation", "spacing_mm",
               "crop_px", "normalisation")


def model_schema(header: dict) -> dict:
    """The part of a model header that fixes what its weights mean."""
    return {key: copy.deepcopy(header.get(key)) for key in SCHEMA_KEYS}


def schema_differences(expected: dict, other: dict) -> list[str]:
    """Readable differences between two headers' schemas ("spacing_mm: [1.5, 1.5] here, [2.3, 2.3] there")."""
    return [f"{key}: {expected.get(key)!r} here, {other.get(key)!r} there"
            for key in SCHEMA_KEYS if expected.get(key) != other.get(key)]


def network_weights(network) -> list[np.ndarray]:
    """A network's weights as arrays, in state_dict order (what travels in a federation)."""
    return [value.detach().cpu().numpy().copy() for value in network.state_dict().values()]


def set_network_weights(network, arrays) -> None:
    """Load arrays (state_dict order) into a network; refuses a list of the wrong shapes."""
    import torch
    state = network.state_dict()
    if len(arrays) != len(state):
        raise ModelFileError(None, f"received {len(arrays)} weight arrays, the network has {len(state)}")
    for (key, value), array in zip(state.items(), arrays):
        if tuple(value.shape) != tuple(np.shape(array)):
            raise ModelFileError(None, f"received weights of shape {tuple(np.shape(array))} for {key}, "
                                       f"expected {tuple(value.shape)}")
    network.load_state_dict({key: torch.as_tensor(np.asarray(array)).to(value.dtype)
                             for (key, value), array in zip(state.items(), arrays)})


def weighted_average(weight_sets, counts) -> list[np.ndarray]:
    """Federated averaging: each layer is the count-weighted mean of the models' layers.

    Layers are averaged in float64 and returned in their own dtype (integer buffers rounded).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if len(weight_sets) != len(counts) or not len(counts):
        raise ValueError("one count per weight set is needed")
    if (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {counts.tolist()}")
    shares = counts / counts.sum()
    merged = []
    for layers in zip(*weight_sets):
        mean = sum(share * np.asarray(layer, dtype=np.float64) for share, layer in zip(shares, layers))
        dtype = np.asarray(layers[0]).dtype
        merged.append((np.rint(mean) if np.issubdtype(dtype, np.integer) else mean).astype(dtype))
    return merged


def merged_header(start_header: dict, federation: dict, command: str) -> dict:
    """A merged model's header: the start model's schema, the next version, the federation recorded.

    The start model's provenance stays under source_provenance, so that settings it was
    trained with (replay, negative anatomy) are still found by finetune.training_setting.
    """
    header = copy.deepcopy(start_header)
    header["model_version"] = int(start_header.get("model_version", 1)) + 1
    header["provenance"] = {"federation": federation, "source_model_version": start_header.get("model_version"),
                            "source_provenance": start_header.get("provenance", {}), "command": command}
    header["metrics"] = {"federation": federation.get("validation")} if federation.get("validation") else {}
    return header


def parse_merge_weights(text: str | None, n_models: int) -> list[float]:
    """--weights "N,N,...": one non-negative number per model (default: equal)."""
    if text is None:
        return [1.0] * n_models
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError("--weights", f"expected comma-separated numbers, got {text!r}") from None
    if len(values) != n_models:
        raise InputError("--weights", f"{len(values)} weights for {n_models} models")
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise InputError("--weights", "weights must be non-negative and not all zero")
    return values


def merge_models(paths, out: str | Path, weights=None) -> dict:
    """Offline federated averaging of model files (sites that cannot connect to a server).

    The first model's header is the reference: every other model must share its schema.
    `weights`: one per model, e.g. each site's number of labelled slices (default: equal).
    """
    paths = [Path(p) for p in paths]
    out = Path(out)
    if len(paths) < 2:
        raise InputError(None, "merging needs at least two model files")
    if any(out.resolve() == p.resolve() for p in paths):
        raise InputError(out, "the merged model must be a new file, not one of the inputs")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    models = []
    for path in paths:
        content = read_model_bytes(path)
        network, header = load_model(path, file_bytes=content)
        models.append((path, network, header, model_identity(path, content)))
    reference_path, _, reference, _ = models[0]
    for path, _, header, _ in models[1:]:
        differences = schema_differences(model_schema(reference), model_schema(header))
        if differences:
            raise ModelFileError(path, f"cannot be merged with {reference_path.name}: "
                                       + "; ".join(d.replace(" here,", f" in {reference_path.name},")
                                                   .replace(" there", f" in {path.name}") for d in differences))
    merged = weighted_average([network_weights(network) for _, network, _, _ in models], weights)
    federation = {"engine": "myositis-qmri merge-models", "engine_version": __version__,
                  "start_model": models[0][3],
                  "merged_from": [{**identity, "model_version": header.get("model_version"), "weight": weight}
                                  for (_, _, header, identity), weight in zip(models, weights)]}
    header = merged_header(reference, federation, "myositis-qmri merge-models")
    header["model_version"] = max(int(h.get("model_version", 1)) for _, _, h, _ in models) + 1
    network = build_network(reference["architecture"])
    set_network_weights(network, merged)
    save_model(network, header, out)
    return {"model": str(out), "model_version": header["model_version"], "merged_from": federation["merged_from"]}
