"""Label-free segmentation check on a real scan: agreement across the contrasts of one Dixon exam.

The real 3-point thigh Dixon in ../shared/data gives six co-registered images of one subject:
the water and fat images (this project's Dixon fit), their sum, and the three echo magnitudes.
Each is segmented on its own, and every pair is compared (mean Dice over all 22 labels). Two
segmentations of the same anatomy cannot both be right where they differ, so this is a floor
under the error on real images, which the rendered volumes (segmentation_volumes.py) cannot give.
--resolutions also segments two of the images resampled to coarser in-plane grids (as other
scanners and protocols would give) and compares each with the full-resolution segmentation.
--musclemap DIR (SWastling/musclemap's tests/test_data, MIT; not in ../shared) adds a second
subject: a GE thigh Dixon whose muscles are patchily fatty, its three echoes (opposed, in and
opposed phase at 3 T) segmented apart and compared the same way.
Usage: python benchmarks/segmentation_real_agreement.py [--model FILE ...] [--no-tta] [--record]
                                                      [--resolutions] [--musclemap DIR]
Several --model files are compared side by side; --record writes the first one's result into
its header (metrics.real_cross_contrast_agreement, metrics.real_cross_echo_agreement_fatty_thigh).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from myositis_qmri.geometry import resample_to
from myositis_qmri.io import read_volume
from myositis_qmri.io.load import load_magnitude_phase
from myositis_qmri.maps.dixon import compute_fat_fraction
from myositis_qmri.segmentation.infer import segment_muscles
from myositis_qmri.segmentation.model import dice_per_label, record_metrics
from myositis_qmri.segmentation.validate import cross_contrast_agreement
from myositis_qmri.volume import Volume

DIXON = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dixon3pt_thigh_siemens"
ECHO_TIMES_MS = (3.45, 4.60, 5.75)
COARSER_PIXELS_MM = (1.2, 1.6, 2.0, 2.5)
FATTY_THIGH = "ff/ge/thigh/input"   # under musclemap's tests/test_data: TE 3.45, 4.60, 5.75 ms magnitudes
END_SLICES = 2   # slices at each end of the stack, reported apart (the anatomy changes fastest there)


def dixon_images(folder: Path = DIXON) -> dict:
    """The six co-registered images of the real Dixon exam, by name."""
    magnitude, phase = load_magnitude_phase(sorted(folder.glob("*.nii.gz")), te_ms=list(ECHO_TIMES_MS))
    maps = compute_fat_fraction("auto", magnitude=magnitude, phase=phase, field_t=3.0)
    images = {"water": maps.water, "fat": maps.fat,
              "water+fat": maps.water.with_array(maps.water.array + maps.fat.array)}
    images.update({f"echo {te:.2f} ms": magnitude.echo(i) for i, te in enumerate(ECHO_TIMES_MS)})
    return images


def fatty_thigh_images(folder: Path) -> dict:
    """The GE thigh Dixon's three echo magnitudes, by echo time (the file names carry it)."""
    files = sorted((folder / FATTY_THIGH).glob("*.nii.gz"))
    if len(files) != 3:
        raise SystemExit(f"{folder / FATTY_THIGH}: expected the three echo files")
    return {f"echo {te:.2f} ms": read_volume(path) for te, path in zip(ECHO_TIMES_MS, files)}


def run(images: dict, model, tta: bool):
    """(summary for the header, the agreement result) of one model."""
    result = cross_contrast_agreement(images, model, test_time_augmentation=tta)
    names = result.images
    print(f"model {model or 'shipped'}, test-time augmentation {'on' if tta else 'off'}")
    print(" " * 14 + "".join(f"{n[:12]:>13s}" for n in names))
    for a in names:
        row = [1.0 if a == b else result.dice.get((a, b), result.dice.get((b, a))) for b in names]
        print(f"{a[:12]:14s}" + "".join(f"{d:13.3f}" for d in row))
    per_slice = np.array(list(result.dice_per_slice.values()))
    middle = per_slice[:, END_SLICES:-END_SLICES] if per_slice.shape[1] > 2 * END_SLICES else per_slice
    summary = {"mean_dice": round(result.mean_dice, 4), "lowest_pair_dice": round(min(result.dice.values()), 4),
               "middle_slices_dice": round(float(np.nanmean(middle)), 4),
               "dice_per_slice": [round(float(d), 4) for d in np.nanmean(per_slice, axis=0)],
               "images": names, "test_time_augmentation": tta,
               "benchmark": "benchmarks/segmentation_real_agreement.py"}
    print(f"mean pairwise Dice {summary['mean_dice']:.3f} (lowest pair {summary['lowest_pair_dice']:.3f}); "
          f"without the {END_SLICES} end slices each side {summary['middle_slices_dice']:.3f}; per slice "
          + " ".join(f"{d:.2f}" for d in summary["dice_per_slice"]))
    return summary, result


