"""Does the thigh model leave anatomy that is not thigh alone? Real calves, with the real thigh as control.

A thigh model has no business labelling a calf: a calf series sent to it by mistake, or slices
past the knee, should come back (nearly) empty. This segments real calf images and reports the
share of the body (segment's own body mask) given a thigh label, slice by slice, next to the
same share on the real thigh Dixon, where it should stay high.
- calf MESE (Siemens, first and fourth echo): never used in training;
- dafne calf slices (T1w, PD): their outlines are the negative anatomy of `train --calf-rois`,
  so for a model trained with them these are training images, reported for completeness.
Usage: python benchmarks/segmentation_not_thigh.py [--model FILE ...] [--no-tta] [--record]
--record writes the first model's result into its header (metrics.not_thigh_labelled_fraction).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from myositis_qmri.io import read_volume
from myositis_qmri.io.dicom import read_dicom
from myositis_qmri.segmentation.infer import body_mask, segment_muscles
from myositis_qmri.segmentation.model import default_model_path, read_header, record_metrics
from myositis_qmri.volume import Volume

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


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


def labelled_fraction(image: Volume, model, tta: bool) -> np.ndarray:
    """Per slice: thigh-labelled voxels over body voxels."""
    labels = segment_muscles(image, model, test_time_augmentation=tta).array
    body = body_mask(image.array)
    return (labels > 0).sum(axis=(1, 2)) / np.maximum(body.sum(axis=(1, 2)), 1)


def run(model, tta: bool) -> dict:
    trained_on = (read_header(model or default_model_path()).get("provenance") or {}).get(
        "negative_anatomy") or {}
    print(f"model {model or 'shipped'} (calf negatives in training: {trained_on.get('calf_roi_files', 'none')})")
    summary = {}
    for name, (image, kind) in images().items():
        fraction = labelled_fraction(image, model, tta)
        summary[name] = {"kind": kind, "mean": round(float(fraction.mean()), 3),
                         "per_slice": [round(float(f), 3) for f in fraction]}
        print(f"  {name:26s} mean {fraction.mean():.2f}   per slice " + " ".join(f"{f:.2f}" for f in fraction))
    summary["test_time_augmentation"] = tta
    summary["benchmark"] = "benchmarks/segmentation_not_thigh.py"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, action="append", default=None)
    parser.add_argument("--no-tta", action="store_true", help="without test-time augmentation")
    parser.add_argument("--record", action="store_true", help="write the first model's result into its header")
    args = parser.parse_args()
    models = args.model or [None]
    summaries = [run(model, not args.no_tta) for model in models]
    if args.record:
        print(f"recorded in {record_metrics(models[0], 'not_thigh_labelled_fraction', summaries[0])}")


if __name__ == "__main__":
    main()
