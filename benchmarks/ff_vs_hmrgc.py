"""Multi-echo fat-water separation side by side with hmrGC on the same simulated data.

hmrGC (BMRRgroup/fieldmapping-hmrGC, GPL) is not a dependency: clone it and install its
requirements (numba, PyMaxflow, opencv-python-headless, scipy) into a separate venv, then

  HMRGC_SRC=/tmp/hmrgc HMRGC_PYTHON=/tmp/hmrgc_venv/bin/python \
      nice .venv/bin/python benchmarks/ff_vs_hmrgc.py [--shape 16 128 128] [--large]

Both get the same 6-echo complex data (6-peak fat, FF 0-100 %, R2* 20-200 1/s, smooth B0 up to
+-400 Hz with phase wraps, SNR 50) and 2 threads. Printed: run time, speed ratio, PDFF bias and
swapped voxels (tissue voxels whose FF is off by more than 30 points). `--large` also times ours
on a 6-echo 256x256x30 volume.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from myositis_qmri.maps.dixon.multiecho import separate_complex
from myositis_qmri.maps.dixon.simulate import simulate_gre
from myositis_qmri.maps.fat_spectrum import FAT_PEAK_AMPLITUDES, FAT_PEAKS_PPM, GYROMAGNETIC_MHZ_PER_T

SPACING_ZYX = (4.0, 1.5, 1.5)

HMRGC_RUNNER = """
import sys, time, numpy as np, numba
numba.set_num_threads(2)
sys.path.insert(0, sys.argv[1])
from hmrGC.dixon_imaging import MultiEcho
d = np.load(sys.argv[2])
signal = np.transpose(d['signal'], (3, 2, 1, 0))            # (echo,z,y,x) -> (x,y,z,echo)
mask = np.transpose(d['mask'], (2, 1, 0))
params = {'TE_s': d['te_ms'] / 1000, 'fieldStrength_T': float(d['field_t']),
          'centerFreq_Hz': float(d['field_t']) * float(d['gamma_mhz']) * 1e6,
          'voxelSize_mm': d['voxel_mm'], 'FatModel': {'freqs_ppm': d['peaks_ppm'], 'relAmps': d['amps']}}
def run(sig, msk):
    g = MultiEcho(sig, msk, params)
    g.verbose = False
    g.perform()
    return g
run(signal[:32, :32, :2].copy(), mask[:32, :32, :2].copy())   # warm-up: numba compiles here
start = time.perf_counter()
g = run(signal, mask)
elapsed = time.perf_counter() - start
np.savez(sys.argv[3], ff=np.transpose(g.images['fatFraction_percent'], (2, 1, 0)),
         field=np.transpose(g.fieldmap, (2, 1, 0)), seconds=elapsed)
"""


def swapped_and_bias(ff_percent, sim):
    err = ff_percent[sim.tissue] - 100 * sim.ff[sim.tissue]
    return int(np.count_nonzero(np.abs(err) > 30)), float(np.mean(err[np.abs(err) <= 30]))


def run_ours(sim):
    start = time.perf_counter()
    out = separate_complex(sim.signal, sim.echo_times_ms, sim.field_t, SPACING_ZYX)
    return 100 * out["ff"], out["mask"], time.perf_counter() - start


def run_hmrgc(sim, mask, src: str, python: str):
    with tempfile.TemporaryDirectory() as tmp:
        data, result = Path(tmp) / "data.npz", Path(tmp) / "result.npz"
        np.savez(data, signal=sim.signal, mask=mask, te_ms=sim.echo_times_ms, field_t=sim.field_t,
                 gamma_mhz=GYROMAGNETIC_MHZ_PER_T, voxel_mm=np.array(SPACING_ZYX[::-1]),
                 peaks_ppm=FAT_PEAKS_PPM, amps=FAT_PEAK_AMPLITUDES / FAT_PEAK_AMPLITUDES.sum())
        env = {**os.environ, "BMRR_USE_GPU": "0", "NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
        wall = time.perf_counter()
        subprocess.run([python, "-c", HMRGC_RUNNER, src, str(data), str(result)], check=True, env=env)
        wall = time.perf_counter() - wall
        r = np.load(result)
        return np.nan_to_num(r["ff"]), float(r["seconds"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(16, 128, 128), metavar=("Z", "Y", "X"))
    parser.add_argument("--large", action="store_true", help="also time ours on 6-echo 256x256x30")
    args = parser.parse_args()
    sim = simulate_gre(tuple(args.shape), snr=50.0, field_amplitude_hz=400.0, seed=7)
    ff, mask, ours_s = run_ours(sim)
    swaps, bias = swapped_and_bias(ff, sim)
    print(f"data: 6 echoes {tuple(args.shape)} at {sim.field_t} T, {int(sim.tissue.sum())} tissue voxels")
    print(f"ours : {ours_s:7.2f} s  swapped voxels {swaps:6d}  bias {bias:+.2f} points")
    src, python = os.environ.get("HMRGC_SRC"), os.environ.get("HMRGC_PYTHON")
    if src and python:
        ff_h, hmrgc_s, wall = run_hmrgc(sim, mask, src, python)
        swaps_h, bias_h = swapped_and_bias(ff_h, sim)
        print(f"hmrGC: {hmrgc_s:7.2f} s  swapped voxels {swaps_h:6d}  bias {bias_h:+.2f} points "
              f"(after a numba warm-up; process wall {wall:.1f} s)")
        print(f"speed ratio hmrGC / ours: {hmrgc_s / ours_s:.2f}x")
    else:
        print("hmrGC skipped: set HMRGC_SRC and HMRGC_PYTHON (see the module docstring)", file=sys.stderr)
    if args.large:
        big = simulate_gre((30, 256, 256), snr=50.0, field_amplitude_hz=400.0, seed=8)
        ff_big, _, big_s = run_ours(big)
        swaps_big, bias_big = swapped_and_bias(ff_big, big)
        print(f"ours 256x256x30, 6 echoes: {big_s:.1f} s  swapped voxels {swaps_big}  bias {bias_big:+.2f} points")


if __name__ == "__main__":
    main()
