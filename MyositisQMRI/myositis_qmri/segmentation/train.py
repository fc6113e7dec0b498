"""Training and fine-tuning of the one-leg 2-D muscle network.

`train` draws synthetic slices from thigh label maps (see synth.py), optimises Dice + cross
entropy, validates on synthetic slices from held-out maps, and writes the best model file.
It checkpoints (safetensors + JSON, never pickle) so that an interrupted run resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..io.atomic import atomic_path
from ..progress import Progress, step
from . import synth
from .labels import GROUP_SCHEMES, N_MUSCLES
from .losses import fine_matrix_with_maybe, group_matrix, marginal_dice_ce
from .model import base_header, build_network, dice_per_label, load_model, model_identity, save_model

# The shared real-data folder sits next to the project checkout (or where the env var says).
DEFAULT_LABEL_MAPS = Path(os.environ.get("MYOSITIS_QMRI_SHARED_DATA",
                                         Path(__file__).resolve().parents[3].parent / "shared" / "data")) / "thigh_label_maps"
DEFAULT_CALF_ROIS = DEFAULT_LABEL_MAPS.parent / "calf_manual_rois"
VALIDATION_EVERY = 7      # every 7th map (sorted by name) is held out for validation


@dataclass
class TrainConfig:
    label_maps: list[Path]
    out: Path
    steps: int = 4000
    batch_size: int = 8
    learning_rate: float = 2e-3
    spacing_mm: float = 2.3
    crop_px: int = 96
    seed: int = 0
    validate_every: int = 100
    n_validation_slices: int = 192
    threads: int = 2
    extra_training_maps: tuple[Path, ...] = ()   # e.g. phantom label maps: training only
    between_slices: bool = False   # add shape-interpolated slices between the training maps' slices
    init_model: Path | None = None  # start from this model file's weights (same architecture)
    calf_rois: tuple[Path, ...] = ()  # calf ROI files: negative anatomy, trained as background
    negative_fraction: float = 0.1   # share of training slices drawn from calf_rois
    negative_images: tuple[str, ...] = ()  # "PATH[:FIRST-LAST]" real slices without thigh muscle (hip)
    negative_image_fraction: float = 0.05  # share of training slices drawn from negative_images
    fatty_infiltration: float = 0.0  # share of training draws with patchy fat inside muscles (synth.infiltrate_fat)
    infiltration_patterns: tuple[str, ...] = synth.DEFAULT_INFILTRATION_PATTERNS   # shapes the fat takes
    real_scans: tuple[Path, ...] = ()   # real subject folders (image + group labels): training split only
    real_scheme: str = "oai-groups"     # the group scheme their labels use (labels.GROUP_SCHEMES)
    real_fraction: float = 0.5          # share of each batch drawn from real_scans
    real_tuning: tuple[Path, ...] = ()  # real subjects (not trained on) that choose the best step
    real_cases: tuple[tuple[str, Path, Path], ...] = ()  # (scheme, image, labels) of single real scans
    real_case_fraction: float = 0.25    # share of each batch drawn from real_cases
    real_fatty_infiltration: float = 0.0  # share of real draws whose traced muscles are replaced by fat
    unlabelled_adductors: bool = False  # synthetic unlabelled muscle beside adductor magnus: background or adductors


def write_phantom_label_maps(folder: Path, seeds) -> list[Path]:
    """Side-less muscle label maps (1..11 on both legs) of synthetic phantom exams.

    The phantom's anatomy joins the real label maps as training shapes; seed 0 (the demo exam)
    is never among them, so the demo stays a held-out case.
    """
    from ..io import write_volume
    from ..phantom import make_exam
    from .labels import LEFT_OFFSET
    paths = []
    for seed in seeds:
        if int(seed) == 0:
            raise ValueError("phantom seed 0 is the demo exam; keep it out of training")
        path = Path(folder) / f"phantom_seed{int(seed):03d}.nii.gz"
        if not path.exists():
            labels = make_exam(seed=int(seed), size="demo").muscle_labels
            sideless = np.where(labels.array > LEFT_OFFSET, labels.array - LEFT_OFFSET, labels.array).astype(np.int16)
            write_volume(labels.with_array(sideless), path)
        paths.append(path)
    return paths


def split_maps(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    paths = sorted(paths, key=lambda p: p.name)
    validation = [p for i, p in enumerate(paths) if i % VALIDATION_EVERY == VALIDATION_EVERY // 2]
    if not validation and len(paths) >= 2:
        validation = paths[-1:]  # few maps: hold out the last one
    return [p for p in paths if p not in validation], validation


def _cache_path(out: Path, paths: list[Path], spacing_mm: float, crop_px: int, between_slices: bool) -> Path:
    fields = [sorted(p.name for p in paths), spacing_mm, crop_px] + (["between"] if between_slices else [])
    key = hashlib.sha1(json.dumps(fields).encode()).hexdigest()[:10]
    return out.parent / f".{out.stem}.slices-{key}.npz"


def load_slices(paths: list[Path], out: Path, spacing_mm: float, crop_px: int,
                between_slices: bool = False) -> synth.LegSlices:
    cache = _cache_path(out, paths, spacing_mm, crop_px, between_slices)
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return synth.LegSlices(data["labels"], data["source"], [str(n) for n in data["names"]])
    slices = synth.prepare_leg_slices(paths, spacing_mm, crop_px, between_slices=between_slices)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, labels=slices.labels, source=slices.source, names=np.array(slices.names))
    return slices


def make_batch(rng, slices: synth.LegSlices, n: int, crop_px: int, spacing_mm: float, negatives=()):
    """n synthetic (image, target) pairs. negatives: (slices, fraction) pairs of negative anatomy
    (synth.LegSlices of calves, synth.NegativeImageSlices of hips); each pair supplies about
    `fraction` of the batch."""
    images, targets = [], []
    for index in rng.integers(0, len(slices), n):
        source = slices
        if negatives:
            draw, cumulative = rng.random(), 0.0
            for candidate, fraction in negatives:
                cumulative += fraction
                if draw < cumulative:
                    source, index = candidate, rng.integers(0, len(candidate))
                    break
        image, target = source.draw(rng, index, crop_px, spacing_mm)
        images.append(image)
        targets.append(target)
    return np.stack(images)[:, None], np.stack(targets)[:, None]


def predict_slices(network, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Softmax probabilities (n, classes, y, x) for normalised slices (n, 1, y, x)."""
    import torch
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            logits = network(torch.from_numpy(np.ascontiguousarray(images[start:start + batch])))
            out.append(torch.softmax(logits, 1).numpy())
    return np.concatenate(out)


