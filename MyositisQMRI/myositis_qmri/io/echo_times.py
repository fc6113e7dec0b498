"""Echo-time handling: unit detection (s versus ms) and spacing checks."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError


def echo_times_to_ms(values: Sequence[float], source=None) -> tuple[float, ...]:
    """Return echo times in ms, converting from seconds when every value is below 0.5.

    No clinical muscle sequence has TE below 0.5 ms, and none above 0.5 s, so the two units
    never overlap. BIDS stores seconds; MyoQMRI's sidecars and most headers store ms.
    """
    te = np.asarray([float(v) for v in values], dtype=float)
    if te.size == 0:
        raise InputError(source, "no echo times given")
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InputError(source, f"echo times must be positive numbers, got {te.tolist()}")
    if np.all(te < 0.5):
        te = te * 1000.0
    if np.any(te > 2000):
        raise InputError(source, f"echo times {te.tolist()} are not plausible in ms or s")
    return tuple(float(t) for t in te)


def parse_te_ms_argument(text: str | None) -> tuple[float, ...] | None:
    """Parse `--te-ms 10,20,30` (also accepts seconds, detected as above)."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError("--te-ms", f"cannot parse echo times {text!r}; use e.g. 10,20,30") from None
    return echo_times_to_ms(values, "--te-ms")


def require_uniform_spacing(echo_times_ms: Sequence[float], source=None, rel_tol: float = 0.02) -> float:
    """Return the echo spacing (ms) of a CPMG train, refusing unequal spacing."""
    te = np.asarray(echo_times_ms, dtype=float)
    if te.size < 2:
        raise InputError(source, f"a single echo (TE {te.tolist()} ms) cannot be fitted; need a multi-echo series")
    steps = np.diff(te)
    spacing = float(np.median(steps))
    if np.any(steps <= 0) or not np.allclose(steps, spacing, rtol=rel_tol, atol=0.05):
        raise InputError(source, f"echo times {np.round(te, 2).tolist()} ms are not equally spaced")
    return spacing
