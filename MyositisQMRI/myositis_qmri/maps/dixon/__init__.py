"""Fat-fraction maps from every input radiologists have: `compute_fat_fraction`.

Methods: vendor (scanner FF map, scaling detected), wf (water/fat magnitudes), dixon2 / dixon3
(magnitude + phase, flexible echo times, multi-peak fat), multiecho (complex GRE, 6-peak fat,
R2*, graph-cut field map). `choose_method` picks one from what is given ("auto").
Outputs: FF in percent, water, fat, and where computed R2* (1/s) and field map (Hz).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...io.dicom_values import phase_to_radians
from ...io.nifti import write_volume
from ...progress import step
from ...volume import EchoSeries, Volume
from ..fat_spectrum import FAT_PEAK_AMPLITUDES, fat_peak_frequencies_hz, fat_phasor
from ..noise import noise_sigma
from .fieldmap import make_field_grid, projection_rows, residual_curves
from .multiecho import separate_complex
from .noise import signal_mask
from .two_point import separate_two_point
from .vendor import detect_ff_scale, vendor_ff_percent
from .water_fat import water_fat_ff

METHODS = ("auto", "vendor", "wf", "dixon2", "dixon3", "multiecho")

__all__ = ["FatFractionMaps", "compute_fat_fraction", "choose_method", "phase_to_radians",
           "detect_ff_scale", "METHODS"]


@dataclass
class FatFractionMaps:
    """FF (%), water, fat and optional R2* (1/s) / field map (Hz) on the input grid."""

    ff_percent: Volume
    water: Volume
    fat: Volume
    r2star_per_s: Volume | None = None
    fieldmap_hz: Volume | None = None
    metadata: dict = field(default_factory=dict)

    def write(self, out_dir) -> dict[str, Path]:
        """Write ff.nii.gz, water.nii.gz, fat.nii.gz [, r2star.nii.gz, fieldmap.nii.gz] atomically."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        maps = {"ff": self.ff_percent, "water": self.water, "fat": self.fat,
                "r2star": self.r2star_per_s, "fieldmap": self.fieldmap_hz}
        return {name: write_volume(volume, out_dir / f"{name}.nii.gz", np.float32)
                for name, volume in maps.items() if volume is not None}


def choose_method(magnitude=None, phase=None, complex_series=None, water=None, fat=None, ff_map=None) -> str:
    """The method for what is given: scanner FF map, then raw echoes, then water/fat images."""
    if ff_map is not None:
        return "vendor"
    series = complex_series if complex_series is not None else (magnitude if phase is not None else None)
    if series is not None:
        return {2: "dixon2", 3: "dixon3"}.get(series.n_echoes, "multiecho")
    if water is not None and fat is not None:
        return "wf"
    if magnitude is not None:
        raise InputError("--magnitude", "magnitude images without phase: give --phase images too "
                                        "(or water/fat images or the scanner's FF map)")
    if phase is not None:
        raise InputError("--phase", "phase images without magnitude: give --magnitude images too")
    if (water is None) != (fat is None):
        raise InputError("--water" if fat is None else "--fat", "water and fat images are needed together")
    raise InputError(None, "no fat-fraction input: give a DICOM folder, --magnitude/--phase, "
                           "--water/--fat or --ff-map")