def evaluate_groups(network, real, images: np.ndarray, targets: np.ndarray) -> dict:
    """Mean Dice over the scheme's muscle groups (pooled over all slices) of real traced crops."""
    from .real import IGNORE
    network.eval()
    probs = predict_slices(network, images)
    network.train()
    grouped = np.einsum("gc,nchw->nghw", group_matrix(GROUP_SCHEMES[real.scheme]), probs).argmax(1)
    valid = targets[:, 0] != IGNORE
    groups = sorted(GROUP_SCHEMES[real.scheme].muscle_groups())
    per = dice_per_label(np.where(valid, grouped, 0), np.where(valid, targets[:, 0], 0), groups)
    values = [v for v in per.values() if np.isfinite(v)]
    return {"mean_dice": float(np.mean(values)), "dice": {str(k): round(v, 4) for k, v in per.items()}}


def plain_crops(real, crop_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The real crops undeformed, in their own contrast, cut to crop_px (the validation view)."""
    margin = (real.images.shape[1] - crop_px) // 2
    cut = slice(margin, margin + crop_px)
    return (np.ascontiguousarray(real.images[:, None, cut, cut]),
            real.targets[:, None, cut, cut].astype(np.int64))


def evaluate(network, images: np.ndarray, targets: np.ndarray) -> dict:
    """Mean Dice over muscles (pooled over all slices) and per muscle."""
    network.eval()
    prediction = predict_slices(network, images).argmax(1)
    per = dice_per_label(prediction, targets[:, 0], range(1, N_MUSCLES + 1))
    network.train()
    values = [v for v in per.values() if np.isfinite(v)]
    return {"mean_dice": float(np.mean(values)), "dice": {str(k): round(v, 4) for k, v in per.items()}}


def _save_checkpoint(path: Path, network, optimizer, state: dict) -> None:
    from safetensors.torch import save_file
    tensors = {f"net.{k}": v.detach().contiguous() for k, v in network.state_dict().items()}
    opt_state = optimizer.state_dict()
    for pid, entry in opt_state["state"].items():
        for name, value in entry.items():
            tensors[f"opt.{pid}.{name}"] = value.detach().reshape(-1).contiguous() if value.ndim == 0 else value.detach().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})


def _load_checkpoint(path: Path, network, optimizer) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), framework="pt") as handle:
        state = json.loads(handle.metadata()["state"])
    tensors = load_file(str(path))
    network.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    opt_state = optimizer.state_dict()
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[name] = value.reshape(()) if name == "step" else value
    optimizer.load_state_dict(opt_state)
    return state


def _file_hashes(negative_images) -> dict:
    """sha256 of each negative image file, by name: which scan the model learnt from."""
    paths = [synth.parse_negative_image(spec)[0] for spec in negative_images]
    return {path.name: _sha256(path) for path in paths}


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _prepare_cases(config: TrainConfig) -> list:
    """One RealSlices per label scheme among config.real_cases (single real scans with their labels)."""
    from .real import prepare_real_cases
    by_scheme = {}
    for scheme, image, labels in config.real_cases:
        by_scheme.setdefault(scheme, []).append((Path(image), Path(labels)))
    return [prepare_real_cases(cases, scheme, config.spacing_mm, config.crop_px)
            for scheme, cases in by_scheme.items()]


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.stem + ".checkpoint.safetensors")


def _synthetic_loss(unlabelled_adductors: bool):
    """Dice + cross-entropy on the synthetic fine labels; with unlabelled_adductors, the marginal loss
    that lets synth.MAYBE_ADDUCTOR pixels be background or adductors without penalty."""
    if unlabelled_adductors:
        matrix = fine_matrix_with_maybe(synth.MAYBE_ADDUCTOR, synth.ADDUCTOR)
        return lambda logits, targets: marginal_dice_ce(logits, targets, matrix)
    from monai.losses import DiceCELoss
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


def train(config: TrainConfig, resume: bool = True) -> dict:
    """Train (or resume) and write the best model to config.out; returns the final state."""
    import torch
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    train_maps, val_maps = split_maps(config.label_maps)
    train_maps = train_maps + list(config.extra_training_maps)
    step(f"{len(train_maps)} training and {len(val_maps)} validation label maps")
    slices = load_slices(train_maps, config.out, config.spacing_mm, config.crop_px, config.between_slices)
    slices = dataclasses.replace(slices, fatty_infiltration=config.fatty_infiltration,    # validation stays plain
                                 infiltration_patterns=tuple(config.infiltration_patterns),
                                 unlabelled_adductors=config.unlabelled_adductors)
    val_slices = load_slices(val_maps, config.out, config.spacing_mm, config.crop_px)
    calves = (synth.prepare_calf_slices(list(config.calf_rois), config.spacing_mm, config.crop_px)
              if config.calf_rois else None)
    hips = (synth.prepare_negative_image_slices(list(config.negative_images), config.spacing_mm, config.crop_px)
            if config.negative_images else None)
    hip_hashes = _file_hashes(config.negative_images) if hips is not None else None
    negatives = [(source, fraction) for source, fraction in
                 ((calves, config.negative_fraction), (hips, config.negative_image_fraction)) if source is not None]
    val_images, val_targets = make_batch(np.random.default_rng(12345), val_slices,
                                         config.n_validation_slices, config.crop_px, config.spacing_mm)
    real = tuning = None
    if config.real_scans:
        from .real import prepare_real_slices
        real = prepare_real_slices(list(config.real_scans), config.real_scheme, config.spacing_mm, config.crop_px)
        if config.real_tuning:
            tuning_slices = prepare_real_slices(list(config.real_tuning), config.real_scheme,
                                                config.spacing_mm, config.crop_px)
            tuning = plain_crops(tuning_slices, config.crop_px)
    real_sets = []   # (slices, group matrix, crops per batch, share of the loss)
    fatty = {"fatty_infiltration": config.real_fatty_infiltration,
             "infiltration_patterns": tuple(config.infiltration_patterns)}
    real = dataclasses.replace(real, **fatty) if real is not None else None   # tuning crops stay plain
    if real is not None:
        real_sets.append((real, config.real_fraction))
    real_sets += [(dataclasses.replace(cases, **fatty),
                   config.real_case_fraction / len(config.real_cases) * len(cases.names))
                  for cases in _prepare_cases(config)]
    real_sets = [(source, group_matrix(GROUP_SCHEMES[source.scheme]), int(round(config.batch_size * share)))
                 for source, share in real_sets]
    n_real = sum(n for _, _, n in real_sets)
    header = base_header(config.spacing_mm, config.crop_px)
    network = build_network(header["architecture"])
    initialised_from = None
    if config.init_model is not None:
        initial, initial_header = load_model(config.init_model)
        if initial_header["architecture"] != header["architecture"]:
            raise ModelFileError(config.init_model, "its network differs from the one being trained")
        network.load_state_dict(initial.state_dict())
        initialised_from = {**model_identity(config.init_model), "provenance": initial_header.get("provenance")}
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    loss_fn = _synthetic_loss(config.unlabelled_adductors)
    state = {"step": 0, "best_mean_dice": -1.0, "history": []}
    ckpt = checkpoint_path(config.out)
    if resume and ckpt.exists():
        state = _load_checkpoint(ckpt, network, optimizer)
        step(f"resuming from step {state['step']} (best validation Dice {state['best_mean_dice']:.3f})")
    network.train()
    started = time.time()
    with Progress(config.steps, desc="training") as progress:
        progress.update(state["step"])
        while state["step"] < config.steps:
            rng = np.random.default_rng([config.seed, state["step"]])
            lr = config.learning_rate * 0.5 * (1 + np.cos(np.pi * state["step"] / config.steps))
            for group in optimizer.param_groups:
                group["lr"] = max(lr, config.learning_rate * 0.02)
            images, targets = make_batch(rng, slices, config.batch_size - n_real, config.crop_px,
                                         config.spacing_mm, negatives)
            loss = loss_fn(network(torch.from_numpy(images)), torch.from_numpy(targets))
            loss = loss * (1 - n_real / config.batch_size)
            for source, matrix, n in real_sets:
                real_images, real_targets = make_batch(rng, source, n, config.crop_px, config.spacing_mm)
                real_loss = marginal_dice_ce(network(torch.from_numpy(real_images)), torch.from_numpy(real_targets),
                                             matrix)
                loss = loss + n / config.batch_size * real_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state["step"] += 1
            progress.update(1)
            if state["step"] % config.validate_every == 0 or state["step"] == config.steps:
                metrics = evaluate(network, val_images, val_targets)
                real_metrics = evaluate_groups(network, real, *tuning) if tuning is not None else None
                # With real tuning scans the best step is chosen on both: real anatomy and any contrast.
                score = metrics["mean_dice"] if real_metrics is None else \
                    0.5 * (metrics["mean_dice"] + real_metrics["mean_dice"])
                state["history"].append({"step": state["step"], "loss": round(float(loss.detach()), 4),
                                         "val_mean_dice": round(metrics["mean_dice"], 4),
                                         "real_tuning_group_dice": real_metrics and round(real_metrics["mean_dice"], 4),
                                         "seconds": round(time.time() - started, 1)})
                step(f"step {state['step']}: loss {float(loss.detach()):.3f}, validation Dice {metrics['mean_dice']:.3f}"
                     + (f", real tuning group Dice {real_metrics['mean_dice']:.3f}" if real_metrics else ""))
                if score > state["best_mean_dice"]:
                    state["best_mean_dice"] = score
                    header["metrics"] = {"synthetic_validation": metrics, "step": state["step"],
                                         **({"real_tuning": real_metrics} if real_metrics else {})}
                    header["provenance"] = {
                        "training_label_maps": [p.name for p in train_maps],
                        "validation_label_maps": [p.name for p in val_maps],
                        "label_map_source": "Hirriririir/Multimodal-Multiethnic-Thigh-Muscle-MRI-analysis (Apache-2.0)",
                        "synthesis": "SynthSeg-style domain randomisation (myositis_qmri.segmentation.synth)",
                        "steps": state["step"], "batch_size": config.batch_size, "seed": config.seed,
                        "learning_rate": config.learning_rate, "between_slices": config.between_slices,
                        "fatty_infiltration": config.fatty_infiltration,
                        "infiltration_patterns": list(config.infiltration_patterns),
                        "initialised_from": initialised_from,
                        "negative_anatomy": None if calves is None else {
                            "calf_roi_files": calves.names, "fraction": config.negative_fraction,
                            "source": "dafne-imaging/dafne-evaluation (Apache-2.0), manual calf outlines",
                            "crops": int(len(calves))},
                        "negative_images": None if hips is None else {
                            "slices": hips.names, "fraction": config.negative_image_fraction,
                            "crops": int(len(hips)), "sha256": hip_hashes,
                            "synthesis": "intensity classes redrawn at random (synth.synthesize_negative_image)"},
                        "real_scans": None if real is None else {
                            "subjects": real.names, "scheme": config.real_scheme, "crops": int(len(real)),
                            "fraction": config.real_fraction,
                            "tuning_subjects": [Path(p).name for p in config.real_tuning],
                            "source": "Osteoarthritis Initiative T1 thighs, manual group tracings "
                                      "(Jason-TsangGL/UFATS-ITSA-RARE); OAI data-use terms",
                            "loss": "marginal Dice + cross-entropy on group-summed probabilities"},
                        "real_cases": [{"scheme": scheme, "image": Path(image).name, "labels": Path(labels).name,
                                        "folder": Path(image).parent.name, "sha256": _sha256(image)}
                                       for scheme, image, labels in config.real_cases] or None,
                        "real_case_fraction": config.real_case_fraction if config.real_cases else None,
                        "real_fatty_infiltration": config.real_fatty_infiltration,
                        "unlabelled_adductors": config.unlabelled_adductors,
                        "command": "myositis-qmri train",
                    }
                    save_model(network, header, config.out)
                _save_checkpoint(ckpt, network, optimizer, state)
    return state
