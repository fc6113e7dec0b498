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
import SimpleITK as sitk

from ..errors import InputError
from ..geometry import align_labels_to
from ..progress import Progress, step
from ..volume import Volume
from . import synth
from .canonical import LegWindow, crop_leg, leg_crops, model_grid_image
from .labels import LEFT_OFFSET, N_MUSCLES, muscle_index
from .model import default_model_path, dice_per_label, load_model, save_model
from .train import evaluate, make_batch, predict_slices


def case_slices(image: Volume, labels: Volume, header: dict):
    """Normalised crops (n, 1, s, s), targets (n, 1, s, s) and the input slice index of each."""
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    labels = align_labels_to(labels, image)
    grid_image, grid, _, windows, crops = leg_crops(image, spacing, size)
    label_grid = sitk.GetArrayFromImage(model_grid_image(labels, spacing, "nearest"))
    # Input slice index of each model-grid slice (reorientation may reverse the slice order).
    to_input = []
    for z in range(grid.shape[0]):
        point = grid_image.TransformIndexToPhysicalPoint((0, 0, z))
        to_input.append(int(round(image.geometry.physical_to_index(np.array(point))[2])))
    images, targets, slice_index = [], [], []
    for window, crop in zip(windows, crops):
        whole = LegWindow(window.side, (0, grid.shape[2]), window.centre_yx)
        values = crop_leg(label_grid, whole, size, fill=0).astype(np.int64)
        offset = LEFT_OFFSET if window.side == "left" else 0
        own = (values > offset) & (values <= offset + N_MUSCLES)
        target = np.where(own, values - offset, 0)
        for z in range(crop.shape[0]):
            images.append(synth.normalize_slice(crop[z]))
            targets.append(target[z])
            slice_index.append(to_input[z])
    return np.stack(images)[:, None], np.stack(targets)[:, None], np.asarray(slice_index)


def mean_case_dice(network, images, targets) -> float:
    """Mean Dice over the muscles present in `targets`, pooled over the slices."""
    prediction = predict_slices(network, images).argmax(1)
    present = [v for v in range(1, N_MUSCLES + 1) if (targets == v).any()]
    values = dice_per_label(prediction, targets[:, 0], present)
    return float(np.mean(list(values.values()))) if values else float("nan")


def replayed_per_batch(batch_size: int, replay: synth.LegSlices | None, replay_fraction: float) -> int:
    """How many slices of each batch are replayed synthetic ones (none without replay slices)."""
    return int(round(batch_size * replay_fraction)) if replay is not None and len(replay.labels) else 0


def train_on_slices(network, case_images: np.ndarray, case_targets: np.ndarray, header: dict, steps: int, rng,
                    learning_rate: float = 2e-4, batch_size: int = 8, replay: synth.LegSlices | None = None,
                    replay_fraction: float = 0.5, negatives=(), desc: str = "fine-tuning") -> None:
    """The fine-tuning loop, shared by `finetune` and a federated site's local round.

    Every batch mixes corrected slices (with mild intensity jitter, so that a few slices are
    not memorised pixel by pixel) with replayed synthetic slices and negative anatomy: the
    guard against forgetting. Leaves the network in eval mode.
    """
    import torch
    from monai.losses import DiceCELoss
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    n_replay = replayed_per_batch(batch_size, replay, replay_fraction)
    with Progress(steps, desc=desc) as progress:
        for _ in range(steps):
            pick = rng.integers(0, len(case_images), batch_size - n_replay)
            batch_images = case_images[pick] * rng.uniform(0.9, 1.1, (len(pick), 1, 1, 1)).astype(np.float32)
            batch_targets = case_targets[pick]
            if n_replay:
                replay_images, replay_targets = make_batch(rng, replay, n_replay, size, spacing, negatives)
                batch_images = np.concatenate([batch_images, replay_images])
                batch_targets = np.concatenate([batch_targets, replay_targets])
            loss = loss_fn(network(torch.from_numpy(batch_images.astype(np.float32))),
                           torch.from_numpy(batch_targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress.update(1)
    network.eval()


def finetune(model_path, image: Volume, labels: Volume, out: str | Path, slices=None, steps: int = 40,
             learning_rate: float = 2e-4, batch_size: int = 8, replay: synth.LegSlices | None = None,
             replay_fraction: float = 0.5, validation=None, seed: int = 0, negatives=()) -> dict:
    """Fine-tune on the corrected `slices` (input z indices; None: every labelled slice).

    `negatives`: (slices, fraction of the replayed slices) pairs of negative anatomy (calf crops,
    synth.prepare_calf_slices; hip slices, synth.prepare_negative_image_slices), so that a model
    trained with them does not forget that a calf or a pelvis is no thigh.
    """
    source = Path(model_path) if model_path is not None else default_model_path()
    out = Path(out)
    if out.resolve() == source.resolve() or out.resolve() == default_model_path().resolve():
        raise InputError(out, "fine-tuning writes a new model file; it never overwrites the source or shipped model")
    network, header = load_model(source)
    images, targets, slice_index = case_slices(image, labels, header)
    labelled = np.array([t.any() for t in targets])
    chosen = labelled & (np.isin(slice_index, list(slices)) if slices is not None else labelled)
    if not chosen.any():
        raise InputError(labels.source_name("labels"),
                         "no corrected muscle voxels on the chosen slices")
    others = labelled & ~chosen
    rng = np.random.default_rng(seed)
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    if validation is None and replay is not None and len(replay.labels):
        validation = make_batch(np.random.default_rng(12345), replay, 64, size, spacing)
    before = {"case_other_slices": mean_case_dice(network, images[others], targets[others]) if others.any() else None,
              "case_corrected_slices": mean_case_dice(network, images[chosen], targets[chosen])}
    if validation is not None:
        before["synthetic_validation"] = evaluate(network, *validation)["mean_dice"]
    n_replay = replayed_per_batch(batch_size, replay, replay_fraction)
    step(f"fine-tuning on {int(chosen.sum())} corrected leg slices with {n_replay} replayed slices per batch")
    train_on_slices(network, images[chosen], targets[chosen], header, steps, rng, learning_rate=learning_rate,
                    batch_size=batch_size, replay=replay, replay_fraction=replay_fraction, negatives=negatives)
    after = {"case_other_slices": mean_case_dice(network, images[others], targets[others]) if others.any() else None,
             "case_corrected_slices": mean_case_dice(network, images[chosen], targets[chosen])}
    if validation is not None:
        after["synthetic_validation"] = evaluate(network, *validation)["mean_dice"]
    new_header = copy.deepcopy(header)
    new_header["model_version"] = int(header.get("model_version", 1)) + 1
    new_header["provenance"] = {"finetuned_from": source.name, "source_model_version": header.get("model_version"),
                                "source_provenance": header.get("provenance", {}),
                                "corrected_image": str(image.source_name("(in memory)")),
                                "corrected_slices": sorted({int(s) for s in slice_index[chosen]}),
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
