"""Water-T2 speed and accuracy against MyoQMRI's waterT2 (CPU) and a scipy curve_fit baseline.

Simulates 17-echo, 10 ms MESE voxels (2d slice-profile model, Rician noise SNR 50), fits them
with myositis_qmri, a per-voxel scipy mono-exponential curve_fit, and (when a venv with
`pip install myoqmri` exists at $MYOQMRI_VENV, default /tmp/myoqmri-venv) MyoQMRI's waterT2 on
a 4-D NIfTI with a JSON sidecar, then prints voxels/s, ratios, T2 spread against the truth,
the extrapolated time for 3 million voxels and peak memory. Not a test; run niced:
    nice .venv/bin/python benchmarks/t2_vs_myoqmri.py [n_voxels] [myoqmri|ours] [snr]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.optimize import curve_fit

from myositis_qmri.maps.relaxation import FAT_T1_MS, FAT_T2_MS, WATER_T1_MS
from myositis_qmri.maps.t2 import epg_projector, fit_signals
from myositis_qmri.maps.t2.dictionary import SequenceModel, simulate_trains
from myositis_qmri.volume import Volume

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
SOURCE = sys.argv[2] if len(sys.argv) > 2 else "myoqmri"     # "myoqmri" or "ours": whose model simulates
SNR = float(sys.argv[3]) if len(sys.argv) > 3 else 50.0       # first-echo SNR
MYOQMRI_VOXELS = 2000         # MyoQMRI fits ~200 voxels/s: keep its share short
TE = 10.0 * np.arange(1, 18)


# Trains from MyoQMRI's own slice-profile model (its FatFractionLookup._signalCalc: SLR-style
# profiles, each train scaled to max 1, mixed by FF as MyoQMRI mixes them). Its waterT2 CLI
# takes `--refocusing-width 1.2` (the default) and passes 1.2 - 1 = 0.2 to FatFractionLookup,
# so the simulation must pass 0.2 too: passing 1.2 simulates a refocusing slice 2.2x wide,
# which the CLI (fitting with 0.2) then reads about 9 ms short.
MYOQMRI_SIM = """
import sys, numpy as np
from MyoQMRI.waterT2.FatFractionLookup import FatFractionLookup
t2, ff, b1 = np.load(sys.argv[1]).T
lookup = FatFractionLookup((20, 80), (0.5, 1.2), 151.0, 17, 10.0, 0.2)
water = np.array([lookup._signalCalc(lookup.T1w, a, b) for a, b in zip(t2, b1)])
fat = np.array([lookup._signalCalc(lookup.T1f, 151.0, b) for b in b1])
np.save(sys.argv[2], (1 - ff)[:, None] * water + ff[:, None] * fat)
"""


def myoqmri_trains(t2, ff, b1):
    """Noise-free trains from MyoQMRI's model, or None when its venv is absent."""
    python = Path(os.environ.get("MYOQMRI_VENV", "/tmp/myoqmri-venv")) / "bin" / "python"
    if not python.exists():
        return None
    work = Path(tempfile.mkdtemp(prefix="myoqmri-sim-"))
    np.save(work / "params.npy", np.stack([t2, ff, b1], axis=1))
    subprocess.run([str(python), "-c", MYOQMRI_SIM, str(work / "params.npy"), str(work / "trains.npy")],
                   check=True, capture_output=True, timeout=900)
    return np.load(work / "trains.npy")


def simulate(n, rng):
    seq = SequenceModel(17, 10.0, "2d")
    t2, ff, b1 = rng.uniform(20, 60, n), rng.uniform(0, 0.6, n), rng.uniform(0.7, 1.1, n)
    s = None
    if SOURCE == "myoqmri":
        distinct = min(n, 5000)      # MyoQMRI's simulator is slow; tile distinct voxels
        trains = myoqmri_trains(t2[:distinct], ff[:distinct], b1[:distinct])
        if trains is not None:
            pick = np.arange(n) % distinct
            t2, ff, b1, s = t2[pick], ff[pick], b1[pick], trains[pick]
    if s is None:
        s = (1 - ff)[:, None] * simulate_trains(seq, t2, b1, WATER_T1_MS) + ff[:, None] * simulate_trains(
            seq, FAT_T2_MS, b1, FAT_T1_MS)
    sigma = s[:, 0].mean() / SNR
    noisy = np.abs(s + sigma * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape)))
    return seq, t2, ff, noisy * 1000, 2 * (1000 * sigma) ** 2


def spread(estimate, truth):
    err = estimate - truth
    ok = np.isfinite(err)
    return (f"bias {np.mean(err[ok]):+.2f} ms, sd {np.std(err[ok]):.2f} ms, median abs error "
            f"{np.median(np.abs(err[ok])):.2f} ms, MAE {np.mean(np.abs(err[ok])):.2f} ms")


def run_ours(seq, signals, noise_power):
    proj = epg_projector(seq)           # dictionary cached (built on first run)
    fit_signals(proj, signals[:1000], noise_power)
    start = time.perf_counter()
    fit = fit_signals(proj, signals, noise_power)
    return fit, len(signals) / (time.perf_counter() - start)


