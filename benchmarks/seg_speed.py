"""Segmentation speed: seconds per ~30-slice volume on this machine's CPU (target <= 10 s on 2 cores).

Runs `segment_muscles` on the real thigh Dixon (../shared/data, 10 slices of 512x256) and on a
30-slice synthetic exam (phantom), each after one warm-up call, and prints the ratio to the target.
No peer segmentation tool (DAFNE, TotalSegmentator) is installed here, so the target is the yardstick.
Usage: python benchmarks/seg_speed.py [--model FILE] [--threads 2]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from myositis_qmri.io import read_volume
from myositis_qmri.phantom import make_exam
from myositis_qmri.segmentation.infer import segment_muscles
from myositis_qmri.volume import Volume

TARGET_S = 10.0
DIXON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dixon3pt_thigh_siemens" / "0006-Dixon_TE_345_th.nii.gz"


def timed(volume: Volume, model) -> float:
    segment_muscles(volume, model)
    start = time.perf_counter()
    segment_muscles(volume, model)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = []
    exam = make_exam(0, "demo").t1w
    # 30 slices: the demo exam's 16 slices and 14 more from a second seed, stacked along z.
    extra = make_exam(1, "demo").t1w
    stacked = np.concatenate([exam.array, extra.array[:14]])
    cases.append(("phantom T1w, 30 x 128 x 224", Volume(stacked, exam.spacing_mm, exam.origin_mm, exam.direction)))
    if DIXON.exists():
        dixon = read_volume(DIXON)
        cases.append(("real Dixon, 10 x 256 x 512", dixon))
        tripled = Volume(np.concatenate([dixon.array] * 3), dixon.spacing_mm, dixon.origin_mm, dixon.direction)
        cases.append(("real Dixon stacked x3, 30 x 256 x 512", tripled))
    for name, volume in cases:
        seconds = timed(volume, args.model)
        print(f"{name}: {seconds:.2f} s  (target {TARGET_S:.0f} s, ratio {seconds / TARGET_S:.2f})")


if __name__ == "__main__":
    main()
