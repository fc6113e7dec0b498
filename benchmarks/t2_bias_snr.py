"""Water-T2 bias and spread against the truth across SNR, with and without the bias correction.

Simulates 17-echo, 10 ms MESE voxels with the project's own EPG engine (water T2 20-60 ms, FF
0-60 %, B1 0.6-1.2 for the 2d model and 0.6-1.0 for the 3d model, Rician noise at first-echo
SNR 25/35/50/100) and fits them with `fit_signals`, bias correction on (default) and off (plain
maximum likelihood). Prints mean, median and SD of the water-T2 error (ms), the mean over the
fattest voxels (FF 50-60 %), and FF and B1 bias. Not a test; run niced:
    nice .venv/bin/python benchmarks/t2_bias_snr.py [n_voxels]
"""
from __future__ import annotations

import sys

import numpy as np

from myositis_qmri.maps.relaxation import FAT_T1_MS, FAT_T2_MS, WATER_T1_MS
from myositis_qmri.maps.t2 import epg_projector, fit_signals
from myositis_qmri.maps.t2.dictionary import SequenceModel, simulate_trains

N = int(float(sys.argv[1])) if len(sys.argv) > 1 else 20000
SNRS = (25, 35, 50, 100)


def simulated_voxels(profile: str, n: int, rng):
    seq = SequenceModel(17, 10.0, profile)
    t2, ff = rng.uniform(20, 60, n), rng.uniform(0, 0.6, n)
    b1 = rng.uniform(0.6, 1.2 if profile == "2d" else 1.0, n)
    trains = ((1 - ff)[:, None] * simulate_trains(seq, t2, b1, WATER_T1_MS)
              + ff[:, None] * simulate_trains(seq, FAT_T2_MS, b1, FAT_T1_MS))
    return seq, t2, ff, b1, trains


def main() -> None:
    for profile in ("2d", "3d"):
        rng = np.random.default_rng(7)
        seq, t2, ff, b1, trains = simulated_voxels(profile, N, rng)
        proj = epg_projector(seq)
        fatty = ff >= 0.5
        print(f"{profile} model, {N:,} voxels")
        for snr in SNRS:
            sigma = trains[:, 0].mean() / snr
            noise = sigma * (rng.standard_normal(trains.shape) + 1j * rng.standard_normal(trains.shape))
            noisy = np.abs(trains + noise)
            for corrected in (True, False):
                fit = fit_signals(proj, noisy, 2 * sigma ** 2, bias_correction=corrected)
                error = fit["t2"] - t2
                print(f"  SNR {snr:3d} {'corrected' if corrected else 'plain ML ':9s}  T2 mean {np.mean(error):+.2f}"
                      f"  median {np.median(error):+.2f}  SD {np.std(error):5.2f}  FF 50-60 % mean"
                      f" {np.mean(error[fatty]):+.2f} ms;  FF {np.mean(fit['ff'] - 100 * ff):+.2f} points,"
                      f" B1 {np.mean(fit['b1'] - b1):+.3f}")


if __name__ == "__main__":
    main()
