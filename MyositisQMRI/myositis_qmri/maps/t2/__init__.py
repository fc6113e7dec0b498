"""Water T2 mapping from multi-echo spin echo (MESE).

`fit_water_t2` fits every voxel with a dictionary of EPG echo trains (slice-selective "2d" or
non-selective "3d"): water T2 and B1 free, fat T2 fixed (151 ms) or calibrated on
subcutaneous fat (`fat_t2_ms="auto"`), water and fat amplitudes solved linearly (variable
projection, see `projection`). The background noise floor is measured and taken out before
fitting (see `noise`). `model="mono"` fits exp(-TE/T2); a fat-suppressed series gets a
single-component water fit with B1. Work proceeds in slabs of slices, so memory stays
bounded whatever the volume size.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...geometry import resample_to
from ...io.echo_times import require_uniform_spacing
from ...io.nifti import write_volume
from ...progress import Progress
from ...volume import EchoSeries, Volume
from ..relaxation import FAT_T1_MS, FAT_T2_MS
from .dictionary import EpgDictionary, SequenceModel, build_dictionary, default_grids, simulate_trains
from .noise import estimate_noise_power, remove_noise_floor
from .projection import Projector, amplitudes, fit_compressed, map_chunks, t2_crlb

__all__ = ["T2Maps", "fit_water_t2", "fit_signals", "SequenceModel", "build_dictionary", "mask_on_grid",
           "calibrate_refocusing_ratio", "calibration_voxels"]

SLAB_VOXELS = 262144
MONO_T2_RANGE_MS = (5.0, 1000.0)
FAT_T2_CANDIDATES_MS = np.arange(96.0, 305.0, 8.0)
# refocusing / excitation slice-width ratios tried by the 2d calibration (each dictionary is
# cached on disk, so only a refined ratio off this list is ever simulated again)
REFOCUSING_RATIO_CANDIDATES = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0)
REFOCUSING_RATIO_STEP = 0.05   # the refined ratio is rounded to this, so its dictionary is reused
SIGNIFICANT_Z = 3.0            # a ratio replaces the default only if it fits significantly better

OUTPUT_FILES = {"water_t2_ms": "t2w.nii.gz", "ff_percent": "ffmese.nii.gz", "b1": "b1.nii.gz",
                "residual": "residual.nii.gz", "t2_crlb_ms": "t2w_crlb.nii.gz"}


@dataclass
class T2Maps:
    """Fitted maps on the input grid. Voxels outside `fit_mask` hold 0; maps a model does not
    measure (FF for mono or fat-suppressed fits, B1 for mono) hold NaN inside the fit mask."""

    water_t2_ms: Volume
    ff_percent: Volume
    b1: Volume
    residual: Volume
    t2_crlb_ms: Volume
    fit_mask: Volume
    info: dict = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write t2w, ffmese, b1, residual and t2w_crlb (.nii.gz, float32) atomically."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return {name: write_volume(getattr(self, name), out_dir / filename, np.float32)
                for name, filename in OUTPUT_FILES.items()}


def fit_water_t2(series: EchoSeries, mask: Volume | None = None, model: str = "epg",
                 profile: str | None = None, fat_t2_ms: float | str = FAT_T2_MS,
                 fat_suppressed: bool | None = None, drop_first_echo: bool = False,
                 noise_power: float | None = None,
                 refocusing_width_ratio: float | str = SequenceModel.refocusing_width_ratio,
                 pulse_shape: str = SequenceModel.pulse_shape,
                 slab_voxels: int = SLAB_VOXELS, source: str | None = None) -> T2Maps:
    """Fit water T2 (ms), FF (%), B1 and fit-quality maps for a magnitude MESE series.

    profile: "2d" (slice-selective) or "3d"; None takes it from metadata MRAcquisitionType.
    noise_power: mean squared background magnitude; None estimates it from the background.
    refocusing_width_ratio: 2d model refocusing / excitation slice width, or "auto" to calibrate
    it on this series' bright low-fat voxels (see `calibrate_refocusing_ratio`).
    """
    source = source or (series.metadata.get("source_files") or [None])[0]
    if model not in ("epg", "mono"):
        raise InputError("--model", f"model must be 'epg' or 'mono', got {model!r}")
    if series.image_kind not in ("magnitude", None):
        raise InputError(source, f"T2 fitting needs magnitude images, got {series.image_kind}")
    array = np.asarray(series.array)
    if not np.all(np.isfinite(array)):
        raise InputError(source, "echo images contain NaN or infinite values")
    te = np.asarray(series.echo_times_ms, dtype=float)
    profile = _profile(series, profile)
    if fat_suppressed is None:
        fat_suppressed = bool(series.fat_suppressed or series.metadata.get("fat_suppressed"))
    _check_slices(array, source)

    if noise_power is None:
        noise_power, n_background = estimate_noise_power(array)
    else:
        n_background = None
    fit_mask = _fit_mask(array, mask, series.geometry, noise_power)
    if not fit_mask.any():
        raise InputError(source, "no voxel to fit: the mask is empty or the images hold no signal")

    first_echo = 1 if (model == "mono" and drop_first_echo) else 0
    if model == "mono":
        if te.size - first_echo < 3:
            raise InputError(source, f"{te.size} echoes: a mono-exponential fit needs at least 3")
        proj, info = _mono_projector(te[first_echo:])
    else:
        if te.size < 4:
            raise InputError(source, f"{te.size} echoes: the EPG fit needs at least 4 echoes")
        spacing = require_uniform_spacing(te, source)
        auto_ratio = _auto_ratio(refocusing_width_ratio)
        seq = SequenceModel(int(te.size), float(spacing), profile,
                            float(series.refocusing_angle_deg or 180.0),
                            refocusing_width_ratio=(SequenceModel.refocusing_width_ratio if auto_ratio
                                                    else float(refocusing_width_ratio)),
                            pulse_shape=pulse_shape, first_echo_ms=float(te[0]))
        calibration = None
        if auto_ratio and profile == "2d":
            seq, calibration = _calibrated_sequence(seq, array, fit_mask, noise_power, fat_t2_ms, fat_suppressed)
        proj, info = _epg_projector(seq, array, fit_mask, fat_t2_ms, fat_suppressed, noise_power)
        info["refocusing_width_ratio"] = seq.refocusing_width_ratio if profile == "2d" else None
        if calibration is not None:
            info["refocusing_ratio_calibration"] = calibration
    info.update(model=model, profile=profile if model == "epg" else None, noise_power=noise_power,
                noise_background_voxels=n_background, fat_suppressed=bool(fat_suppressed),
                drop_first_echo=bool(first_echo))
    maps = _fit_volume(proj, array[first_echo:], fit_mask, noise_power, slab_voxels,
                       fit_b1=model == "epg")
    return _to_volumes(maps, fit_mask, series, info, measures_ff=proj.has_fat,
                       measures_b1=model == "epg")


def fit_signals(proj: Projector, signals: np.ndarray, noise_power: float = 0.0, fit_b1: bool = True) -> dict:
    """Fit (n, echoes) magnitude trains; returns dict of (n,) arrays (t2, ff, b1, residual, crlb).

    Chunks of voxels are fitted in parallel threads (see `projection.map_chunks`).
    """
    n = len(signals)
    out = {k: np.empty(n, np.float32) for k in ("t2", "ff", "b1", "residual", "crlb", "water", "fat")}

    def fit(start, stop):
        for key, values in _fit_chunk(proj, signals[start:stop], noise_power, fit_b1).items():
            out[key][start:stop] = values

    map_chunks(fit, n)
    return out


def _fit_chunk(proj: Projector, signals: np.ndarray, noise_power: float, fit_b1: bool) -> dict:
    signals = remove_noise_floor(np.asarray(signals, dtype=np.float32), noise_power)
    scale = np.maximum(signals.max(axis=1), np.float32(1e-20))
    y_full = signals / scale[:, None]
    y = proj.compress(y_full)
    b, t, b_off, t_off, energy = fit_compressed(proj, y)
    water, fat = amplitudes(proj, y, b, t)
    t2 = proj.t2_grid_ms[t] * np.exp(t_off * _log_step(proj.t2_grid_ms, t, t_off))
    b1 = proj.b1_grid[b] + b_off * (proj.b1_grid[1] - proj.b1_grid[0] if proj.b1_grid.size > 1 else 0.0)
    total = water + fat
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(total > 0, 100.0 * fat / total, np.nan)
        norm2 = np.einsum("ne,ne->n", y_full, y_full)
        residual = np.sqrt(np.maximum(norm2 - energy, 0) / np.maximum(norm2, 1e-20))
    sigma = np.sqrt(noise_power / 2.0) / scale if noise_power > 0 else np.zeros_like(scale)
    crlb = t2_crlb(proj, b, t, water, fat, sigma, fit_b1)
    t2 = np.where(total > 0, t2, np.nan)
    return {"t2": t2.astype(np.float32), "ff": ff.astype(np.float32), "b1": b1.astype(np.float32),
            "residual": residual.astype(np.float32), "crlb": crlb.astype(np.float32),
            "water": water * scale, "fat": fat * scale}


def epg_projector(seq: SequenceModel, fat_t2_ms: float = FAT_T2_MS, fat_suppressed: bool = False,
                  t2_grid_ms=None, b1_grid=None) -> Projector:
    """The fitting projector for a sequence (dictionary from cache or simulated)."""
    dictionary = build_dictionary(seq, fat_t2_ms, t2_grid_ms, b1_grid)
    return _projector_from(dictionary, fat_suppressed)


def _projector_from(dictionary: EpgDictionary, fat_suppressed: bool) -> Projector:
    key = (id(dictionary), fat_suppressed)
    cached = _PROJECTORS.get(key)
    if cached is None:
        cached = Projector.from_atoms(dictionary.water, None if fat_suppressed else dictionary.fat,
                                      dictionary.t2_grid_ms, dictionary.b1_grid)
        _PROJECTORS[key] = cached
    return cached


_PROJECTORS: dict = {}


def _log_step(grid, index, offset):
    n = grid.size
    other = np.clip(index + np.where(offset >= 0, 1, -1), 0, n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.abs(np.log(grid[other] / grid[index]))
    return np.nan_to_num(step)


def _profile(series: EchoSeries, profile: str | None) -> str:
    if profile is None:
        acquisition = str(series.metadata.get("MRAcquisitionType", "2D")).upper()
        return "3d" if acquisition == "3D" else "2d"
    if profile not in ("2d", "3d"):
        raise InputError("--profile", f"profile must be '2d' or '3d', got {profile!r}")
    return profile


def _check_slices(array: np.ndarray, source) -> None:
    empty = np.flatnonzero(~np.any(array.reshape(array.shape[0], array.shape[1], -1) != 0, axis=(0, 2)))
    if empty.size == array.shape[1]:
        raise InputError(source, "every slice is all zero in every echo; nothing to fit")
    if empty.size:
        raise InputError(source, f"slice(s) {empty.tolist()} are all zero in every echo "
                                 "(damaged or incomplete series)")


def _fit_mask(array, mask: Volume | None, geometry, noise_power: float) -> np.ndarray:
    first = array[0]
    if mask is None:
        # automatic background skipping: well above the noise floor and above 2 % of tissue
        threshold = max(4.0 * np.sqrt(noise_power), 0.02 * float(np.percentile(first[first > 0], 99)))
        return first > threshold
    on_grid = mask_on_grid(mask, geometry)
    return on_grid & np.any(array > 0, axis=0)


def mask_on_grid(mask: Volume, geometry) -> np.ndarray:
    """The mask on the series grid: as is when grids match, else resampled by physical position."""
    source = (mask.metadata.get("source_files") or ["--mask"])[0]
    if mask.geometry.same_grid(geometry):
        return np.asarray(mask.array) > 0
    resampled = resample_to(mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8)), geometry,
                            interpolation="nearest")
    out = resampled.array > 0
    if not out.any():
        raise InputError(source, "mask does not overlap the MESE series in patient space "
                                 "(different grid and no common voxels)")
    return out


def _epg_projector(seq, array, fit_mask, fat_t2_ms, fat_suppressed, noise_power):
    info: dict = {"fat_t2_ms": None}
    if fat_suppressed:
        dictionary = build_dictionary(seq, FAT_T2_MS)
        return _projector_from(dictionary, True), info
    if isinstance(fat_t2_ms, str):
        if fat_t2_ms != "auto":
            raise InputError("--fat-t2", f"expected a number of ms or 'auto', got {fat_t2_ms!r}")
        fat_t2_ms, info["fat_t2_calibration"] = calibrate_fat_t2(seq, array, fit_mask, noise_power)
    fat_t2_ms = float(fat_t2_ms)
    if not 20.0 <= fat_t2_ms <= 1000.0:
        raise InputError("--fat-t2", f"fat T2 {fat_t2_ms} ms is outside 20-1000 ms")
    info["fat_t2_ms"] = fat_t2_ms
    return _projector_from(build_dictionary(seq, fat_t2_ms), False), info


def calibrate_fat_t2(seq: SequenceModel, array, fit_mask, noise_power, max_voxels: int = 2000):
    """Fat T2 (ms) of this subject from its fattest voxels (subcutaneous fat).

    A first fit with the default fat T2 finds voxels read as >= 80 % fat with strong signal.
    Subcutaneous fat still holds some water, so rather than a single-component fit, the
    full water/fat/B1 fit is repeated over candidate fat T2s and the one with the least
    residual over those voxels wins (refined by a parabola through its neighbours). Falls
    back to 151 ms when fewer than 50 such voxels exist.
    """
    signals = array[:, fit_mask].T
    rng = np.random.default_rng(0)
    if signals.shape[0] > 20 * max_voxels:
        signals = signals[rng.choice(signals.shape[0], 20 * max_voxels, replace=False)]
    dictionary = build_dictionary(seq, FAT_T2_MS)
    first = fit_signals(_projector_from(dictionary, False), signals, noise_power)
    strong = signals[:, 0] > np.percentile(signals[:, 0], 50)
    fatty = signals[(first["ff"] >= 80) & strong][:max_voxels]
    if fatty.shape[0] < 50:
        return FAT_T2_MS, f"too few fat voxels ({fatty.shape[0]}); default {FAT_T2_MS} ms used"
    water = dictionary.water, dictionary.t2_grid_ms, dictionary.b1_grid

    def residual(fat_t2_ms: float) -> float:
        fat = simulate_trains(seq, float(fat_t2_ms), dictionary.b1_grid, seq.fat_t1_ms)
        proj = Projector.from_atoms(water[0], fat, water[1], water[2])
        return float(np.nansum(np.square(fit_signals(proj, fatty, noise_power)["residual"])))

    # coarse candidates, then 2 ms steps around the best, then a parabola through the best three
    coarse = FAT_T2_CANDIDATES_MS
    best = coarse[int(np.argmin([residual(t) for t in coarse]))]
    fine = np.arange(best - 6.0, best + 6.5, 2.0)
    values = np.asarray([residual(t) for t in fine])
    i = int(np.clip(np.argmin(values), 1, values.size - 2))
    lo, mid, hi = values[i - 1:i + 2]
    curvature = lo - 2 * mid + hi
    offset = float(np.clip(0.5 * (lo - hi) / curvature, -1, 1)) if curvature > 0 else 0.0
    value = float(fine[i] + offset * 2.0)
    return value, f"least residual of the water/fat fit over {fatty.shape[0]} fat voxels"


def _auto_ratio(value) -> bool:
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise InputError("--refocusing-ratio", f"expected a ratio or 'auto', got {value!r}")
        return True
    if not 0.5 <= float(value) <= 5.0:
        raise InputError("--refocusing-ratio", f"ratio {value} is outside 0.5-5")
    return False


def _calibrated_sequence(seq, array, fit_mask, noise_power, fat_t2_ms, fat_suppressed):
    fat_t2 = FAT_T2_MS if isinstance(fat_t2_ms, str) else float(fat_t2_ms)
    signals = calibration_voxels(seq, array, fit_mask, noise_power, fat_t2)
    ratio, calibration = calibrate_refocusing_ratio(seq, signals, noise_power, fat_t2, fat_suppressed)
    return replace(seq, refocusing_width_ratio=ratio), calibration


def calibration_voxels(seq: SequenceModel, array, fit_mask, noise_power, fat_t2_ms: float = FAT_T2_MS,
                       max_voxels: int = 5000, max_ff_percent: float = 10.0) -> np.ndarray:
    """Up to `max_voxels` bright, low-fat echo trains (n, echoes), picked deterministically.

    Bright: first echo above the median of the fit mask (high SNR, no partial volume with
    background). Low fat: FF below `max_ff_percent` in a first fit with `seq` as given, so the
    water train shape, which the slice profile shapes, dominates the residual.
    """
    signals = array[:, fit_mask].T
    signals = signals[signals[:, 0] > np.median(signals[:, 0])]
    rng = np.random.default_rng(0)
    if signals.shape[0] > 4 * max_voxels:
        signals = signals[np.sort(rng.choice(signals.shape[0], 4 * max_voxels, replace=False))]
    first = fit_signals(_projector_from(build_dictionary(seq, fat_t2_ms), False), signals, noise_power)
    return signals[first["ff"] < max_ff_percent][:max_voxels]


def calibrate_refocusing_ratio(seq: SequenceModel, signals, noise_power: float, fat_t2_ms: float = FAT_T2_MS,
                               fat_suppressed: bool = False, candidates=REFOCUSING_RATIO_CANDIDATES):
    """The 2d model's refocusing/excitation slice-width ratio that best explains `signals`.

    The scanner's refocusing slice is often wider than the excitation slice, by an amount
    that depends on vendor and protocol; a wrong ratio is absorbed as a wrong B1 (and T2).
    Each candidate ratio fits the voxels (water T2, B1, fat free); the candidate with the
    least median normalised residual wins, refined by a parabola in log(residual) over
    log(ratio) through it and its neighbours, rounded to REFOCUSING_RATIO_STEP, provided it
    beats seq's ratio significantly (paired z < -SIGNIFICANT_Z on squared residuals). Returns
    (ratio, calibration dict with the residual curve). Fewer than 200 voxels: seq's ratio.
    """
    signals = np.asarray(signals, dtype=np.float32)
    if signals.shape[0] < 200:
        return seq.refocusing_width_ratio, {
            "ratio": seq.refocusing_width_ratio, "voxels": int(signals.shape[0]),
            "note": f"too few bright low-fat voxels ({signals.shape[0]}); default ratio used"}
    default = float(seq.refocusing_width_ratio)
    ratios = np.unique(np.append(np.asarray(candidates, dtype=float), default))
    per_voxel = np.stack([_residuals(replace(seq, refocusing_width_ratio=float(r)), signals, noise_power,
                                     fat_t2_ms, fat_suppressed) for r in ratios])
    residuals = np.nanmedian(per_voxel, axis=1)
    best = int(np.argmin(residuals))
    z = _paired_z(per_voxel[best], per_voxel[int(np.flatnonzero(ratios == default)[0])])
    ratio = float(ratios[best])
    if z > -SIGNIFICANT_Z:
        # noise-dominated trains cannot tell the ratios apart: keep the default rather than
        # follow the noise to a neighbour
        ratio = default
    elif 0 < best < ratios.size - 1:
        x, y = np.log(ratios[best - 1:best + 2]), np.log(residuals[best - 1:best + 2])
        a, b, _ = np.polyfit(x, y, 2)
        if a > 0:
            ratio = float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))
    ratio = round(round(ratio / REFOCUSING_RATIO_STEP) * REFOCUSING_RATIO_STEP, 4)
    return ratio, {"ratio": ratio, "voxels": int(signals.shape[0]), "candidates": ratios.tolist(),
                   "median_residual": [float(r) for r in residuals], "z_best_vs_default": float(z),
                   "note": "least median normalised residual over bright low-fat voxels"}


def _residuals(seq, signals, noise_power, fat_t2_ms, fat_suppressed) -> np.ndarray:
    proj = _projector_from(build_dictionary(seq, fat_t2_ms), fat_suppressed)
    return fit_signals(proj, signals, noise_power)["residual"].astype(float)


def _paired_z(candidate, default) -> float:
    """z score of the mean per-voxel change in squared residual (negative: candidate fits better)."""
    d = np.square(candidate) - np.square(default)
    d = d[np.isfinite(d)]
    sd = float(np.std(d))
    return 0.0 if d.size < 2 or sd == 0 else float(np.mean(d) / (sd / np.sqrt(d.size)))


def _mono_projector(te_ms):
    ratio = 1.02
    n = int(np.ceil(np.log(MONO_T2_RANGE_MS[1] / MONO_T2_RANGE_MS[0]) / np.log(ratio))) + 1
    grid = MONO_T2_RANGE_MS[0] * ratio ** np.arange(n)
    trains = np.exp(-np.asarray(te_ms)[None, None, :] / grid[None, :, None])
    return Projector.from_atoms(trains, None, grid, np.array([1.0])), {"fat_t2_ms": None}


def _fit_volume(proj, array, fit_mask, noise_power, slab_voxels, fit_b1):
    n_z = array.shape[1]
    out = {k: np.zeros(fit_mask.shape, np.float32) for k in ("t2", "ff", "b1", "residual", "crlb")}
    counts = fit_mask.reshape(n_z, -1).sum(axis=1)
    z = 0
    with Progress(int(counts.sum()), "water T2 fit", unit="voxel") as progress:
        while z < n_z:  # slabs of whole slices holding about slab_voxels voxels to fit
            z_end = z + 1
            while z_end < n_z and counts[z:z_end + 1].sum() <= slab_voxels:
                z_end += 1
            slab_mask = fit_mask[z:z_end]
            if slab_mask.any():
                signals = array[:, z:z_end][:, slab_mask].T
                fitted = fit_signals(proj, signals, noise_power, fit_b1)
                for key in out:
                    out[key][z:z_end][slab_mask] = fitted[key]
                progress.update(int(slab_mask.sum()))
            z = z_end
    return out


def _to_volumes(maps, fit_mask, series: EchoSeries, info, measures_ff: bool, measures_b1: bool) -> T2Maps:
    geometry = series.geometry
    if not measures_ff:
        maps["ff"][fit_mask] = np.nan
    if not measures_b1:
        maps["b1"][fit_mask] = np.nan
    base = {k: series.metadata[k] for k in ("series_description", "series_uid", "study_uid", "patient_id")
            if k in series.metadata}
    label = (f"EPG water T2 ({info.get('profile')} profile, fat T2 {info.get('fat_t2_ms')} ms)"
             if info["model"] == "epg" else "mono-exponential T2 fit")
    if info.get("fat_suppressed") and info["model"] == "epg":
        label = f"EPG water T2 ({info.get('profile')} profile, fat-suppressed single component)"

    def vol(array, units, kind):
        return Volume.on_geometry(array, geometry, {**base, "units": units, "image_kind": kind,
                                                    "source": label, "fit": dict(info)})

    return T2Maps(vol(maps["t2"], "ms", "t2_map"), vol(maps["ff"], "%", "ff"), vol(maps["b1"], "relative", "b1"),
                  vol(maps["residual"], "relative", "residual"), vol(maps["crlb"], "ms", "t2_crlb"),
                  vol(fit_mask.astype(np.uint8), "", "mask"), info)
