"""Segmentation accuracy on real labelled thighs: the yardstick (rendered volumes are a development aid).

- OAI validation split (segmentation/real.py: every 5th subject by id, never trained on): real T1
  thighs traced by hand in muscle groups on the right thigh. Dice per group, per scan, and the mean,
  against the targets (mean >= 0.92, every group >= 0.85, no scan below 0.80).
- IDEAL cases (../shared/data/thigh_ideal_predicted, severely fatty): water and fat images, 11
  muscles per leg (an nnU-Net's predictions, so agreement above ~0.85 is not expected). Dice per
  muscle, both legs together, per image, against the target (mean >= 0.80). A case the model was
  trained on (its header's provenance.real_cases) is printed but left out of the mean. Hip end:
  thigh labels given outside the labelled muscles on the three most proximal labelled slices.
Every model given is run side by side (default: the shipped one).
Usage: python benchmarks/segmentation_real.py [--model FILE ...] [--no-tta] [--record] [--oai-only|--ideal-only]
--record writes the first model's results into its header (metrics.real_oai_validation, metrics.real_ideal).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from myositis_qmri.geometry import align_labels_to
from myositis_qmri.io import read_volume
from myositis_qmri.segmentation.infer import segment_muscles
from myositis_qmri.segmentation.labels import MUSCLES, OAI_GROUPS, OAI_SARTORIUS_GRACILIS
from myositis_qmri.segmentation.model import default_model_path, read_header, record_metrics
from myositis_qmri.segmentation.real import (IDEAL_FOLDER, group_dice, oai_split, sartorius_behind_gracilis,
                                             sideless_dice)

OAI_TARGETS = {"mean": 0.92, "group": 0.85, "scan": 0.80}
IDEAL_TARGET = 0.80
IDEAL_IMAGES = ("water", "fat")


def swap_values(truth, a: int, b: int):
    array = np.rint(truth.array).astype(np.int16)
    return truth.with_array(np.where(array == a, b, np.where(array == b, a, array)).astype(np.int16))


def summarise_oai(table: np.ndarray) -> dict:
    per_group, per_scan = np.nanmean(table, axis=0), np.nanmean(table, axis=1)
    return {"mean_dice": round(float(np.nanmean(table)), 4), "lowest_group_dice": round(float(per_group.min()), 4),
            "lowest_scan_dice": round(float(per_scan.min()), 4)}


def oai_validation(model, tta: bool) -> dict:
    """Group Dice on every OAI validation subject, against the tracings as they are; a tracing with
    sartorius and gracilis swapped is flagged and also scored with the two values put back."""
    _, validation = oai_split()
    groups = sorted(OAI_GROUPS.muscle_groups())
    table, fixed, swapped, started = [], [], [], time.time()
    for folder in validation:
        image, truth = read_volume(folder / "image.nii.gz"), read_volume(folder / "labels.nii.gz")
        predicted = segment_muscles(image, model, test_time_augmentation=tta)
        dice = group_dice(predicted, truth, OAI_GROUPS)
        table.append([dice[g] for g in groups])
        flag = sartorius_behind_gracilis(truth)
        if flag:
            swapped.append(folder.name)
            dice = group_dice(predicted, swap_values(truth, *OAI_SARTORIUS_GRACILIS), OAI_GROUPS)
        fixed.append([dice[g] for g in groups])
        print(f"  {folder.name}  mean {np.nanmean(table[-1]):.3f}  "
              + " ".join(f"{OAI_GROUPS.names[g][:6]} {d:.2f}" for g, d in zip(groups, table[-1]))
              + (f"  (tracing has sartorius behind gracilis: swapped back {np.nanmean(fixed[-1]):.3f})"
                 if flag else ""))
    table, fixed = np.array(table), np.array(fixed)
    result = {**summarise_oai(table),
              "dice": {OAI_GROUPS.names[g]: round(float(d), 4) for g, d in zip(groups, np.nanmean(table, axis=0))},
              "tracings_with_sartorius_and_gracilis_swapped": swapped,
              "with_those_swapped_back": summarise_oai(fixed),
              "subjects": [f.name for f in validation], "test_time_augmentation": tta,
              "seconds_per_scan": round((time.time() - started) / len(validation), 1),
              "benchmark": "benchmarks/segmentation_real.py"}
    for name, scores in (("as traced", result), ("swaps put back", result["with_those_swapped_back"])):
        ok = (scores["mean_dice"] >= OAI_TARGETS["mean"] and scores["lowest_group_dice"] >= OAI_TARGETS["group"]
              and scores["lowest_scan_dice"] >= OAI_TARGETS["scan"])
        print(f"OAI validation ({len(validation)} scans, {name}): mean group Dice {scores['mean_dice']:.3f} "
              f"(target {OAI_TARGETS['mean']}, ratio {scores['mean_dice'] / OAI_TARGETS['mean']:.3f}); lowest "
              f"group {scores['lowest_group_dice']:.3f}, lowest scan {scores['lowest_scan_dice']:.3f} "
              f"-> {'meets' if ok else 'misses'} the targets")
    return result


def trained_cases(model) -> set:
    """Folder names of the IDEAL cases the model was trained on (its header's real_cases)."""
    header = read_header(model if model is not None else default_model_path())
    return {case["folder"] for case in (header.get("provenance", {}).get("real_cases") or [])}


HIP_END_SLICES = 3   # the most proximal labelled slices of an IDEAL stack (hip and pelvis level)


def hip_end_excess(predicted, truth) -> float:
    """Predicted thigh-muscle area outside every labelled muscle from the HIP_END_SLICES-th most
    proximal labelled slice up (unlabelled slices above included), as a share of the labelled area
    there: gluteal, iliopsoas, obturator or quadratus femoris voxels given a thigh label (and adductor
    longus or brevis, which the labels leave out, so 0 is not reachable)."""
    truth = align_labels_to(truth, predicted)
    heights = np.array([predicted.geometry.index_to_physical([0, 0, z])[2]            # LPS +z: superior
                        for z in range(truth.array.shape[0])])
    labelled = (truth.array > 0).any(axis=(1, 2))
    top = np.flatnonzero(heights >= np.sort(heights[labelled])[-HIP_END_SLICES])
    traced, found = truth.array[top] > 0, predicted.array[top] > 0
    return float((found & ~traced).sum() / max(traced.sum(), 1))


def ideal_cases(model, tta: bool) -> dict:
    """Per-muscle Dice (both legs) on the water and fat images of each IDEAL case; the mean is
    over the cases the model never saw (a case it was trained on is printed, marked, and left out)."""
    rows, excess, trained = {}, {}, trained_cases(model)
    for case in sorted(p for p in IDEAL_FOLDER.iterdir() if (p / "labels.nii.gz").exists()):
        truth = read_volume(case / "labels.nii.gz")
        for name in IDEAL_IMAGES:
            predicted = segment_muscles(read_volume(case / f"{name}.nii.gz"), model, test_time_augmentation=tta)
            dice = sideless_dice(predicted, truth)
            rows[f"{case.name} {name}"] = dice
            excess[f"{case.name} {name}"] = hip_end_excess(predicted, truth)
            print(f"  {case.name} {name:5s} mean {np.nanmean(list(dice.values())):.3f}  "
                  + " ".join(f"{m.abbreviation} {dice[m.index]:.2f}" for m in MUSCLES)
                  + f"  hip-end excess {100 * excess[f'{case.name} {name}']:.0f} %"
                  + ("  (trained on)" if case.name in trained else ""))
    held_out = {k: v for k, v in rows.items() if k.split()[0] not in trained}
    table = np.array([[d[m.index] for m in MUSCLES] for d in held_out.values()])
    result = {"mean_dice": round(float(np.nanmean(table)), 4),
              "dice_per_image": {k: round(float(np.nanmean(list(v.values()))), 4) for k, v in rows.items()},
              "dice": {m.key: round(float(d), 4) for m, d in zip(MUSCLES, np.nanmean(table, axis=0))},
              "hip_end_excess": {k: round(v, 3) for k, v in excess.items()},
              "trained_on": sorted(trained), "mean_over": sorted({k.split()[0] for k in held_out}),
              "test_time_augmentation": tta, "benchmark": "benchmarks/segmentation_real.py"}
    print(f"IDEAL cases never trained on: mean Dice {result['mean_dice']:.3f} (target {IDEAL_TARGET}, "
          f"ratio {result['mean_dice'] / IDEAL_TARGET:.3f}); per image "
          + ", ".join(f"{k} {v:.3f}" for k, v in result["dice_per_image"].items())
          + (f"; trained on {', '.join(sorted(trained))}" if trained else ""))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="model file (repeatable; default shipped)")
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--record", action="store_true")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--oai-only", action="store_true")
    only.add_argument("--ideal-only", action="store_true")
    args = parser.parse_args()
    models = args.model or [None]
    results = {}
    for model in models:
        print(f"== model {model or 'shipped'}")
        results[model] = {}
        if not args.ideal_only:
            results[model]["real_oai_validation"] = oai_validation(model, not args.no_tta)
        if not args.oai_only:
            results[model]["real_ideal"] = ideal_cases(model, not args.no_tta)
    print("== side by side")
    for key in ("real_oai_validation", "real_ideal"):
        line = [f"{model or 'shipped'} {r[key]['mean_dice']:.3f}" for model, r in results.items() if key in r]
        if line:
            print(f"{key}: " + " | ".join(line))
    if args.record:
        for key, value in results[models[0]].items():
            record_metrics(models[0], key, value)


if __name__ == "__main__":
    main()
