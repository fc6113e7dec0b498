"""Incremental learning: fine-tune a model on corrected masks of a few slices or volumes.

Corrected slices are cut into the same one-leg crops as at inference. Every batch mixes them
with replayed synthetic slices (drawn from label maps as in training), which guards the model
against forgetting. Dice before and after, on the case and on synthetic validation, go into
the new file's header; the new file gets the next model version and never replaces its source.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import Progress, step
from ..volume import Volume
from . import synth
from .labels import GroupScheme, muscle_index
from .losses import group_matrix, marginal_dice_ce
from .model import default_model_path, dice_per_label, load_model, save_model
from .real import IGNORE, check_scheme_values, labelled_leg_crops
from .train import evaluate, make_batch, predict_slices


def case_slices(image: Volume, labels: Volume, header: dict, scheme: GroupScheme | None = None):
    """Normalised crops (n, 1, s, s), targets (n, 1, s, s) and the input slice index of each.

    scheme None: labels in the project's values (right 1-11, left 12-22); else a group scheme's
    values (no side). Targets are IGNORE outside the field of view.
    """
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    check_scheme_values(labels, scheme)
    grid_image, crops = labelled_leg_crops(image, labels, spacing, size, scheme)
    if not crops:
        raise InputError(labels.source_name("labels"), "no labelled muscle voxel on the image's legs")
    images, targets, slice_index = [], [], []
    for crop, target, in_view, z in crops:
        # Input slice index of the model-grid slice (reorientation may reverse the slice order).
        point = grid_image.TransformIndexToPhysicalPoint((0, 0, int(z)))
        slice_index.append(int(round(image.geometry.physical_to_index(np.array(point))[2])))
        images.append(synth.normalize_slice(crop))
        targets.append(np.where(in_view, target, IGNORE))
    return np.stack(images)[:, None], np.stack(targets)[:, None], np.asarray(slice_index)


def mean_case_dice(network, images, targets, matrix=None) -> float:
    """Mean Dice over the groups (or muscles) present in `targets`, pooled over the slices, the
    predictions summed into the labels' groups (matrix from losses.group_matrix; None: muscles)."""
    matrix = group_matrix(None) if matrix is None else matrix
    probs = predict_slices(network, images)
    prediction = np.einsum("gc,nchw->nghw", matrix, probs).argmax(1)
    valid = targets[:, 0] != IGNORE
    truth = np.where(valid, targets[:, 0], 0)
    present = [int(v) for v in np.unique(truth) if v > 0]
    values = dice_per_label(np.where(valid, prediction, 0), truth, present)
    return float(np.mean(list(values.values()))) if values else float("nan")


def replayed_per_batch(batch_size: int, replay: synth.LegSlices | None, replay_fraction: float) -> int:
    """How many slices of each batch are replayed synthetic ones (none without replay slices)."""
    return int(round(batch_size * replay_fraction)) if replay is not None and len(replay.labels) else 0


def train_on_slices(network, case_images: np.ndarray, case_targets: np.ndarray, header: dict, steps: int, rng,
                    learning_rate: float = 2e-4, batch_size: int = 8, replay: synth.LegSlices | None = None,
                    replay_fraction: float = 0.5, negatives=(), desc: str = "fine-tuning",
                    matrix=None) -> None:
    """The fine-tuning loop, shared by `finetune` and a federated site's local round.

    Every batch mixes corrected slices (with mild intensity jitter, so that a few slices are
    not memorised pixel by pixel) with replayed synthetic slices and negative anatomy: the
    guard against forgetting. The corrected slices are learnt through the marginal loss with
    `matrix` (losses.group_matrix of their label scheme; None: the project's muscles), the
    replayed ones through Dice + cross-entropy, each weighted by its share of the batch. Leaves
    the network in eval mode.
    """
    import torch
    from monai.losses import DiceCELoss
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    matrix = group_matrix(None) if matrix is None else matrix
    n_replay = replayed_per_batch(batch_size, replay, replay_fraction)
    with Progress(steps, desc=desc) as progress:
        for _ in range(steps):
            pick = rng.integers(0, len(case_images), batch_size - n_replay)
            batch_images = case_images[pick] * rng.uniform(0.9, 1.1, (len(pick), 1, 1, 1)).astype(np.float32)
            loss = marginal_dice_ce(network(torch.from_numpy(batch_images.astype(np.float32))),
                                    torch.from_numpy(case_targets[pick].astype(np.int64)), matrix)
            if n_replay:
                replay_images, replay_targets = make_batch(rng, replay, n_replay, size, spacing, negatives)
                replay_loss = loss_fn(network(torch.from_numpy(replay_images)), torch.from_numpy(replay_targets))
                loss = (1 - n_replay / batch_size) * loss + n_replay / batch_size * replay_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.update(1)
    network.eval()


