"""Water-T2 throughput of the whole volume fit (fit_water_t2) on a simulated 17-echo MESE volume.

Builds an (echo, z, y, x) volume whose mask holds N voxels (default 3 million) of 2d-profile
EPG water/fat trains with Rician noise (SNR 50), caches the dictionary with a first small fit,
then times `fit_water_t2` on the whole volume: wall time, process CPU time, and peak memory.
On a shared machine wall time depends on the load, so the CPU time per voxel is printed too,
with the wall time it implies on idle cores. Not a test; run niced:
    nice .venv/bin/python benchmarks/t2_speed.py [n_voxels] [profile]
"""
from __future__ import annotations

import os
import resource
import sys
import time

import numpy as np

from myositis_qmri.maps.relaxation import FAT_T1_MS, FAT_T2_MS, WATER_T1_MS
from myositis_qmri.maps.t2 import fit_water_t2
from myositis_qmri.maps.t2.dictionary import SequenceModel, simulate_trains
from myositis_qmri.maps.t2.projection import fit_threads
from myositis_qmri.volume import EchoSeries, Volume

N = int(float(sys.argv[1])) if len(sys.argv) > 1 else 3_000_000
PROFILE = sys.argv[2] if len(sys.argv) > 2 else "2d"
TE_MS = 10.0 * np.arange(1, 18)
SIDE = 320


def simulate_volume(n_voxels: int, rng):
    """A volume of SIDE x SIDE slices whose first n_voxels voxels (in C order) are tissue."""
    seq = SequenceModel(17, 10.0, PROFILE)
    n_z = int(np.ceil(n_voxels / SIDE ** 2))
    distinct = 20000            # distinct tissue trains, tiled: simulation is not what is timed
    t2, ff = rng.uniform(20, 60, distinct), rng.uniform(0, 0.6, distinct)
    b1 = rng.uniform(0.7, 1.1 if PROFILE == "2d" else 1.0, distinct)
    trains = ((1 - ff)[:, None] * simulate_trains(seq, t2, b1, WATER_T1_MS)
              + ff[:, None] * simulate_trains(seq, FAT_T2_MS, b1, FAT_T1_MS)).astype(np.float32)
    array = np.zeros((17, n_z * SIDE * SIDE), np.float32)
    pick = rng.integers(0, distinct, n_voxels)
    array[:, :n_voxels] = 1000 * trains[pick].T
    sigma = np.float32(1000 / 50)
    for e in range(17):          # Rician noise, echo by echo to bound memory
        re = array[e] + sigma * rng.standard_normal(array.shape[1], dtype=np.float32)
        im = sigma * rng.standard_normal(array.shape[1], dtype=np.float32)
        array[e] = np.hypot(re, im)
    mask = np.zeros(n_z * SIDE * SIDE, np.uint8)
    mask[:n_voxels] = 1
    shape = (n_z, SIDE, SIDE)
    geometry = dict(spacing_mm=(1.0, 1.0, 5.0), origin_mm=(0.0, 0.0, 0.0))
    series = EchoSeries(array.reshape((17,) + shape), tuple(TE_MS), geometry["spacing_mm"],
                        geometry["origin_mm"], metadata={"MRAcquisitionType": PROFILE.upper()})
    truth = {"t2": t2[pick], "ff": ff[pick], "b1": b1[pick]}
    return series, Volume(mask.reshape(shape), geometry["spacing_mm"], geometry["origin_mm"]), truth, 2 * sigma ** 2


def main():
    rng = np.random.default_rng(0)
    series, mask, truth, noise_power = simulate_volume(N, rng)
    small = series.replace(array=series.array[:, :1])
    fit_water_t2(small, mask=mask.with_array(mask.array[:1]), noise_power=noise_power)  # cache dictionary
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu, wall = time.process_time(), time.perf_counter()
    maps = fit_water_t2(series, mask=mask, noise_power=noise_power)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    inside = mask.array > 0
    err = maps.water_t2_ms.array[inside] - truth["t2"]
    threads = fit_threads()
    print(f"fit_water_t2, {PROFILE} model, {N:,} voxels, 17 echoes, {threads} fit threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  wall {wall:.1f} s = {N / wall:,.0f} voxels/s; CPU {cpu:.1f} s = {N / cpu:,.0f} voxels per CPU-second")
    print(f"  on {threads} idle cores this is about {cpu / threads:.1f} s "
          f"({N * threads / cpu:,.0f} voxels/s); target <= 15 s for 3 million voxels")
    print(f"  peak memory {peak:.0f} MB (input volume {series.array.nbytes / 2**20:.0f} MB; "
          f"{rss_before:.0f} MB before the fit); target < 4096 MB")
    print(f"  water T2 error: median {np.nanmedian(err):+.2f} ms, mean {np.nanmean(err):+.2f} ms, "
          f"sd {np.nanstd(err):.2f} ms")


if __name__ == "__main__":
    main()
