"""Segment the real thigh Dixon (../shared/data) and save a PNG overlay of three slices.

Usage: python benchmarks/seg_overlay.py [IMAGE] [--model FILE] [--out benchmarks/seg_overlay_dixon_thigh.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from myositis_qmri.io import read_volume  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from myositis_qmri.segmentation.canonical import reorient  # noqa: E402
from myositis_qmri.segmentation.infer import segment_muscles  # noqa: E402
from myositis_qmri.segmentation.labels import LABELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "dixon3pt_thigh_siemens" / "0006-Dixon_TE_345_th.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "seg_overlay_dixon_thigh.png")
    args = parser.parse_args()
    image = read_volume(args.image)
    labels_volume = segment_muscles(image, args.model)
    # Display radiologically (patient right on the image left): reorient both to LPS.
    shown = sitk.GetArrayFromImage(reorient(image.to_sitk()))
    labels = sitk.GetArrayFromImage(reorient(labels_volume.to_sitk()))
    colours = np.zeros((23, 4))
    for label in LABELS:
        colours[label.value, :3] = np.array(label.colour_rgb) / 255
        colours[label.value, 3] = 0.45
    cmap = ListedColormap(colours)
    slices = np.linspace(1, image.array.shape[0] - 2, 3).round().astype(int)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, z in zip(axes, slices):
        ax.imshow(shown[z], cmap="gray", vmax=np.percentile(shown, 99.5))
        ax.imshow(labels[z], cmap=cmap, vmin=0, vmax=22, interpolation="nearest")
        ax.set_title(f"slice {z}: {len(np.unique(labels[z])) - 1} muscles")
        ax.axis("off")
    fig.suptitle(f"{args.image.name} (muscles right 1-11, left 12-22)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=70)
    print(args.out, "labels found:", sorted(set(np.unique(labels)) - {0}))


if __name__ == "__main__":
    main()