def coarser_in_plane(image: Volume, pixel_mm: float) -> Volume:
    """The image as a scanner with `pixel_mm` in-plane pixels would give it (blurred, resampled)."""
    original = image.to_sitk()
    spacing, size = original.GetSpacing(), original.GetSize()
    new_size = [int(round(size[i] * spacing[i] / pixel_mm)) for i in range(2)] + [size[2]]
    blurred = sitk.SmoothingRecursiveGaussian(original, [0.5 * pixel_mm, 0.5 * pixel_mm, 0.01])
    coarse = sitk.Resample(blurred, new_size, sitk.Transform(), sitk.sitkLinear, original.GetOrigin(),
                           (pixel_mm, pixel_mm, spacing[2]), original.GetDirection(), 0.0)
    return Volume.from_sitk(coarse)


def resolution_consistency(images: dict, full_labels: dict, model, tta: bool,
                           names=("water", "echo 4.60 ms")) -> None:
    """Dice between each image's segmentation (full_labels, from the agreement run) and that of
    its coarser copies, their labels brought back to its grid."""
    for name in names:
        image, full = images[name], full_labels[name]
        for pixel_mm in COARSER_PIXELS_MM:
            coarse = segment_muscles(coarser_in_plane(image, pixel_mm), model, test_time_augmentation=tta)
            back = resample_to(coarse, image.geometry, "nearest").array
            dice = np.array(list(dice_per_label(back, full, range(1, 23)).values()))
            print(f"{name} at {pixel_mm} mm in-plane (acquired {image.spacing_mm[0]:.2f} mm): Dice against "
                  f"the full-resolution segmentation {np.nanmean(dice):.3f}, lowest label {np.nanmin(dice):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, action="append", default=None)
    parser.add_argument("--no-tta", action="store_true", help="without test-time augmentation")
    parser.add_argument("--record", action="store_true", help="write the first model's result into its header")
    parser.add_argument("--resolutions", action="store_true", help="also compare coarser in-plane grids")
    parser.add_argument("--musclemap", type=Path, default=None, metavar="DIR",
                        help="musclemap's tests/test_data: adds its fatty GE thigh (a second subject)")
    args = parser.parse_args()
    if not DIXON.exists():
        raise SystemExit(f"{DIXON} not found (the shared data)")
    images = dixon_images()
    models = args.model or [None]
    runs = [run(images, model, tta=not args.no_tta) for model in models]
    summaries = [summary for summary, _ in runs]
    if len(models) > 1:
        base = summaries[0]["mean_dice"]
        for model, summary in zip(models, summaries):
            print(f"{str(model):60s} mean {summary['mean_dice']:.3f}  ratio to first {summary['mean_dice'] / base:.3f}")
    if args.record:
        print(f"recorded in {record_metrics(models[0], 'real_cross_contrast_agreement', summaries[0])}")
    if args.resolutions:
        resolution_consistency(images, runs[0][1].labels, models[0], tta=not args.no_tta)
    if args.musclemap:
        fatty = fatty_thigh_images(args.musclemap)
        fatty_summaries = [run(fatty, model, tta=not args.no_tta)[0] for model in models]
        if args.record:
            print(f"recorded in {record_metrics(models[0], 'real_cross_echo_agreement_fatty_thigh', fatty_summaries[0])}")


if __name__ == "__main__":
    main()
