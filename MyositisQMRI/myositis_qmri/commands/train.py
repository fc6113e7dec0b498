"""`myositis-qmri train`: train the muscle segmentation model from label maps (resumable)."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="model file to write (.safetensors)")
    parser.add_argument("--label-maps", type=Path, default=None,
                        help="folder of thigh label maps (values 1-11 on both legs); default: the shared data")
    parser.add_argument("--steps", "--epochs", dest="steps", type=int, default=4000,
                        help="optimisation steps (batches)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--phantoms", type=int, default=0, metavar="N",
                        help="also train on the label maps of N synthetic phantom exams (seeds 1..N)")
    parser.add_argument("--spacing-mm", type=float, default=2.3, help="in-plane pixel size of the model grid (mm)")
    parser.add_argument("--crop-px", type=int, default=96,
                        help="side of the square one-leg crop in model pixels (a multiple of 16)")
    parser.add_argument("--between-slices", action="store_true",
                        help="add a shape-interpolated label slice between each pair of neighbouring slices")
    parser.add_argument("--init", type=Path, default=None, metavar="MODEL",
                        help="start from this model file's weights (same architecture) instead of random ones")
    parser.add_argument("--calf-rois", type=Path, default=None, metavar="DIR",
                        help="folder of manual calf outlines (dafne-evaluation *_manual_rois*.npz with "
                             "*_example*.npz beside them): negative anatomy, trained as background")
    parser.add_argument("--negative-fraction", type=float, default=0.1,
                        help="share of training slices drawn from --calf-rois")
    parser.add_argument("--negative-image", action="append", default=[], metavar="PATH[:FIRST-LAST]",
                        help="real image slices that hold no thigh muscle (hip, pelvis), 0-based and "
                             "inclusive; trained as background, their contrast redrawn at random (repeatable)")
    parser.add_argument("--negative-image-fraction", type=float, default=0.05,
                        help="share of training slices drawn from --negative-image")
    parser.add_argument("--fatty-infiltration", type=float, default=0.0, metavar="SHARE",
                        help="share of training images whose muscles are partly replaced by fat, in "
                             "patches (the disease's chronic damage); 0 keeps the plain synthesis")
    parser.add_argument("--infiltration-patterns", default="patches", metavar="NAMES", type=_pattern_names,
                        help="comma-separated shapes the fat takes, one drawn per image: patches (islands), "
                             "streaks (along the fibres), rim (in from the fascia), whole (end-stage: whole "
                             "muscles fat, only fascia left); default: patches")
    parser.add_argument("--real-scans", type=Path, default=None, metavar="DIR",
                        help="folder of real subjects (<id>/image.nii.gz + labels.nii.gz traced in groups, as "
                             "the shared oai_thigh_t1): its training split is mixed into every batch, learnt "
                             "through the group (marginal) loss; its validation split is never read")
    parser.add_argument("--real-scheme", default="oai-groups", help="the group scheme of --real-scans' labels")
    parser.add_argument("--real-fraction", type=float, default=0.5, help="share of each batch from --real-scans")
    parser.add_argument("--real-case", action="append", default=[], type=_real_case,
                        metavar="SCHEME:IMAGE:LABELS",
                        help="one more real scan with its labels in SCHEME (e.g. thigh11 for 1-11 on both "
                             "legs, oai-groups), mixed into every batch (repeatable; the same labels may "
                             "serve a water and a fat image)")
    parser.add_argument("--real-case-fraction", type=float, default=0.25,
                        help="share of each batch from --real-case scans")
    parser.add_argument("--real-fatty-infiltration", type=float, default=0.0, metavar="SHARE",
                        help="share of the real scans' draws (--real-scans, --real-case) whose traced muscles "
                             "are partly or wholly replaced by the scan's own fat, in --infiltration-patterns; "
                             "0 keeps them as scanned")
    parser.add_argument("--unlabelled-adductors", action="store_true",
                        help="unlabelled muscle beside adductor magnus in the synthetic images (adductor longus "
                             "and brevis, which the label maps leave out) may be called background or adductor "
                             "group without penalty, as the adductor row and real tracings cover the group")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint next to --out (default: start afresh)")


TUNING_EVERY = 11   # every 11th training subject chooses the best step instead of being trained on


def _real_subjects(folder):
    """(training subjects, tuning subjects) of a real-scan folder; the validation split stays unread."""
    if folder is None:
        return (), ()
    from ..segmentation.real import oai_split
    if not Path(folder).is_dir():
        raise InputError(folder, "real-scan folder not found")
    training, _ = oai_split(folder)
    if len(training) < 2:
        raise InputError(folder, "needs subject folders holding image.nii.gz and labels.nii.gz")
    tuning = training[TUNING_EVERY // 2::TUNING_EVERY]
    return tuple(s for s in training if s not in tuning), tuple(tuning)


def _real_case(text: str) -> tuple:
    """(scheme, image, labels) from SCHEME:IMAGE:LABELS; the files must exist."""
    import argparse

    from ..segmentation.labels import GROUP_SCHEMES
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in GROUP_SCHEMES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SCHEME:IMAGE:LABELS with SCHEME one of "
                                         f"{', '.join(GROUP_SCHEMES)}")
    for name in parts[1:]:
        if not Path(name).is_file():
            raise argparse.ArgumentTypeError(f"{name}: file not found")
    return parts[0], Path(parts[1]), Path(parts[2])


def _pattern_names(text: str) -> tuple[str, ...]:
    import argparse

    from ..segmentation.synth import check_infiltration_patterns
    try:
        return check_infiltration_patterns(tuple(name.strip() for name in text.split(",") if name.strip()))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(args) -> int:
    from ..segmentation.train import (DEFAULT_LABEL_MAPS, TrainConfig, checkpoint_path, train,
                                      write_phantom_label_maps)
    folder = args.label_maps or DEFAULT_LABEL_MAPS
    if not folder.is_dir():
        raise InputError(folder, "label-map folder not found (pass --label-maps)")
    maps = sorted(p for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd")))
    if len(maps) < 2:
        raise InputError(folder, "needs at least two label maps (one is held out for validation)")
    if not str(args.out).endswith(".safetensors"):
        raise InputError(args.out, "model files must end in .safetensors")
    if args.crop_px % 16:
        raise InputError("--crop-px", f"{args.crop_px} is not a multiple of 16 (the network halves it four times)")
    from ..segmentation.synth import calf_roi_files, parse_negative_image
    calf_rois = tuple(calf_roi_files(args.calf_rois)) if args.calf_rois is not None else ()
    for spec in args.negative_image:
        path, _, _ = parse_negative_image(spec)
        if not path.is_file():
            raise InputError(path, "negative image not found")
    real_scans, real_tuning = _real_subjects(args.real_scans)
    if not args.resume and checkpoint_path(args.out).exists():
        checkpoint_path(args.out).unlink()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(label_maps=maps, out=args.out, steps=args.steps, batch_size=args.batch_size,
                         learning_rate=args.learning_rate, validate_every=args.validate_every,
                         seed=args.seed, threads=args.threads, between_slices=args.between_slices,
                         init_model=args.init, spacing_mm=args.spacing_mm, crop_px=args.crop_px,
                         calf_rois=calf_rois, negative_fraction=args.negative_fraction,
                         negative_images=tuple(args.negative_image),
                         negative_image_fraction=args.negative_image_fraction,
                         fatty_infiltration=args.fatty_infiltration,
                         infiltration_patterns=args.infiltration_patterns,
                         real_scans=real_scans, real_tuning=real_tuning, real_scheme=args.real_scheme,
                         real_fraction=args.real_fraction, real_cases=tuple(args.real_case),
                         real_case_fraction=args.real_case_fraction,
                         real_fatty_infiltration=args.real_fatty_infiltration,
                         unlabelled_adductors=args.unlabelled_adductors,
                         extra_training_maps=tuple(write_phantom_label_maps(
                             args.out.parent / "phantom_label_maps", range(1, args.phantoms + 1))))
    state = train(config, resume=args.resume)
    print(f"best synthetic validation Dice {state['best_mean_dice']:.3f} after {state['step']} steps; "
          f"model: {args.out}")
    return 0
