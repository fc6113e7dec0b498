"""Optional acquisition attributes (DICOM headers, BIDS sidecars) read so that absent is unknown.

A header that leaves an attribute out, empty or zero says nothing about it; the value None says
so to every later stage, which then takes its documented fallback (for example both slice-profile
models tried for a MESE of unknown MRAcquisitionType) instead of a silent default.
"""
from __future__ import annotations


def _number(value) -> float | None:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def acquisition_type(value) -> str | None:
    """"2D" or "3D" from MRAcquisitionType; None (unknown) when absent, empty or anything else,
    so that a header which does not say is never read as 2D."""
    text = str(value or "").strip().upper()
    return text if text in ("2D", "3D") else None


def field_strength_tesla(value) -> float | None:
    """MagneticFieldStrength in tesla; None (unknown) when absent, zero or implausible. Some older
    scanners wrote it in gauss (15000 for 1.5 T), which is converted."""
    tesla = _number(value)
    if tesla is not None and tesla > 100:
        tesla /= 10000.0
    return tesla if tesla is not None and 0.05 <= tesla <= 15 else None


def refocusing_angle_deg(flip_angle, refocusing_flip_angle=None) -> float | None:
    """The refocusing angle of a spin-echo train, None when unknown.

    BIDS gives RefocusingFlipAngle; DICOM spin-echo headers give the refocusing pulse as FlipAngle
    on Siemens/Philips (180 or lower), but a FlipAngle of 90 or less is the excitation angle and
    says nothing about refocusing.
    """
    stated = _number(refocusing_flip_angle)
    if stated is not None and 0 < stated <= 180:
        return stated
    flip = _number(flip_angle)
    return flip if flip is not None and 90 < flip <= 180 else None
