"""Scanner T2 maps (Siemens MapIt/GRAPPATINI, GE T2 map/Cartigram, Philips) imported in ms.

The DICOM reader already applies Rescale Slope/Intercept, Real World Value Mapping and
Philips' private scaling. What remains is the storage unit, which vendors do not always
state: ms, ms x 10 (integer maps with 0.1 ms steps) or seconds. A unit given by the Real
World Value Mapping wins; otherwise the median of the positive values decides, and a median
that fits none of the three clearly is refused unless the caller gives the factor to ms.
Every map is labelled with where it came from: a scanner's mono-exponential T2 is not the
EPG water T2 that `maps.t2` fits (it is longer where refocusing is imperfect or fat is present).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.kinds import ImageKind
from ..volume import Volume

# Median of the positive values of a limb T2 map (muscle ~30-50 ms, some fat and fluid) by
# storage unit; the gaps between the ranges are what is refused as ambiguous.
MEDIAN_RANGES = {"ms": (12.0, 150.0), "ms x 10": (200.0, 1500.0), "s": (0.012, 0.15)}
FACTORS_TO_MS = {"ms": 1.0, "ms x 10": 0.1, "s": 1000.0}
UNIT_CODES = {"ms": "ms", "s": "s", "us": "us"}
UNIT_FACTORS = {"ms": 1.0, "s": 1000.0, "us": 0.001}


def read_scanner_t2_map(path_or_volume, scale_to_ms: float | None = None) -> Volume:
    """A scanner T2 map as a Volume in ms, with `source` saying which scanner method made it.

    `path_or_volume`: a DICOM folder/file of the map series, a NIfTI/NRRD file, or a Volume.
    `scale_to_ms`: factor from the stored values to ms (e.g. 0.1); None detects it.
    """
    if isinstance(path_or_volume, Volume):
        volume, units, source = path_or_volume, path_or_volume.metadata.get("units"), None
    else:
        volume, units = _load(path_or_volume)
        source = str(path_or_volume)
    source = source or volume.source_name("scanner T2 map")
    values = np.asarray(volume.array, dtype=np.float32)
    if not np.isfinite(values).all():
        values = np.where(np.isfinite(values), values, 0).astype(np.float32)
    factor, reason = _factor_to_ms(values, units, scale_to_ms, source)
    return volume.with_array(values * np.float32(factor), units="ms", image_kind=ImageKind.T2_MAP.value,
                             source=f"scanner mono-exponential T2 ({vendor_method(volume.metadata)})",
                             scanner_t2_scale={"factor_to_ms": factor, "reason": reason})


def vendor_method(metadata: dict) -> str:
    """A short name of the scanner method, from vendor and series description."""
    vendor = str(metadata.get("vendor") or metadata.get("manufacturer") or "").upper()
    text = str(metadata.get("series_description") or "").upper().replace(" ", "").replace("_", "")
    if "SIEMENS" in vendor or "MAPIT" in text or "TINI" in text:
        if "TINI" in text:
            return "Siemens GRAPPATINI"
        return "Siemens MapIt" if "MAPIT" in text else "Siemens T2 map"
    if vendor.startswith("GE") or "GENERAL ELECTRIC" in vendor or "CARTIGRAM" in text:
        return "GE Cartigram" if "CARTIGRAM" in text else "GE T2 map"
    if "PHILIPS" in vendor:
        return "Philips T2 map"
    return "vendor unknown"


def _load(path) -> tuple[Volume, str | None]:
    from ..io.load import select_series
    from ..io.nifti import is_image_file, read_volume
    path = Path(path)
    if is_image_file(path):
        volume = read_volume(path)
        return volume, volume.metadata.get("units")
    series = select_series(path, ImageKind.T2_MAP)
    stacks = series.echo_stacks(ImageKind.T2_MAP)
    units = {s.frames[0].values.units for s in stacks} - {None}
    volume = series.to_volume(ImageKind.T2_MAP)
    volume.metadata["value_mapping"] = stacks[0].frames[0].values.source
    return volume, units.pop() if len(units) == 1 else None


def _factor_to_ms(values: np.ndarray, units, scale_to_ms, source) -> tuple[float, str]:
    if scale_to_ms is not None:
        if not (np.isfinite(scale_to_ms) and scale_to_ms > 0):
            raise InputError("--scanner-t2-scale", f"expected a positive factor to ms, got {scale_to_ms}")
        return float(scale_to_ms), "factor given"
    positive = values[values > 0]
    if positive.size == 0:
        raise InputError(source, "T2 map holds no positive value")
    median = float(np.median(positive))
    unit = str(units).strip().lower() if units else None
    if unit in UNIT_FACTORS:
        factor = UNIT_FACTORS[unit]
        if not MEDIAN_RANGES["ms"][0] <= median * factor <= MEDIAN_RANGES["ms"][1]:
            raise InputError(source, f"header says the T2 map is in {unit}, but its median positive value "
                                     f"{median * factor:.3g} ms is implausible; pass --scanner-t2-scale")
        return factor, f"header unit {unit}"
    for name, (low, high) in MEDIAN_RANGES.items():
        if low <= median <= high:
            return FACTORS_TO_MS[name], f"median positive value {median:.4g} looks like {name}"
    raise InputError(source, f"cannot tell the unit of the T2 map (median positive value {median:.4g} fits "
                             "neither ms, ms x 10 nor seconds); pass --scanner-t2-scale (factor to ms)")
