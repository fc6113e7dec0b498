"""Fat-fraction maps of the real cases in ../shared/data, saved as one small PNG for visual checks.

Top: the 3-point thigh Dixon (Siemens, 3 T, TE 3.45/4.60/5.75 ms, raw 0-4095 phase), three slices.
Bottom: the ISMRM 2012 challenge case 17 (1.5 T, 3 echoes), FF and field map.
Usage: .venv/bin/python benchmarks/ff_real_data_png.py [--out benchmarks/ff_dixon3pt_thigh.png]
"""
from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.io import loadmat  # noqa: E402

from myositis_qmri.io.load import load_magnitude_phase  # noqa: E402
from myositis_qmri.maps.dixon import compute_fat_fraction  # noqa: E402
from myositis_qmri.volume import EchoSeries  # noqa: E402

DATA = Path(os.environ.get("MYOSITIS_QMRI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("ff_dixon3pt_thigh.png")))
    args = parser.parse_args()
    files = sorted(glob.glob(str(DATA / "dixon3pt_thigh_siemens" / "*.nii.gz")))
    magnitude, phase = load_magnitude_phase(files, te_ms=[3.45, 4.60, 5.75])
    thigh = compute_fat_fraction("auto", magnitude=magnitude, phase=phase, field_t=3.0)
    params = loadmat(DATA / "ismrm2012_fatwater" / "17.mat")["imDataParams"][0, 0]
    images = np.transpose(params["images"][:, :, :, 0, :], (3, 2, 1, 0)).astype(np.complex64)
    series = EchoSeries(images, params["TE"].ravel() * 1000, image_kind="complex",
                        field_strength_t=float(params["FieldStrength"].ravel()[0]))
    ismrm = compute_fat_fraction("multiecho", complex_series=series,
                                 mask=np.transpose(params["mask"], (2, 1, 0)).astype(bool))

    fig, axes = plt.subplots(2, 3, figsize=(9, 4.6))
    ff = thigh.ff_percent.array
    for ax, z in zip(axes[0], (2, 5, 8)):
        ax.imshow(ff[z], cmap="gray", vmin=0, vmax=100)
        ax.set_title(f"thigh 3-pt Dixon FF, slice {z}", fontsize=8)
    image = axes[1, 0].imshow(ismrm.ff_percent.array[1], cmap="gray", vmin=0, vmax=100)
    axes[1, 0].set_title("ISMRM 2012 #17 FF (%)", fontsize=8)
    fig.colorbar(image, ax=axes[1, 0], fraction=0.046)
    field = axes[1, 1].imshow(ismrm.fieldmap_hz.array[1], cmap="twilight")
    axes[1, 1].set_title("ISMRM #17 field map (Hz)", fontsize=8)
    fig.colorbar(field, ax=axes[1, 1], fraction=0.046)
    axes[1, 2].imshow(thigh.fieldmap_hz.array[5], cmap="twilight")
    axes[1, 2].set_title("thigh field map (Hz), slice 5", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out, dpi=55)
    print(f"wrote {args.out}; thigh method {thigh.metadata['method']}, "
          f"clockwise {thigh.metadata['precession_clockwise']}; ISMRM clockwise {ismrm.metadata['precession_clockwise']}")


if __name__ == "__main__":
    main()
