"""Does the network know where it is wrong? Outline confidence against real references.

`segment` records per muscle the mean probability the network gave its label's voxels
(segmentation.infer.outline_confidence); below MIN_OUTLINE_CONFIDENCE the report asks the reader to
check that outline. This measures how well that picks out the outlines that disagree with real
references:
- OAI validation split (22 real T1 thighs traced by hand in groups; a tracing with sartorius and
  gracilis swapped is scored with the two put back): one point per scan and group, the group's
  size-weighted confidence against its Dice.
- IDEAL cases (severely fatty; an nnU-Net's 11 muscles per leg): one point per image and muscle,
  both legs together.
Printed per set: Spearman's rank correlation, the area under the ROC curve for telling outlines with
Dice below 0.8 by low confidence, and the muscles flagged at the limit with their mean Dice against
the rest's. Usage: python benchmarks/segmentation_confidence.py [--model FILE] [--no-tta]
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import mannwhitneyu, spearmanr

from myositis_qmri.io import read_volume
from myositis_qmri.segmentation.infer import MIN_OUTLINE_CONFIDENCE, segment_muscles
from myositis_qmri.segmentation.labels import MUSCLES, OAI_GROUPS, OAI_SARTORIUS_GRACILIS
from myositis_qmri.segmentation.real import (IDEAL_FOLDER, group_dice, oai_split, pooled_confidence,
                                             sartorius_behind_gracilis, sideless_dice)
from segmentation_real import IDEAL_IMAGES, swap_values

POOR_DICE = 0.8


def oai_points(model, tta: bool) -> list[tuple[float, float]]:
    points = []
    for folder in oai_split()[1]:
        truth = read_volume(folder / "labels.nii.gz")
        if sartorius_behind_gracilis(truth):
            truth = swap_values(truth, *OAI_SARTORIUS_GRACILIS)
        predicted = segment_muscles(read_volume(folder / "image.nii.gz"), model, test_time_augmentation=tta)
        dice = group_dice(predicted, truth, OAI_GROUPS)
        points += [(pooled_confidence(predicted, muscles), dice[group])
                   for group, muscles in OAI_GROUPS.muscle_groups().items()]
        print(f"  {folder.name}", flush=True)
    return points


def ideal_points(model, tta: bool) -> list[tuple[float, float]]:
    points = []
    for case in sorted(p for p in IDEAL_FOLDER.iterdir() if (p / "labels.nii.gz").exists()):
        truth = read_volume(case / "labels.nii.gz")
        for name in IDEAL_IMAGES:
            predicted = segment_muscles(read_volume(case / f"{name}.nii.gz"), model, test_time_augmentation=tta)
            dice = sideless_dice(predicted, truth)
            points += [(pooled_confidence(predicted, [m.index], ("right", "left")), dice[m.index]) for m in MUSCLES]
            print(f"  {case.name} {name}", flush=True)
    return points


def summarise(name: str, points) -> dict:
    confidence, dice = (np.array(v, float) for v in zip(*points))
    keep = np.isfinite(confidence) & np.isfinite(dice)
    confidence, dice = confidence[keep], dice[keep]
    poor, flagged = dice < POOR_DICE, confidence < MIN_OUTLINE_CONFIDENCE
    auc = (mannwhitneyu(-confidence[poor], -confidence[~poor]).statistic / (poor.sum() * (~poor).sum())
           if poor.any() and (~poor).any() else float("nan"))
    result = {"points": int(keep.sum()), "spearman": round(float(spearmanr(confidence, dice).statistic), 3),
              "auc_dice_below_0.8": round(float(auc), 3), "flagged": int(flagged.sum()),
              "flagged_mean_dice": round(float(dice[flagged].mean()), 3) if flagged.any() else None,
              "unflagged_mean_dice": round(float(dice[~flagged].mean()), 3) if (~flagged).any() else None,
              "poor_caught": f"{int((poor & flagged).sum())}/{int(poor.sum())}"}
    print(f"{name}: {result['points']} outlines, Spearman {result['spearman']}, AUC for Dice < {POOR_DICE} "
          f"{result['auc_dice_below_0.8']}; below {MIN_OUTLINE_CONFIDENCE}: {result['flagged']} flagged, mean Dice "
          f"{result['flagged_mean_dice']} against {result['unflagged_mean_dice']} for the rest; Dice < {POOR_DICE} "
          f"caught {result['poor_caught']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--no-tta", action="store_true")
    args = parser.parse_args()
    oai = oai_points(args.model, not args.no_tta)
    ideal = ideal_points(args.model, not args.no_tta)
    summarise("OAI validation, groups", oai)
    summarise("IDEAL, muscles", ideal)


if __name__ == "__main__":
    main()
