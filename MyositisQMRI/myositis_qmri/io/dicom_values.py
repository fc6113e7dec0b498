"""Stored DICOM pixel values to physical values, and raw phase integers to radians.

Order of precedence for the linear map stored -> value: Real World Value Mapping (the
standard's way to give quantitative values), then Philips' private scale slope/intercept
(2005,100E)/(2005,100D) on top of Rescale Slope/Intercept, then plain Rescale Slope/Intercept.
`phase_to_radians` is the one place that decides how integer phase images are scaled; the
DICOM reader, the NIfTI loader and the fat-fraction stage all call it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

PHILIPS_SCALE_SLOPE = (0x2005, 0x100E)
PHILIPS_SCALE_INTERCEPT = (0x2005, 0x100D)
PHILIPS_PRIVATE_FRAME_GROUP = (0x2005, 0x140F)


@dataclass(frozen=True)
class ValueMap:
    """value = stored * slope + intercept; `source` says which header gave it."""

    slope: float = 1.0
    intercept: float = 0.0
    source: str = "none"
    units: str | None = None
    rescale_slope: float = 1.0   # the plain Rescale Slope, kept to know the stored step

    def apply(self, stored: np.ndarray) -> np.ndarray:
        values = stored.astype(np.float32)
        if self.slope != 1.0 or self.intercept != 0.0:
            values = values * np.float32(self.slope) + np.float32(self.intercept)
        return values


def _float(value, default=None):
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _rwvm(items) -> tuple[float, float, str | None] | None:
    for item in items or []:
        slope = _float(item.get("RealWorldValueSlope"))
        if slope is None or slope == 0:
            continue
        intercept = _float(item.get("RealWorldValueIntercept"), 0.0)
        units = None
        codes = item.get("MeasurementUnitsCodeSequence")
        if codes:
            units = str(codes[0].get("CodeValue", "")) or None
        return slope, intercept, units
    return None


def _private_float(dataset, tag) -> float | None:
    if dataset is None or tag not in dataset:
        return None
    value = dataset[tag].value
    if isinstance(value, (bytes, bytearray)) and len(value) == 4:
        return _float(np.frombuffer(bytes(value), "<f4")[0])
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return _float(value)


def value_map(rescale_source, rwvm_items=None, philips_source=None) -> ValueMap:
    """Build the stored -> value map from the datasets that hold each piece.

    `rescale_source` holds RescaleSlope/Intercept (the image, or an enhanced frame's
    PixelValueTransformation item); `rwvm_items` the RealWorldValueMapping items;
    `philips_source` the dataset holding Philips (2005,100E)/(2005,100D).
    Philips: FP = (SV*RS + RI) / (RS*SS) (the vendor's documented relation); when the plain
    rescale is the identity and a private intercept SI is present, FP = (SV - SI) / SS.
    """
    rs = _float(rescale_source.get("RescaleSlope"), 1.0) if rescale_source is not None else 1.0
    ri = _float(rescale_source.get("RescaleIntercept"), 0.0) if rescale_source is not None else 0.0
    if rs == 0:
        rs = 1.0
    rwvm = _rwvm(rwvm_items)
    if rwvm is not None:
        return ValueMap(rwvm[0], rwvm[1], "real_world_value_mapping", rwvm[2], rs)
    ss = _private_float(philips_source, PHILIPS_SCALE_SLOPE)
    if ss is not None and ss != 0:
        si = _private_float(philips_source, PHILIPS_SCALE_INTERCEPT) or 0.0
        if ri == 0.0 and rs == 1.0 and si != 0.0:
            return ValueMap(1.0 / ss, -si / ss, "philips_private_scale", None, rs)
        return ValueMap(1.0 / ss, ri / (rs * ss), "philips_private_scale", None, rs)
    return ValueMap(rs, ri, "rescale" if (rs, ri) != (1.0, 0.0) else "none", None, rs)


def stored_value_range(bits_stored: int | None, signed: bool, vmap: ValueMap) -> tuple[float, float, float] | None:
    """(lowest, highest, step) the map can produce from the header's bit depth."""
    if not bits_stored:
        return None
    lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2 ** bits_stored - 1)
    a, b = lo * vmap.slope + vmap.intercept, hi * vmap.slope + vmap.intercept
    return min(a, b), max(a, b), abs(vmap.slope)


# A wrapped phase image fills nearly its whole span (background noise and phase wraps cover
# every angle); a header span the data fill less than a quarter of is a wrong BitsStored
# (12-bit Siemens phase declared as 16-bit fills 1/16), and a span inferred from the data
# must be at least half filled to be believed.
HEADER_FILL_MIN = 0.25
DATA_FILL_MIN = 0.5


