"""Scanner fat-fraction maps: detect the stored scaling (fraction, percent, per-mille) -> percent.

DICOM rescale, Real World Value Mapping and Philips private scaling are applied by the reader;
what is left is the vendor's unit. Thigh maps include subcutaneous fat, so the upper tissue
percentile sits near the top of the scale: ~1 (fraction), ~100 (percent) or ~1000 (per-mille,
GE IDEAL-IQ and some Siemens exports). Values that fit none of these are refused rather than
guessed; the user then gives the factor (`ff_scale`, stored value x S = percent).
"""
from __future__ import annotations

import numpy as np

from ...errors import InputError

# (low, high) bounds of the 99.5th percentile of nonzero voxels for each unit, and its factor.
SCALES = (("fraction", 0.3, 1.05, 100.0), ("percent", 30.0, 105.0, 1.0), ("per-mille", 300.0, 1050.0, 0.1))


def detect_ff_scale(values: np.ndarray, vendor: str | None = None, source=None) -> tuple[float, str]:
    """Factor taking stored values to percent, and the unit's name; InputError when ambiguous."""
    finite = values[np.isfinite(values)]
    tissue = finite[finite != 0]
    if tissue.size == 0:
        raise InputError(source, "fat-fraction map is empty (all zero or NaN)")
    if tissue.min() < -0.05 * max(abs(float(tissue.max())), 1e-9) and np.percentile(tissue, 1) < 0:
        raise InputError(source, f"fat-fraction map has negative values down to {tissue.min():g}; "
                                 "cannot tell its scaling, pass --ff-scale")
    top = float(np.percentile(tissue, 99.5))
    vendor_name = (vendor or "").lower()
    for name, low, high, factor in SCALES:
        if low <= top <= high:
            return factor, name
    hint = " (GE stores per-mille: --ff-scale 0.1)" if "ge" in vendor_name.split() or "general electric" in vendor_name else ""
    raise InputError(source, f"cannot tell the fat-fraction scaling: 99.5th percentile is {top:g}, not near "
                             f"1 (fraction), 100 (percent) or 1000 (per-mille); pass --ff-scale S with "
                             f"stored value x S = percent{hint}")


def vendor_ff_percent(values: np.ndarray, ff_scale: float | None = None, vendor: str | None = None,
                      source=None) -> tuple[np.ndarray, str]:
    """The map in percent (0-100, NaN -> 0) and a note of the scaling used."""
    values = np.asarray(values, dtype=np.float32)
    if ff_scale is not None:
        if not np.isfinite(ff_scale) or ff_scale <= 0:
            raise InputError("--ff-scale", f"must be a positive number, got {ff_scale}")
        factor, name = float(ff_scale), f"x{ff_scale:g} (given)"
    else:
        factor, name = detect_ff_scale(values, vendor, source)
    percent = np.clip(np.nan_to_num(values * np.float32(factor)), 0.0, 100.0)
    return percent.astype(np.float32), name
