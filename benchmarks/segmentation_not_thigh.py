"""Does the thigh model leave anatomy that is not thigh alone? Real calves, with the real thigh as control.

A thigh model has no business labelling a calf: a calf series sent to it by mistake, or slices
past the knee, should come back (nearly) empty. This segments real calf images and reports the
share of the body (segment's own body mask) given a thigh label, slice by slice, next to the
same share on the real thigh Dixon, where it should stay high.
- calf MESE (Siemens, first and fourth echo): never used in training;
- dafne calf slices (T1w, PD): their outlines are the negative anatomy of `train --calf-rois`,
  so for a model trained with them these are training images, reported for completeness.
--musclemap DIR adds the real test images of SWastling/musclemap (DIR = its tests/test_data; not
in ../shared/data): a GE thigh Dixon, a thigh MT series, two thigh-to-pelvis B1-mapping spin
echoes (one subject, flip angles 60 and 120 degrees), two calf series and a 3-D calf Dixon, a
foot and a hand. For the B1-mapping series it also prints the labelled area per slice over the
thigh, the joined legs and the hip and pelvis. A model trained with `--negative-image` on the
60-degree series' pelvis slices has seen those slices; the 120-degree series is the same
subject in another contrast, so it checks contrast, not anatomy.
"warning share" is the segmenter's own measure (model grid; `segment` warns below
infer.MIN_THIGH_MUSCLE_FRACTION); the per-slice shares use a body mask on the input grid, which fails on images that fill the field
of view (shares above 1).
Usage: python benchmarks/segmentation_not_thigh.py [--model FILE ...] [--no-tta] [--record]
                                                   [--musclemap DIR]
--record writes the first model's result into its header (metrics.not_thigh_labelled_fraction).
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from myositis_qmri.io import read_volume
from myositis_qmri.io.dicom import read_dicom
from myositis_qmri.segmentation.canonical import body_mask
from myositis_qmri.segmentation.infer import MIN_THIGH_MUSCLE_FRACTION, segment_muscles
from myositis_qmri.segmentation.model import default_model_path, read_header, record_metrics
from myositis_qmri.volume import Volume

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


MUSCLEMAP_IMAGES = {   # path under musclemap's tests/test_data -> what it shows
    "ff/ge/thigh/input/40006-ORIG_DIXON_TE_345_TH-0000.nii.gz": "thigh",
    "ff/ge/thigh/input/40008-ORIG_DIXON_TE_575_TH-0000.nii.gz": "thigh",
    "mtr/input/mt_off.nii.gz": "thigh",
    "b1/input/se_fa120.nii.gz": "thigh (slices 0-20) and pelvis (21-39)",
    "b1/input/se_fa060.nii.gz": "thigh (slices 0-20) and pelvis (21-39)",
    "t2/input/t2_te16ms.nii.gz": "calf",
    "t2/input/0007-Dixon_TE_345_cf.nii.gz": "calf",
    "ff/siemens/calf3D/input/0026-dix3d_TR23_448m_fa05_345.nii.gz": "calf",
    "ff/siemens/foot/input/0024-dix3d_TR23_fa05_345.nii.gz": "foot",
    "ff/siemens/hand_reg/input/0006-Dixon_TE_345_hand.nii.gz": "hand",
}


# The B1-mapping spin echoes (one subject, two flip angles) run from mid-thigh (slice 0) up into
# the pelvis. Their body outline is open at the hip (the body is wider than the field of view),
# so their regions are reported as labelled area per slice rather than as a share of the body.
REGIONS = {"thigh 0-20": (0, 20), "joined legs 21-27": (21, 27), "hip and pelvis 28-39": (28, 39)}
REGION_IMAGES = ("se_fa120.nii.gz", "se_fa060.nii.gz")


def musclemap_images(folder: Path) -> dict:
    return {f"musclemap {Path(rel).name[:22]}": (read_volume(folder / rel), kind)
            for rel, kind in MUSCLEMAP_IMAGES.items()}


def images() -> dict:
    """Name -> (Volume, kind) for the real calf and thigh images."""
    calf = read_dicom(DATA / "mese_calf_siemens_enhanced").series[0].to_echo_series()
    out = {"calf MESE echo 1": (calf.echo(0), "calf"), "calf MESE echo 4": (calf.echo(3), "calf")}
    for name in ("t1_example", "t1_example_2", "pd_example"):
        data = np.load(DATA / "calf_manual_rois" / f"{name}.npz", allow_pickle=False)
        pixel = [float(v) for v in data["resolution"][:2]]
        out[f"dafne calf {name}"] = (Volume(data["image"].astype(np.float32)[None], (pixel[1], pixel[0], 5.0),
                                            (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), "dafne calf")
    dixon = sorted((DATA / "dixon3pt_thigh_siemens").glob("*.nii.gz"))
    out["thigh Dixon echo 1"] = (read_volume(dixon[0]), "thigh")
    out["thigh Dixon echo 2"] = (read_volume(dixon[2]), "thigh")
    return out


def labelled_fraction(image: Volume, model, tta: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """(the segmenter's own thigh-muscle share, per slice: thigh-labelled voxels over body voxels,
    per slice: thigh-labelled area in cm2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        labels = segment_muscles(image, model, test_time_augmentation=tta)
    body = body_mask(image.array)
    labelled = (labels.array > 0).sum(axis=(1, 2))
    per_slice = labelled / np.maximum(body.sum(axis=(1, 2)), 1)
    area_cm2 = labelled * image.spacing_mm[0] * image.spacing_mm[1] / 100
    return labels.metadata["thigh_muscle_fraction"], per_slice, area_cm2


def run(cases: dict, model, tta: bool) -> dict:
    provenance = read_header(model or default_model_path()).get("provenance") or {}
    calves = (provenance.get("negative_anatomy") or {}).get("calf_roi_files", "none")
    hips = (provenance.get("negative_images") or {}).get("slices", "none")
    print(f"model {model or 'shipped'} (negatives in training: calves {calves}, images {hips})")
    summary = {}
    for name, (image, kind) in cases.items():
        share, fraction, area_cm2 = labelled_fraction(image, model, tta)
        summary[name] = {"kind": kind, "warning_share": share, "mean": round(float(fraction.mean()), 3),
                         "per_slice": [round(float(f), 3) for f in fraction]}
        print(f"  {name:32s} {kind[:12]:12s} warning share {share:.2f}{' (warns)' if share < MIN_THIGH_MUSCLE_FRACTION else '        '}"
              f"  per slice " + " ".join(f"{f:.2f}" for f in fraction))
        if any(name.endswith(image_name[:22]) for image_name in REGION_IMAGES):
            regions = {region: round(float(area_cm2[a:b + 1].mean()), 1) for region, (a, b) in REGIONS.items()}
            summary[name]["labelled_cm2_per_slice"] = regions
            print("  " + " " * 45 + "labelled cm2 per slice: " +
                  ", ".join(f"{region} {value}" for region, value in regions.items()))
    summary["test_time_augmentation"] = tta
    summary["benchmark"] = "benchmarks/segmentation_not_thigh.py"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, action="append", default=None)
    parser.add_argument("--no-tta", action="store_true", help="without test-time augmentation")
    parser.add_argument("--record", action="store_true", help="write the first model's result into its header")
    parser.add_argument("--musclemap", type=Path, default=None, metavar="DIR",
                        help="SWastling/musclemap's tests/test_data folder, for more real images")
    args = parser.parse_args()
    models = args.model or [None]
    cases = {**images(), **(musclemap_images(args.musclemap) if args.musclemap else {})}
    summaries = [run(cases, model, not args.no_tta) for model in models]
    if args.record:
        print(f"recorded in {record_metrics(models[0], 'not_thigh_labelled_fraction', summaries[0])}")


if __name__ == "__main__":
    main()