def phase_to_radians(values: np.ndarray, source=None, value_range=None) -> np.ndarray:
    """Phase image in any common vendor scaling -> radians in [-pi, pi).

    `value_range` = (lowest, highest, step) is what the header's BitsStored, signedness and
    rescale allow. It is used when the data fill a plausible part of it; when the data lie
    outside it, or fill less than HEADER_FILL_MIN of it (a BitsStored larger than the values
    need), the scaling is taken from the data's own range instead:
    - radians already: everything within [-pi, 2 pi] (+ rounding);
    - milliradians (GE writes phase x 1000): |values| <= 3142 with a negative minimum;
    - degrees: within [-180, 180] with values beyond 2 pi;
    - integers over a power-of-two span: unsigned 0..2^k-1 (Siemens 0..4095 as in NIfTI
      exports) maps to [-pi, pi); signed -2^(k-1)..2^(k-1)-1 (Siemens after rescale, -4096..
      4094 with step 2) maps to [-pi, pi); the data must fill DATA_FILL_MIN of that span.
    Anything else is refused with the reason: guessing a phase scale silently would swap fat
    and water in the fit.
    """
    values = np.asarray(values, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise InputError(source, "phase image has no finite values")
    data_lo, data_hi = float(finite.min()), float(finite.max())
    header_note = ""
    if value_range is not None:
        lo, hi, step = (float(v) for v in value_range)
        fill = (data_hi - data_lo + step) / (hi - lo + step)
        if data_lo < lo - 1e-3 or data_hi > hi + 1e-3:
            header_note = f"values lie outside the header's range {lo:g}..{hi:g}; "
        elif fill < HEADER_FILL_MIN:
            header_note = (f"values fill only {100 * fill:.1f} % of the header's range {lo:g}..{hi:g} "
                           "(BitsStored larger than the data use); ")
        else:
            return _scale_span(values, lo, hi, step, source)
    return _phase_from_data(values, data_lo, data_hi, source, header_note)


def _phase_from_data(values, lo: float, hi: float, source, header_note: str = "") -> np.ndarray:
    """Radians from the data's own range (see `phase_to_radians`): of the conventions whose span
    holds the data, the one they fill best; refused when none is filled to DATA_FILL_MIN."""
    if lo >= -math.pi - 0.01 and hi <= 2 * math.pi + 0.01:
        return _wrap(values)
    candidates = []  # (fill, description, radians)
    extent = max(-lo, hi)
    if lo < 0 and extent <= 3142.6:
        candidates.append(((hi - lo) / (2000 * math.pi), "milliradians", lambda: _wrap(values / np.float32(1000.0))))
    if lo < 0 and extent <= 180.5:
        candidates.append(((hi - lo) / 360.0, "degrees", lambda: _wrap(np.deg2rad(values))))
    if lo >= 0:
        span_lo, span_hi = 0.0, 2.0 ** math.ceil(math.log2(hi + 1.0)) - 1.0
    else:
        half = 2.0 ** math.ceil(math.log2(max(-lo, hi + 1.0)))
        span_lo, span_hi = -half, half - 1.0
    if span_hi - span_lo + 1.0 >= 64:
        candidates.append(((hi - lo + 1.0) / (span_hi - span_lo + 1.0), f"the power-of-two span {span_lo:g}..{span_hi:g}",
                           lambda: _scale_span(values, span_lo, span_hi, 1.0, source)))
    best = max(candidates, key=lambda c: c[0], default=None)
    if best is None or best[0] < DATA_FILL_MIN:
        told = f"; they fill only {100 * best[0]:.0f} % of {best[1]}" if best else ""
        raise InputError(source, f"cannot tell the phase scaling: {header_note}values {lo:g}..{hi:g} are not "
                                 f"radians{told}")
    return best[2]()


def _scale_span(values, lo: float, hi: float, step: float, source) -> np.ndarray:
    """A stored span lo..hi (one `step` short of a full turn) -> [-pi, pi)."""
    period = hi - lo + step
    if period <= 2 * math.pi + 0.01 and lo >= -math.pi - 0.01:
        return _wrap(values)
    if period < 64:
        raise InputError(source, f"cannot tell the phase scaling from values {lo:g}..{hi:g}")
    center = lo + period / 2.0
    return _wrap((values - np.float32(center)) * np.float32(2 * math.pi / period))


def _wrap(radians: np.ndarray) -> np.ndarray:
    """Into [-pi, pi)."""
    out = np.mod(radians + np.float32(math.pi), np.float32(2 * math.pi)) - np.float32(math.pi)
    return out.astype(np.float32)