def finetune(model_path, image: Volume, labels: Volume, out: str | Path, slices=None, steps: int = 40,
             learning_rate: float = 2e-4, batch_size: int = 8, replay: synth.LegSlices | None = None,
             replay_fraction: float = 0.5, validation=None, seed: int = 0, negatives=(),
             scheme: GroupScheme | None = None) -> dict:
    """Fine-tune on the corrected `slices` (input z indices; None: every labelled slice).

    `negatives`: (slices, fraction of the replayed slices) pairs of negative anatomy (calf crops,
    synth.prepare_calf_slices; hip slices, synth.prepare_negative_image_slices), so that a model
    trained with them does not forget that a calf or a pelvis is no thigh.
    `scheme`: the labels trace muscle groups (labels.GROUP_SCHEMES), learnt through the marginal
    loss (losses.py); None: the project's own muscle values.
    """
    source = Path(model_path) if model_path is not None else default_model_path()
    out = Path(out)
    if out.resolve() == source.resolve() or out.resolve() == default_model_path().resolve():
        raise InputError(out, "fine-tuning writes a new model file; it never overwrites the source or shipped model")
    network, header = load_model(source)
    images, targets, slice_index = case_slices(image, labels, header, scheme)
    matrix = group_matrix(scheme)
    labelled = np.array([(t > 0).any() for t in targets])
    chosen = labelled & (np.isin(slice_index, list(slices)) if slices is not None else labelled)
    if not chosen.any():
        raise InputError(labels.source_name("labels"),
                         "no corrected muscle voxels on the chosen slices")
    others = labelled & ~chosen
    rng = np.random.default_rng(seed)
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    if validation is None and replay is not None and len(replay.labels):
        validation = make_batch(np.random.default_rng(12345), replay, 64, size, spacing)
    before = {"case_other_slices": mean_case_dice(network, images[others], targets[others], matrix) if others.any() else None,
              "case_corrected_slices": mean_case_dice(network, images[chosen], targets[chosen], matrix)}
    if validation is not None:
        before["synthetic_validation"] = evaluate(network, *validation)["mean_dice"]
    n_replay = replayed_per_batch(batch_size, replay, replay_fraction)
    step(f"fine-tuning on {int(chosen.sum())} corrected leg slices with {n_replay} replayed slices per batch")
    train_on_slices(network, images[chosen], targets[chosen], header, steps, rng, learning_rate=learning_rate,
                    batch_size=batch_size, replay=replay, replay_fraction=replay_fraction, negatives=negatives,
                    matrix=matrix)
    after = {"case_other_slices": mean_case_dice(network, images[others], targets[others], matrix) if others.any() else None,
             "case_corrected_slices": mean_case_dice(network, images[chosen], targets[chosen], matrix)}
    if validation is not None:
        after["synthetic_validation"] = evaluate(network, *validation)["mean_dice"]
    new_header = copy.deepcopy(header)
    new_header["model_version"] = int(header.get("model_version", 1)) + 1
    new_header["provenance"] = {"finetuned_from": source.name, "source_model_version": header.get("model_version"),
                                "source_provenance": header.get("provenance", {}),
                                "corrected_image": str(image.source_name("(in memory)")),
                                "corrected_slices": sorted({int(s) for s in slice_index[chosen]}),
                                "label_scheme": scheme.name if scheme is not None else "fine",
                                "steps": steps, "replay_fraction": replay_fraction if n_replay else 0.0,
                                "negative_replay": _negative_replay(negatives) if n_replay and negatives else None,
                                "command": "myositis-qmri finetune"}
    new_header["metrics"] = {**header.get("metrics", {}), "finetune": {"before": before, "after": after}}
    save_model(network, new_header, out)
    return {"before": before, "after": after, "model": str(out), "model_version": new_header["model_version"]}


def _negative_replay(negatives) -> dict:
    replay = {}
    for source, fraction in negatives:
        if isinstance(source, synth.NegativeImageSlices):
            replay["negative_images"] = {"slices": source.names, "fraction_of_replay": fraction}
        else:
            replay.update({"calf_roi_files": source.names, "fraction_of_replay": fraction})
    return replay


def training_setting(header: dict, key: str):
    """A setting the model was trained with (its provenance[key]), looking back through earlier
    fine-tunes; None when never set."""
    provenance = header.get("provenance") or {}
    while provenance:
        if provenance.get(key):
            return provenance[key]
        provenance = provenance.get("source_provenance") or {}
    return None


def negative_anatomy(header: dict, kind: str = "negative_anatomy") -> dict | None:
    """What negative anatomy a model was trained with (kind "negative_anatomy": calf outlines,
    "negative_images": real slices), looking back through earlier fine-tunes."""
    return training_setting(header, kind)


def phantom_replay(seeds=(101, 102), spacing_mm: float = 2.3, size: int = 96) -> synth.LegSlices:
    """Replay slices from phantom anatomy (when the real label maps are not at hand)."""
    from ..phantom import make_exam
    volumes = []
    for seed in seeds:
        labels = make_exam(seed, "demo").muscle_labels
        volumes.append(labels.with_array(np.vectorize(muscle_index)(labels.array).astype(np.uint8)))
    return synth.prepare_leg_slices(volumes, spacing_mm, size)
