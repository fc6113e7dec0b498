"""Peak memory of the water-T2 fit on a large MESE: 512 x 512 x 100 voxels, 17 echoes.

The series (about 1.8 GB as float32) is synthesised slab by slab into an uncompressed 4-D
NIfTI (EPG echo trains for muscle and fat over a smooth B1 field, Rician noise), so making it
never holds the whole volume. It is then fitted with `maps.t2.fit_water_t2`, reading the
echoes either memory-mapped (nibabel; the pages are file-backed and reclaimable) or through
the product's reader (`io.read_echo_series`, SimpleITK, fully in memory).

Reported: peak resident memory split into anonymous (heap: what the fit allocates) and
file-backed (mapped input pages), sampled every 20 ms from /proc/self/status, the process's
ru_maxrss, and peak anonymous memory relative to the size of the echo data.

    python benchmarks/memory_large_mese.py                     # 512x512x100, 17 echoes, memmap
    python benchmarks/memory_large_mese.py --reader sitk       # through io.read_echo_series
    python benchmarks/memory_large_mese.py --slices 20         # a quicker, smaller run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MyositisQMRI"))

from myositis_qmri.maps.relaxation import FAT_T1_MS, FAT_T2_MS, WATER_T1_MS  # noqa: E402
from myositis_qmri.maps.t2 import SequenceModel, fit_water_t2  # noqa: E402
from myositis_qmri.maps.t2.dictionary import simulate_trains  # noqa: E402
from myositis_qmri.volume import EchoSeries  # noqa: E402

ECHO_SPACING_MS = 10.0


class MemorySampler:
    """Peak RssAnon / RssFile (MiB) of this process, sampled on a thread."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0, "VmRSS": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> dict[str, float]:
        values = {}
        with open("/proc/self/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    values[key] = int(rest.split()[0]) / 1024.0
        return values

    def _run(self):
        while not self._stop.is_set():
            for key, value in self.now().items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def synthesise(path: Path, shape_zyx, n_echoes: int, seed: int = 0) -> None:
    """Two legs of muscle with a fat rim in a 512x512 field, written slab by slab."""
    nz, ny, nx = shape_zyx
    seq = SequenceModel(n_echoes, ECHO_SPACING_MS, "2d")
    t2_grid = np.array([28.0, 32.0, 36.0, 42.0, 50.0])
    b1_grid = np.linspace(0.75, 1.1, 8)
    water = simulate_trains(seq, t2_grid[None, :], b1_grid[:, None], WATER_T1_MS)      # (b1, t2, echo)
    fat = simulate_trains(seq, np.array([[FAT_T2_MS]]), b1_grid[:, None], FAT_T1_MS)[:, 0]  # (b1, echo)

    import nibabel as nib
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((nx, ny, nz, n_echoes))
    header.set_zooms((0.8, 0.8, 5.0, 1.0))
    header.set_xyzt_units("mm", "sec")
    header.set_sform(np.diag([-0.8, -0.8, 5.0, 1.0]), code=1)
    header.set_qform(np.diag([-0.8, -0.8, 5.0, 1.0]), code=1)
    header["vox_offset"] = 352
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    legs = [((ny / 2), nx * 0.3), ((ny / 2), nx * 0.7)]
    radius = min(nx, ny) * 0.19
    dist = np.min([np.hypot(y - cy, x - cx) for cy, cx in legs], axis=0)
    muscle = dist < radius * 0.85
    rim = (dist >= radius * 0.85) & (dist < radius)
    b1_index = np.clip(((x / nx) * len(b1_grid)).astype(int), 0, len(b1_grid) - 1)
    with open(path, "wb") as handle:
        handle.write(header.binaryblock)
        handle.write(b"\0" * (352 - len(header.binaryblock)))
        # NIfTI order: x fastest, then y, z, echo; one (z, y, x) echo volume at a time, by slice
        t2_index = rng.integers(0, len(t2_grid), size=(nz, ny, nx), dtype=np.int8)
        ff = np.where(rim, 0.95, np.where(muscle, 0.05, 0.0)).astype(np.float32)
        body = (muscle | rim).astype(np.float32) * 1000.0
        for e in range(n_echoes):
            for z in range(nz):
                clean = body * ((1 - ff) * water[b1_index, t2_index[z], e] + ff * fat[b1_index, e])
                noisy = np.hypot(clean + rng.normal(0, 8.0, clean.shape), rng.normal(0, 8.0, clean.shape))
                handle.write(noisy.astype(np.float32).tobytes())


def load(path: Path, reader: str, n_echoes: int) -> EchoSeries:
    te = [ECHO_SPACING_MS * (k + 1) for k in range(n_echoes)]
    if reader == "sitk":
        from myositis_qmri.io import read_echo_series
        return read_echo_series(path, te)
    import nibabel as nib
    data = np.asanyarray(nib.load(path, mmap=True).dataobj)          # (x, y, z, echo) memmap
    array = data.transpose(3, 2, 1, 0)                               # (echo, z, y, x) view, no copy
    return EchoSeries(array, te, (0.8, 0.8, 5.0), metadata={"source_files": [str(path)], "MRAcquisitionType": "2D"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="in-plane matrix (default 512)")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--echoes", type=int, default=17)
    parser.add_argument("--reader", choices=("memmap", "sitk"), default="memmap")
    parser.add_argument("--workdir", type=Path, default=None, help="where the synthetic NIfTI goes (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("MYOSITIS_QMRI_PROGRESS", "off")

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "mese.nii"
        t0 = time.perf_counter()
        synthesise(path, (args.slices, args.size, args.size), args.echoes)
        synth_s = time.perf_counter() - t0
        data_mib = args.echoes * args.slices * args.size * args.size * 4 / 2**20
        baseline = MemorySampler.now()
        with MemorySampler() as sampler:
            t0 = time.perf_counter()
            series = load(path, args.reader, args.echoes)
            read_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            maps = fit_water_t2(series, profile="2d")
            fit_s = time.perf_counter() - t0
        fitted = int(maps.fit_mask.array.sum())
        inside = maps.water_t2_ms.array[maps.fit_mask.array > 0]
        result = {
            "matrix": [args.size, args.size, args.slices], "echoes": args.echoes, "reader": args.reader,
            "echo_data_mib": round(data_mib, 1), "voxels_fitted": fitted,
            "synthesis_s": round(synth_s, 1), "read_s": round(read_s, 2), "fit_s": round(fit_s, 1),
            "fit_voxels_per_s": round(fitted / fit_s),
            "baseline_rss_anon_mib": round(baseline["RssAnon"], 1),
            "peak_rss_anon_mib": round(sampler.peak["RssAnon"], 1),
            "peak_rss_file_mib": round(sampler.peak["RssFile"], 1),
            "peak_rss_total_mib": round(sampler.peak["VmRSS"], 1),
            "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "anon_growth_over_echo_data": round((sampler.peak["RssAnon"] - baseline["RssAnon"]) / data_mib, 2),
            "water_t2_ms_median_in_fit_mask": round(float(np.median(inside)), 2),
        }
    print(json.dumps(result, indent=2))
    print(f"peak memory: {result['peak_rss_anon_mib']:.0f} MiB anonymous (+{result['peak_rss_file_mib']:.0f} MiB "
          f"file-backed) for {data_mib:.0f} MiB of echo data; growth x{result['anon_growth_over_echo_data']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
