"""`myositis-qmri finetune`: adapt a segmentation model to corrected masks (incremental learning)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument("--model", type=Path, default=None, help="model to start from (default: the shipped model)")
    parser.add_argument("--image", required=True, type=Path, help="structural image the masks were corrected on")
    parser.add_argument("--labels", required=True, type=Path, help="corrected label map (values per labels.json)")
    add_label_scheme_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="new model file (.safetensors)")
    parser.add_argument("--slices", default=None,
                        help="comma-separated slice indices (input z) that were corrected; default: all labelled")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--label-maps", type=Path, default=None,
                        help="label maps to replay against forgetting (default: shared data, else the phantom)")
    parser.add_argument("--calf-rois", type=Path, default=None, metavar="DIR",
                        help="calf outlines replayed as negative anatomy (default: the shared data's, when "
                             "the model was trained with them)")
    parser.add_argument("--negative-image", action="append", default=[], metavar="PATH[:FIRST-LAST]",
                        help="real slices without thigh muscle (hip, pelvis) replayed as negative anatomy, as "
                             "given to train (repeatable)")


def add_label_scheme_argument(parser) -> None:
    """--label-scheme, shared by `finetune` and `federate site` (both learn from corrected labels)."""
    parser.add_argument("--label-scheme", default="fine", choices=_schemes(),
                        help="what the label values mean: fine (this project's muscles, right 1-11, left 12-22) "
                             "or a group scheme (oai-groups: 1 rectus femoris, 2 vasti, 3 femur, 4 gracilis, "
                             "5 sartorius, 6 adductors, 7 biceps femoris, 8 semitendinosus, 9 semimembranosus; "
                             "thigh11: the 11 muscles 1-11 on both legs, side by position, 6 adductor magnus "
                             "alone, as in the shared thigh_label_maps)")


def label_scheme(args):
    """The GroupScheme that --label-scheme names (None: the project's fine values)."""
    from ..segmentation.labels import GROUP_SCHEMES
    return GROUP_SCHEMES.get(args.label_scheme)


def _schemes():
    from ..segmentation.labels import LABEL_SCHEMES
    return LABEL_SCHEMES


def _replay(folder: Path | None, out: Path, header: dict):
    """Replay slices drawn as the model was trained: its label maps' shapes, with the patchy fatty
    replacement it learnt, so that fine-tuning does not wear that off."""
    import dataclasses

    from ..segmentation.finetune import training_setting
    from ..segmentation.synth import DEFAULT_INFILTRATION_PATTERNS
    share = float(training_setting(header, "fatty_infiltration") or 0.0)
    patterns = tuple(training_setting(header, "infiltration_patterns") or DEFAULT_INFILTRATION_PATTERNS)
    return dataclasses.replace(_replay_shapes(folder, out, header), fatty_infiltration=share,
                               infiltration_patterns=patterns)


def _replay_shapes(folder: Path | None, out: Path, header: dict):
    """Training label maps to replay (default: the shared data's), else the phantom's anatomy."""
    from ..segmentation.finetune import phantom_replay
    from ..segmentation.train import DEFAULT_LABEL_MAPS, load_slices, split_maps
    folder = folder or DEFAULT_LABEL_MAPS
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    if folder.is_dir():
        maps = sorted(p for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd")))
        if len(maps) >= 2:
            train_maps, _ = split_maps(maps)
            return load_slices(train_maps, out, spacing, size)
    return phantom_replay(spacing_mm=spacing, size=size)


CALF_REPLAY_FRACTION = 0.2    # of the replayed slices
IMAGE_REPLAY_FRACTION = 0.1


def _negatives(folder: Path | None, header: dict, negative_images=()) -> list:
    """(slices, fraction of replay) pairs of negative anatomy to replay: calf crops when the model
    learnt from them (or --calf-rois asks), and the --negative-image slices."""
    from ..progress import step
    from ..segmentation.finetune import negative_anatomy
    from ..segmentation.synth import calf_roi_files, prepare_calf_slices, prepare_negative_image_slices
    from ..segmentation.train import DEFAULT_CALF_ROIS
    spacing, size = float(header["spacing_mm"][0]), int(header["crop_px"])
    pairs = []
    if negative_images:
        pairs.append((prepare_negative_image_slices(list(negative_images), spacing, size), IMAGE_REPLAY_FRACTION))
    elif negative_anatomy(header, "negative_images"):
        step("the model learnt real hip slices as negative anatomy; without --negative-image it may forget "
             "that a pelvis is no thigh")
    if folder is None and negative_anatomy(header) is None:
        return pairs
    try:
        files = calf_roi_files(folder or DEFAULT_CALF_ROIS)
    except InputError:
        if folder is not None:
            raise
        step(f"no calf outlines in {DEFAULT_CALF_ROIS}: fine-tuning without them, so the model may "
             "forget that a calf is no thigh (pass --calf-rois)")
        return pairs
    return [(prepare_calf_slices(files, spacing, size), CALF_REPLAY_FRACTION)] + pairs


def main(args) -> int:
    from ..io import read_volume
    from ..io.load import load_volume
    from ..segmentation.finetune import finetune
    from ..segmentation.model import read_header, default_model_path
    if not str(args.out).endswith(".safetensors"):
        raise InputError(args.out, "model files must end in .safetensors")
    slices = None
    if args.slices:
        try:
            slices = [int(s) for s in args.slices.split(",") if s.strip()]
        except ValueError:
            raise InputError("--slices", f"expected comma-separated integers, got {args.slices!r}") from None
    header = read_header(args.model or default_model_path())
    replay = _replay(args.label_maps, args.out, header)
    result = finetune(args.model, load_volume(args.image), read_volume(args.labels), args.out,
                      slices=slices, steps=args.steps, replay=replay,
                      negatives=_negatives(args.calf_rois, header, args.negative_image),
                      scheme=label_scheme(args))
    print(json.dumps(result, indent=1))
    return 0