def run_default_volume(signals, noise_power):
    """The whole default path (fit_water_t2 on a header-less 4-D image: slice-profile
    calibration included): which model it picks on these trains, and the water T2 it gives."""
    from myositis_qmri.maps.t2 import fit_water_t2
    from myositis_qmri.volume import EchoSeries
    n = len(signals)
    side = int(np.ceil(np.sqrt(n)))
    array = np.zeros((TE.size, 1, side, side), np.float32)
    array.reshape(TE.size, -1)[:, :n] = signals.T
    mask = np.zeros((1, side, side), bool)
    mask.reshape(-1)[:n] = True
    maps = fit_water_t2(EchoSeries(array, tuple(TE), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0)),
                        mask=Volume(mask.astype(np.uint8), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0)),
                        noise_power=noise_power)
    calibration = maps.info.get("slice_profile_calibration", {})
    model = f"{maps.info['profile']}" + (f" ratio {maps.info['refocusing_width_ratio']}"
                                         if maps.info["profile"] == "2d" else "")
    return model, calibration.get("median_chi2_gain"), maps.water_t2_ms.array[mask]


def run_curve_fit(signals, n=2000):
    model = lambda te, a, t2: a * np.exp(-te / t2)
    out = np.full(n, np.nan)
    start = time.perf_counter()
    for i in range(n):
        try:
            out[i] = curve_fit(model, TE, signals[i], p0=(signals[i, 0] * 1.5, 40.0), maxfev=200)[0][1]
        except RuntimeError:
            pass
    return out, n / (time.perf_counter() - start)


def run_myoqmri(signals):
    venv = Path(os.environ.get("MYOQMRI_VENV", "/tmp/myoqmri-venv"))
    exe = venv / "bin" / "waterT2"
    if not exe.exists():
        return None, None, "MyoQMRI not installed (pip install myoqmri into $MYOQMRI_VENV)"
    n = len(signals)
    side = int(np.ceil(np.sqrt(n)))
    vol = np.zeros((side, side, 1, 17), np.float32)
    vol.reshape(-1, 17)[:n] = signals
    work = Path(tempfile.mkdtemp(prefix="myoqmri-bench-"))
    (work / "data").mkdir()            # MyoQMRI caches its dictionary only if ./data exists
    nib.save(nib.Nifti1Image(vol, np.eye(4)), work / "mese.nii.gz")
    (work / "mese.json").write_text(json.dumps({"EchoTime": TE.tolist(), "FourthDimension": "EchoTime"}))
    cmd = [str(exe), "--bids", "--path-is-nifti", "--nthreads", "2", str(work / "mese.nii.gz")]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    outputs = sorted(work.rglob("*_T2.nii*"))       # written under mr-quant/ (muscle-BIDS)
    if done.returncode != 0 or not outputs:
        return None, None, f"MyoQMRI failed: {(done.stdout + done.stderr)[-400:]}"
    # its own "Elapsed time" covers the fit only (after the dictionary is built)
    elapsed = float(done.stdout.rsplit("Elapsed time", 1)[1].split()[0])
    t2 = np.asarray(nib.load(outputs[0]).dataobj).reshape(-1)[:n]
    return t2, n / elapsed, f"fit {elapsed:.1f} s of {wall:.1f} s with dictionary and start-up"


def main():
    rng = np.random.default_rng(0)
    seq, t2, ff, signals, noise_power = simulate(N, rng)
    fit, ours = run_ours(seq, signals, noise_power)
    print(f"voxels simulated with {SOURCE}'s model, SNR {SNR:g}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"myositis_qmri: {ours:,.0f} voxels/s on {N} voxels; water T2 {spread(fit['t2'], t2)}")
    print(f"  3 million voxels: {3e6 / ours:.1f} s (extrapolated from {N} voxels)")
    model, gain, volume_t2 = run_default_volume(signals, noise_power)
    print(f"  default volume path (profile calibrated, no headers): {model} (median chi2 gain of the best "
          f"candidate {gain:.2f}, switch at >= 3.84); water T2 {spread(volume_t2, t2)}")
    mono, cf = run_curve_fit(signals)
    print(f"scipy curve_fit mono-exponential: {cf:,.0f} voxels/s; T2 {spread(mono, t2[:len(mono)])}; "
          f"ours is {ours / cf:.0f}x faster")
    m_t2, m_speed, note = run_myoqmri(signals[:MYOQMRI_VOXELS])
    if m_t2 is None:
        print(note)
    else:
        print(f"MyoQMRI waterT2: {m_speed:,.0f} voxels/s ({note}); water T2 {spread(m_t2, t2[:MYOQMRI_VOXELS])}")
        print(f"  ours on the same voxels: {spread(fit['t2'][:MYOQMRI_VOXELS], t2[:MYOQMRI_VOXELS])}")
        print(f"  throughput ratio ours / MyoQMRI: {ours / m_speed:.0f}x (bar 100x, goal 500x)")
        if SOURCE == "myoqmri":
            # MyoQMRI's default as it runs: its profiles, refocusing sampled on the excitation bins
            matched = replace(seq, pulse_shape="slr", refocusing_width_ratio=1.0)
            m_fit, _ = run_ours(matched, signals[:MYOQMRI_VOXELS], noise_power)
            print(f"  ours with MyoQMRI-style profiles (slr, ratio 1.0): "
                  f"{spread(m_fit['t2'], t2[:MYOQMRI_VOXELS])}")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
