"""Water T2 mapping from multi-echo spin echo (MESE).

`fit_water_t2` fits every voxel with a dictionary of EPG echo trains (slice-selective "2d" or
non-selective "3d"): water T2 and B1 free, fat T2 fixed (151 ms) or calibrated on
subcutaneous fat (`fat_t2_ms="auto"`), water and fat amplitudes solved linearly (variable
projection, see `projection` and `fitting`). The 2d slice profile (refocusing/excitation width
ratio, or 3d where the headers do not say) is calibrated per series and changed only when
another model fits clearly better (`calibration`). The background noise (power and coils) is
measured and its floor taken out before fitting (`noise`), and the second-order bias of the
maximum-likelihood water T2 is subtracted where its expansion holds (`projection.t2_precision`).
Optionally B1 is smoothed in plane and water T2 refitted with it (`b1map`). The search runs in
numpy, or in torch on a CUDA GPU (`device`, `torch_fit`). `model="mono"` fits exp(-TE/T2); a
fat-suppressed series gets a single-component water fit with B1. Work proceeds in slabs of
slices, so memory stays bounded whatever the volume size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...geometry import resample_to
from ...io.acquisition import acquisition_type
from ...io.echo_times import require_uniform_spacing
from ...io.atomic import write_text_atomic
from ...io.nifti import write_volume
from ...progress import Progress
from ...volume import EchoSeries, Volume
from ..noise import BackgroundNoise, estimate_background_noise
from ..relaxation import FAT_T2_MS
from .b1map import DEFAULT_B1_SMOOTHING_MM, MAX_B1_DEVIATION, b1_fixed_acceptable, smooth_b1
from .calibration import (REFOCUSING_RATIO_CANDIDATES, calibrate_refocusing_ratio, calibrate_slice_profile,
                          calibration_voxels)
from .device import resolve_device
from .dictionary import SequenceModel, build_dictionary, simulate_trains
from .fitting import MAX_BIAS_CORRECTION_CRLB, epg_projector, fit_signals, projector_from
from .projection import Projector

__all__ = ["T2Maps", "fit_water_t2", "write_fit_info", "fit_signals", "epg_projector", "SequenceModel", "build_dictionary",
           "mask_on_grid", "calibrate_refocusing_ratio", "calibrate_slice_profile", "calibration_voxels",
           "REFOCUSING_RATIO_CANDIDATES"]

SLAB_VOXELS = 262144
MONO_T2_RANGE_MS = (5.0, 1000.0)
BIAS_CORRECTION_NAME = f"second-order (Box 1971), where |bias| <= {MAX_BIAS_CORRECTION_CRLB} Cramer-Rao bounds"
FAT_T2_CANDIDATES_MS = np.arange(96.0, 305.0, 8.0)
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


def write_fit_info(maps: T2Maps, series: EchoSeries, written: dict, path: str | Path) -> Path:
    """t2_fit.json: the fit's settings as applied (device resolved, slice profile, noise, B1
    smoothing and its outcome), the echo times, the source and the map files written."""
    import json
    info = dict(maps.info)
    info.update(echo_times_ms=list(series.echo_times_ms), source=maps.water_t2_ms.metadata.get("source"),
                outputs={k: Path(p).name for k, p in written.items()})
    write_text_atomic(path, json.dumps(info, indent=2, default=str))
    return Path(path)


def fit_water_t2(series: EchoSeries, mask: Volume | None = None, model: str = "epg",
                 profile: str | None = None, fat_t2_ms: float | str = FAT_T2_MS,
                 fat_suppressed: bool | None = None, drop_first_echo: bool = False,
                 noise_power: float | BackgroundNoise | None = None,
                 refocusing_width_ratio: float | str = "auto",
                 pulse_shape: str = SequenceModel.pulse_shape,
                 b1_smoothing_mm: float | None = DEFAULT_B1_SMOOTHING_MM, device: str = "auto",
                 bias_correction: bool = True, slab_voxels: int = SLAB_VOXELS,
                 source: str | None = None) -> T2Maps:
    """Fit water T2 (ms), FF (%), B1 and fit-quality maps for a magnitude MESE series.

    profile: "2d" (slice-selective) or "3d"; None takes it from metadata MRAcquisitionType, and
    where the metadata do not say, lets the calibration choose 3d when it fits clearly better.
    noise_power: mean squared background magnitude of a one-channel (Rician) background, or a
    BackgroundNoise (sigma and root-sum-of-squares channels); None measures it on the background.
    refocusing_width_ratio: 2d model refocusing / excitation slice width, or "auto" (default):
    calibrated on this series' bright low-fat voxels, kept at 1.2 unless another ratio fits
    clearly better (see `calibration`).
    b1_smoothing_mm: FWHM of the in-plane smoothing of B1 before water T2 is refitted with B1
    fixed (see `b1map`); None or 0 reports the voxel-wise B1.
    device: "auto" (torch on CUDA when available, else numpy), "cpu" or "cuda".
    bias_correction: EPG model only; subtract the second-order bias of the maximum-likelihood
    water T2 where the expansion holds (see `fitting.MAX_BIAS_CORRECTION_CRLB`), so that means
    over a muscle are unbiased; the mono model stays the plain reference fit.
    """
    source = source or series.source_name()
    if model not in ("epg", "mono"):
        raise InputError("--model", f"model must be 'epg' or 'mono', got {model!r}")
    if series.image_kind not in ("magnitude", None):
        raise InputError(source, f"T2 fitting needs magnitude images, got {series.image_kind}")
    array = np.asarray(series.array)
    if not np.all(np.isfinite(array)):
        raise InputError(source, "echo images contain NaN or infinite values")
    te = np.asarray(series.echo_times_ms, dtype=float)
    profile_known = profile is not None or stated_acquisition(series) is not None
    profile = _profile(series, profile)
    if fat_suppressed is None:
        fat_suppressed = bool(series.fat_suppressed or series.metadata.get("fat_suppressed"))
    device = resolve_device(device)
    _check_slices(array, source)

    noise = estimate_background_noise(array) if noise_power is None else BackgroundNoise.of(noise_power)
    fit_mask = _fit_mask(array, mask, series.geometry, noise.power)
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
            seq, calibration = _calibrated_sequence(seq, array, fit_mask, noise, fat_t2_ms, fat_suppressed,
                                                    allow_3d=not profile_known)
            profile = seq.profile
        proj, info = _epg_projector(seq, array, fit_mask, fat_t2_ms, fat_suppressed, noise)
        info["refocusing_width_ratio"] = seq.refocusing_width_ratio if profile == "2d" else None
        if calibration is not None:
            info["slice_profile_calibration"] = calibration
    smoothing = float(b1_smoothing_mm or 0.0) if model == "epg" else 0.0
    correct = bool(bias_correction) and model == "epg"
    info.update(model=model, profile=profile if model == "epg" else None, noise_power=noise.power,
                noise_channels=noise.channels, noise_background_voxels=noise.n_background,
                fat_suppressed=bool(fat_suppressed),
                drop_first_echo=bool(first_echo), device=device,
                b1_smoothing_fwhm_mm=smoothing if smoothing > 0 else None,
                t2_bias_correction=BIAS_CORRECTION_NAME if correct else None)
    maps = _fit_volume(proj, array[first_echo:], fit_mask, noise, slab_voxels,
                       fit_b1=model == "epg", device=device, bias_correction=correct)
    if smoothing > 0:
        maps, info["b1_smoothing"] = _refit_smooth_b1(proj, array, fit_mask, noise, slab_voxels, maps,
                                                      series.spacing_mm, smoothing, device, correct)
    return _to_volumes(maps, fit_mask, series, info, measures_ff=proj.has_fat,
                       measures_b1=model == "epg")


def stated_acquisition(series: EchoSeries) -> str | None:
    """"2D" or "3D" where the headers say so; None where MRAcquisitionType is absent, empty or
    None, which is unknown (both slice-profile models are then tried), never 2D."""
    return acquisition_type(series.metadata.get("MRAcquisitionType"))


def _profile(series: EchoSeries, profile: str | None) -> str:
    if profile is None:
        # Unknown starts from the 2d model; the calibration then may choose 3d (allow_3d).
        return "3d" if stated_acquisition(series) == "3D" else "2d"
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
    source = mask.source_name("--mask")
    if mask.geometry.same_grid(geometry):
        return np.asarray(mask.array) > 0
    resampled = resample_to(mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8)), geometry,
                            interpolation="nearest")
    out = resampled.array > 0
    if not out.any():
        raise InputError(source, "mask does not overlap the MESE series in patient space "
                                 "(different grid and no common voxels)")
    return out


def _epg_projector(seq, array, fit_mask, fat_t2_ms, fat_suppressed, noise):
    info: dict = {"fat_t2_ms": None}
    if fat_suppressed:
        dictionary = build_dictionary(seq, FAT_T2_MS)
        return projector_from(dictionary, True), info
    if isinstance(fat_t2_ms, str):
        if fat_t2_ms != "auto":
            raise InputError("--fat-t2", f"expected a number of ms or 'auto', got {fat_t2_ms!r}")
        fat_t2_ms, info["fat_t2_calibration"] = calibrate_fat_t2(seq, array, fit_mask, noise)
    fat_t2_ms = float(fat_t2_ms)
    if not 20.0 <= fat_t2_ms <= 1000.0:
        raise InputError("--fat-t2", f"fat T2 {fat_t2_ms} ms is outside 20-1000 ms")
    info["fat_t2_ms"] = fat_t2_ms
    return projector_from(build_dictionary(seq, fat_t2_ms), False), info


def calibrate_fat_t2(seq: SequenceModel, array, fit_mask, noise, max_voxels: int = 2000):
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
    first = fit_signals(projector_from(dictionary, False), signals, noise)
    strong = signals[:, 0] > np.percentile(signals[:, 0], 50)
    fatty = signals[(first["ff"] >= 80) & strong][:max_voxels]
    if fatty.shape[0] < 50:
        return FAT_T2_MS, f"too few fat voxels ({fatty.shape[0]}); default {FAT_T2_MS} ms used"
    water = dictionary.water, dictionary.t2_grid_ms, dictionary.b1_grid

    def residual(fat_t2_ms: float) -> float:
        fat = simulate_trains(seq, float(fat_t2_ms), dictionary.b1_grid, seq.fat_t1_ms)
        proj = Projector.from_atoms(water[0], fat, water[1], water[2])
        return float(np.nansum(np.square(fit_signals(proj, fatty, noise)["residual"])))

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


def _calibrated_sequence(seq, array, fit_mask, noise, fat_t2_ms, fat_suppressed, allow_3d):
    fat_t2 = FAT_T2_MS if isinstance(fat_t2_ms, str) else float(fat_t2_ms)
    signals = calibration_voxels(seq, array, fit_mask, noise, fat_t2)
    return calibrate_slice_profile(seq, signals, noise, fat_t2, fat_suppressed, allow_3d=allow_3d)


def _mono_projector(te_ms):
    ratio = 1.02
    n = int(np.ceil(np.log(MONO_T2_RANGE_MS[1] / MONO_T2_RANGE_MS[0]) / np.log(ratio))) + 1
    grid = MONO_T2_RANGE_MS[0] * ratio ** np.arange(n)
    trains = np.exp(-np.asarray(te_ms)[None, None, :] / grid[None, :, None])
    return Projector.from_atoms(trains, None, grid, np.array([1.0])), {"fat_t2_ms": None}


def _fit_volume(proj, array, fit_mask, noise, slab_voxels, fit_b1, device="cpu", b1=None,
                label="water T2 fit", bias_correction=True):
    """Fit every voxel of fit_mask, slab by slab; b1 (a map on the grid) fixes B1 per voxel."""
    n_z = array.shape[1]
    out = {k: np.zeros(fit_mask.shape, np.float32) for k in ("t2", "ff", "b1", "residual", "crlb")}
    counts = fit_mask.reshape(n_z, -1).sum(axis=1)
    z = 0
    with Progress(int(counts.sum()), label, unit="voxel") as progress:
        while z < n_z:  # slabs of whole slices holding about slab_voxels voxels to fit
            z_end = z + 1
            while z_end < n_z and counts[z:z_end + 1].sum() <= slab_voxels:
                z_end += 1
            slab_mask = fit_mask[z:z_end]
            if slab_mask.any():
                signals = array[:, z:z_end][:, slab_mask].T
                fixed = None if b1 is None else b1[z:z_end][slab_mask]
                fitted = fit_signals(proj, signals, noise, fit_b1, b1=fixed, device=device,
                                     bias_correction=bias_correction)
                for key in out:
                    out[key][z:z_end][slab_mask] = fitted[key]
                progress.update(int(slab_mask.sum()))
            z = z_end
    return out


def _refit_smooth_b1(proj, array, fit_mask, noise, slab_voxels, maps, spacing_mm, fwhm_mm, device,
                     bias_correction=True):
    """Refit water T2 with B1 fixed at its smoothed map, voxel by voxel where the data allow it.

    A voxel keeps its free-B1 fit where fixing B1 worsens the fit significantly (an F test of
    the nested models at the 1 % level, residual variance from the free fit, so model misfit
    does not count as a rejection): there the smooth map does not describe its B1 (a sharp
    transmit-field change, or simulated voxels with independent B1).
    """
    smooth, deviation = smooth_b1(maps["b1"], fit_mask, maps["ff"], spacing_mm, fwhm_mm)
    info = {"fwhm_mm": fwhm_mm, "median_abs_deviation": deviation, "voxels": int(fit_mask.sum())}
    if deviation > MAX_B1_DEVIATION:
        return maps, {**info, "voxels_with_smoothed_b1": 0,
                      "note": f"B1 map not smooth (median deviation {deviation:.3f} > {MAX_B1_DEVIATION}): "
                              "voxel-wise B1 kept"}
    fixed = _fit_volume(proj, array, fit_mask, noise, slab_voxels, fit_b1=False, device=device,
                        b1=smooth, label="water T2 refit with smoothed B1", bias_correction=bias_correction)
    accept = b1_fixed_acceptable(maps["residual"], fixed["residual"], array.shape[0]) & fit_mask
    out = {k: np.where(accept, fixed[k], maps[k]) for k in maps}
    return out, {**info, "voxels_with_smoothed_b1": int(accept.sum()),
                 "note": "water T2 refitted with the smoothed B1 where an F test (1 %) accepts it"}


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