def compute_fat_fraction(method: str = "auto", magnitude: EchoSeries | None = None, phase: EchoSeries | None = None,
                         complex_series: EchoSeries | None = None, water: Volume | None = None,
                         fat: Volume | None = None, ff_map: Volume | None = None, field_t=None, clockwise=None,
                         ff_scale=None, mask=None) -> FatFractionMaps:
    """Fat-fraction maps by `method` (see module doc); `mask` (bool z,y,x or Volume) limits the fit."""
    if method not in METHODS:
        raise InputError("--method", f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "auto":
        method = choose_method(magnitude, phase, complex_series, water, fat, ff_map)
    mask_array = None if mask is None else np.asarray(getattr(mask, "array", mask)).astype(bool)
    if method == "vendor":
        return _vendor(ff_map, water, fat, ff_scale)
    if method == "wf":
        return _water_fat(water, fat, mask_array)
    series = _complex_input(method, magnitude, phase, complex_series)
    _check_echoes(method, series)
    field_strength = _field_strength(series, field_t)
    if mask_array is not None and mask_array.shape != series.array.shape[1:]:
        raise InputError("--mask", f"mask shape {mask_array.shape} differs from the image {series.array.shape[1:]}")
    signal = np.asarray(series.array, np.complex64)
    if method != "dixon2":
        is_clockwise, how = resolve_clockwise(series, signal, field_strength, clockwise, mask_array)
    else:  # magnitudes alone decide W and F; the sense only flips the field's sign
        flag = clockwise if clockwise is not None else series.precession_clockwise
        is_clockwise, how = (True if flag is None else bool(flag)), "not needed for 2 echoes"
    if not is_clockwise:
        signal = np.conj(signal)
    spacing_zyx = tuple(reversed(series.spacing_mm))
    step(f"fat fraction: {method}, {series.n_echoes} echoes at {field_strength:g} T, "
         f"{'clockwise' if is_clockwise else 'counter-clockwise, conjugated'} ({how})")
    if method == "dixon2":
        result = separate_two_point(signal, series.echo_times_ms, field_strength, spacing_zyx, mask_array)
    else:
        result = separate_complex(signal, series.echo_times_ms, field_strength, spacing_zyx, mask_array,
                                  fit_r2star=series.n_echoes >= 4 and method == "multiecho")
        if series.n_echoes < 4 or method != "multiecho":
            result["r2star"] = None  # not fitted: too few echoes
    geometry = series.geometry
    meta = {"method": method, "field_strength_t": field_strength, "precession_clockwise": is_clockwise,
            "echo_times_ms": list(series.echo_times_ms)}

    def vol(array, **extra):
        return Volume.on_geometry(np.asarray(array, np.float32), geometry, {**meta, **extra})

    return FatFractionMaps(
        vol(100.0 * result["ff"], units="percent"), vol(np.abs(result["water"]), units="signal"),
        vol(np.abs(result["fat"]), units="signal"),
        None if result["r2star"] is None else vol(result["r2star"], units="1/s"),
        vol(np.where(result["mask"], result["field"], 0.0), units="Hz"), meta)


def resolve_clockwise(series: EchoSeries, signal: np.ndarray, field_t: float, clockwise=None, mask=None,
                      n_sample: int = 5000) -> tuple[bool, str]:
    """Whether the data precess clockwise, with the ISMRM toolbox's meaning of
    PrecessionIsClockwise: given, else from the series, else the sense the 6-peak fat model
    fits best. False means the data are conjugated before fitting.

    Core convention: exp(+2 pi i f t) with fat at negative frequency, which is the toolbox's
    clockwise sense (the toolbox conjugates when PrecessionIsClockwise <= 0), so pass the file's
    PrecessionIsClockwise as it is.

    Conjugated data fit the model only with fat moved to +3.4 ppm; the asymmetric minor peaks
    leave a larger residual in mixed and fat voxels, which decides the sense. Only the
    brightest voxels vote, where model error rather than noise dominates the residual.
    """
    if clockwise is not None:
        return bool(clockwise), "given"
    if series.precession_clockwise is not None:
        return bool(series.precession_clockwise), "from the series"
    rms = np.sqrt(np.mean(np.abs(signal) ** 2, axis=0))
    tissue = mask if mask is not None else signal_mask(rms, noise_sigma(np.abs(signal[0])))
    index = np.flatnonzero(tissue.ravel())
    if index.size == 0:
        return True, "no tissue to decide; data used as they are"
    energy = np.sum(np.abs(signal.reshape(signal.shape[0], -1)[:, index]) ** 2, axis=0)
    index = index[energy >= np.percentile(energy, 70)]
    index = index[np.linspace(0, index.size - 1, min(n_sample, index.size)).astype(int)]
    samples = signal.reshape(signal.shape[0], -1)[:, index]
    # A fine field and R2* grid: coarse sampling errors would swamp the small asymmetry.
    grid = make_field_grid(series.echo_times_ms, points_per_period=300)
    freqs = np.arange(grid.points_per_period) * grid.step_hz if grid.periodic else grid.freqs_hz
    r2star = tuple(np.arange(0.0, 301.0, 25.0)) if series.n_echoes >= 4 else (0.0,)
    rows = projection_rows(series.echo_times_ms, fat_phasor(series.echo_times_ms, field_t), freqs, r2star)
    as_is = conjugated = 0.0
    for start in range(0, samples.shape[1], 1000):
        part = samples[:, start:start + 1000]
        as_is += residual_curves(part, rows, freqs.size).min(axis=0).sum()
        conjugated += residual_curves(np.conj(part), rows, freqs.size).min(axis=0).sum()
    ratio = min(as_is, conjugated) / max(as_is, conjugated, 1e-30)
    return bool(as_is <= conjugated), f"fat-model residual {ratio:.2f} of the other sense"


def _complex_input(method, magnitude, phase, complex_series) -> EchoSeries:
    if complex_series is not None:
        return complex_series
    if magnitude is None:
        raise InputError("--magnitude", f"method {method} needs magnitude and phase echoes or complex data")
    if phase is None:
        raise InputError("--phase", f"method {method} needs phase images with the magnitude images")
    if magnitude.array.shape != phase.array.shape or not magnitude.geometry.same_grid(phase.geometry):
        raise InputError("--phase", f"phase {phase.array.shape} and magnitude {magnitude.array.shape} "
                                    "are not on the same grid")
    if not np.allclose(magnitude.echo_times_ms, phase.echo_times_ms, atol=0.01):
        raise InputError("--phase", f"phase echo times {phase.echo_times_ms} differ from magnitude "
                                    f"{magnitude.echo_times_ms}")
    radians = phase.array
    if phase.metadata.get("phase_units") != "radians" and (np.nanmax(radians) > 2 * np.pi + 0.1
                                                            or np.nanmin(radians) < -np.pi - 0.1):
        radians = phase_to_radians(radians, phase.source_name("--phase"))
    signal = np.abs(magnitude.array).astype(np.float32) * np.exp(1j * np.asarray(radians, np.float32))
    return magnitude.replace(array=signal.astype(np.complex64), image_kind="complex",
                             field_strength_t=magnitude.field_strength_t or phase.field_strength_t,
                             precession_clockwise=magnitude.precession_clockwise
                             if magnitude.precession_clockwise is not None else phase.precession_clockwise)


def _check_echoes(method: str, series: EchoSeries) -> None:
    n = series.n_echoes
    need = {"dixon2": (2, 2), "dixon3": (3, 3), "multiecho": (3, 64)}[method]
    source = series.source_name("--magnitude")
    if not need[0] <= n <= need[1]:
        wanted = f"{need[0]}" if need[0] == need[1] else f"at least {need[0]}"
        raise InputError(source, f"method {method} needs {wanted} echoes, the series has {n}")
    te = np.asarray(series.echo_times_ms)
    if np.any(np.diff(np.sort(te)) < 0.2):
        raise InputError(source, f"echo times {te.tolist()} ms: echoes must differ by at least 0.2 ms")
    if te.max() > 60:
        raise InputError(source, f"echo times {te.tolist()} ms are too long for chemical-shift encoding")
    if n >= 2:
        # Echo spacings near a whole cycle of the main fat peak leave water and fat inseparable.
        main_peak_hz = fat_peak_frequencies_hz(series.field_strength_t or 3.0)[np.argmax(FAT_PEAK_AMPLITUDES)]
        cycles = main_peak_hz * (te - te[0]) / 1000.0
        if np.max(np.abs(cycles - np.round(cycles))) < 0.05:
            raise InputError(source, f"echo times {te.tolist()} ms give fat and water the same phase at every "
                                     "echo; they cannot be separated")


def _field_strength(series: EchoSeries, field_t) -> float:
    value = field_t if field_t is not None else series.field_strength_t
    if value is None:
        raise InputError("--field-t", "field strength unknown: pass --field-t (e.g. 3 or 1.5)")
    value = float(value)
    if not 0.1 <= value <= 12:
        raise InputError("--field-t", f"field strength {value} T is not plausible")
    return value


def _vendor(ff_map: Volume | None, water, fat, ff_scale) -> FatFractionMaps:
    if ff_map is None:
        raise InputError("--ff-map", "method vendor needs the scanner's fat-fraction map")
    source = ff_map.source_name("--ff-map")
    percent, scaling = vendor_ff_percent(ff_map.array, ff_scale, ff_map.metadata.get("vendor"), source)
    meta = {"method": "vendor", "ff_scaling": scaling}
    if water is not None and fat is not None:
        _same_grid(water, fat)
        _same_grid(water, ff_map, "--ff-map")
        w, f = water.array.astype(np.float32), fat.array.astype(np.float32)
    else:  # no images: relative signal fractions so downstream tools still get W and F
        w, f = (100.0 - percent) / 100.0, percent / 100.0
        w = np.where(percent > 0, w, 0.0)
    return FatFractionMaps(ff_map.with_array(percent, units="percent", **meta), ff_map.with_array(w.astype(np.float32)),
                           ff_map.with_array(f.astype(np.float32)), metadata=meta)


def _same_grid(water: Volume, other: Volume, name: str = "--fat") -> None:
    if not water.geometry.same_grid(other.geometry):
        raise InputError(name, f"image grid {other.array.shape} at {other.origin_mm} differs from the water image "
                               f"{water.array.shape} at {water.origin_mm}; resample them to one grid")


def _water_fat(water: Volume | None, fat: Volume | None, mask) -> FatFractionMaps:
    if water is None or fat is None:
        raise InputError("--water" if water is None else "--fat", "method wf needs both water and fat images")
    _same_grid(water, fat)
    result = water_fat_ff(water.array, fat.array, mask)
    meta = {"method": "wf", "noise_sigma": float(result["sigma"])}
    return FatFractionMaps(water.with_array(100.0 * result["ff"], units="percent", **meta),
                           water.with_array(result["water"], **meta), water.with_array(result["fat"], **meta),
                           metadata=meta)
