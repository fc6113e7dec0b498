"""What a series is for: MESE, multi-echo GRE/Dixon, vendor maps, or structural weighting.

Works on plain header-like values so DICOM series and NIfTI files with BIDS sidecars (or
only a file name) share one set of rules. Header evidence (image kinds, sequence type, echo
times, TR/TE/TI) wins; the description is the tie-breaker when headers are silent.
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from .kinds import ImageKind, SeriesClass

_VENDOR_MAP_CLASSES = [(ImageKind.FAT_FRACTION, SeriesClass.VENDOR_FF), (ImageKind.T2_MAP, SeriesClass.VENDOR_T2),
                       (ImageKind.WATER, SeriesClass.VENDOR_WATER), (ImageKind.FAT, SeriesClass.VENDOR_FAT)]
_GRE_NAMES = re.compile(r"(^|[^a-z])(gre|fl[23]d|fl2d|ffe|fgre|spgr|vibe|dixon|ideal|mdixon|flash|me_?gre|lava|qdess)",
                        re.I)
_SE_NAMES = re.compile(r"(^|[^a-z])(se|mese|se_?mc|msme|cpmg|t2_?map|tse|fse|mse|se2d\d*)", re.I)


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (text or "").lower())


def is_spin_echo(scanning_sequence: str = "", echo_pulse_sequence: str | None = None,
                 sequence_name: str = "", description: str = "") -> bool | None:
    """True for spin echo, False for gradient echo, None when nothing says."""
    if echo_pulse_sequence in ("SPIN",):
        return True
    if echo_pulse_sequence in ("GRADIENT",):
        return False
    seq = set((scanning_sequence or "").upper().split("\\"))
    if "GR" in seq or "EP" in seq:
        return False
    if "SE" in seq:
        return True
    name = (sequence_name or "").lower().lstrip("*")
    if name.startswith(("se", "tse", "fse", "me2d", "tir", "msme")):
        return True
    if name.startswith(("fl", "gre", "fgre", "me3d", "tfl", "ffe")):
        return False
    if _GRE_NAMES.search(description or ""):
        return False
    if _SE_NAMES.search(_words(description)):
        return True
    return None


def equally_spaced(echo_times_ms, rel_tol: float = 0.02) -> bool:
    te = np.sort(np.asarray(echo_times_ms, float))
    if te.size < 2:
        return False
    steps = np.diff(te)
    return bool(np.all(steps > 0) and np.allclose(steps, np.median(steps), rtol=rel_tol, atol=0.05))


def classify_series(kinds: Iterable[ImageKind], echo_times_ms=(), *, scanning_sequence: str = "",
                    sequence_variant: str = "", sequence_name: str = "", echo_pulse_sequence: str | None = None,
                    repetition_time_ms: float | None = None, inversion: bool = False,
                    inversion_time_ms: float | None = None, description: str = "", n_echoes: int | None = None) -> SeriesClass:
    """One SeriesClass from the evidence (see module docstring)."""
    kinds = set(kinds)
    for kind, series_class in _VENDOR_MAP_CLASSES:
        if kind in kinds:
            return series_class
    te = sorted(t for t in echo_times_ms if t is not None)
    n_echoes = n_echoes or len(te)
    spin = is_spin_echo(scanning_sequence, echo_pulse_sequence, sequence_name, description)
    if (ImageKind.IN_PHASE in kinds or ImageKind.OPPOSED_PHASE in kinds) and n_echoes >= 2:
        return SeriesClass.MULTIECHO_GRE
    if n_echoes >= 2:
        if spin is False or (ImageKind.PHASE in kinds and spin is not True):
            return SeriesClass.MULTIECHO_GRE
        if spin is True and n_echoes >= 4:  # unequal spacing is the T2 fit's error to report
            return SeriesClass.MESE
        if spin is None and te and n_echoes >= 4 and equally_spaced(te) and te[0] >= 5.0:
            return SeriesClass.MESE
        if te and max(te) < 20.0:
            return SeriesClass.MULTIECHO_GRE
        if spin is True:  # dual-echo PD/T2
            return SeriesClass.T2W
    return _structural(te[0] if te else None, repetition_time_ms, inversion, inversion_time_ms,
                       sequence_variant, description, spin)


def _structural(te_ms, tr_ms, inversion, ti_ms, sequence_variant, description, spin) -> SeriesClass:
    words = _words(description)
    if (inversion and ti_ms is not None and 80 <= ti_ms <= 300) or re.search(r"(^|_)(stir|tirm|spair_?stir)", words):
        return SeriesClass.STIR
    if re.search(r"(^|_)t1", words):
        return SeriesClass.T1W
    if re.search(r"(^|_)t2", words):
        return SeriesClass.T2W
    if te_ms is not None and tr_ms is not None:
        if tr_ms <= 1000 and te_ms <= 30:
            return SeriesClass.T1W
        if tr_ms >= 1500 and te_ms >= 60:
            return SeriesClass.T2W
    if re.search(r"(^|_)(pd|dixon|water|fat|localizer|scout)", words) or te_ms is not None:
        return SeriesClass.STRUCTURAL
    return SeriesClass.UNKNOWN
