"""Water and fat EPG dictionaries over a (B1, T2) grid, cached in memory and on disk.

A dictionary is keyed by a hash of every sequence and model parameter; on disk it lives under
$MYOSITIS_QMRI_CACHE or ~/.cache/myositis-qmri/epg as an .npz written atomically, so parallel
runs never read a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...io.atomic import atomic_path
from .. import epg
from ..relaxation import FAT_T1_MS, WATER_T1_MS

CACHE_VERSION = 2
_MEMORY: dict[str, "EpgDictionary"] = {}


@dataclass(frozen=True)
class SequenceModel:
    """Everything that shapes the simulated echo trains (times in ms, angles in degrees)."""

    n_echoes: int
    echo_spacing_ms: float
    profile: str = "2d"                        # "2d" slice-selective or "3d" non-selective
    refocusing_angle_deg: float = 180.0
    excitation_angle_deg: float = 90.0
    refocusing_width_ratio: float = epg.DEFAULT_REFOCUSING_RATIO
    tbw: float = epg.DEFAULT_TBW
    pulse_shape: str = epg.DEFAULT_PULSE_SHAPE
    water_t1_ms: float = WATER_T1_MS
    fat_t1_ms: float = FAT_T1_MS
    first_echo_ms: float | None = None         # only recorded; EPG echoes sit at k * spacing

    def key(self, **grid) -> str:
        text = json.dumps({"v": CACHE_VERSION, **asdict(self), **grid}, sort_keys=True, default=float)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class EpgDictionary:
    """water[b, t, e]: water echo train at b1_grid[b], t2_grid_ms[t]; fat[b, e] likewise at the fat T2."""

    model: SequenceModel
    t2_grid_ms: np.ndarray
    b1_grid: np.ndarray
    fat_t2_ms: float
    water: np.ndarray
    fat: np.ndarray


def default_grids(profile: str, t2_range_ms=(10.0, 120.0), t2_ratio: float = 1.02,
                  b1_step: float = 0.01, b1_range=None):
    """Log-spaced T2 grid (2 % steps) and a B1 grid; the 3d model searches B1 <= 1 only.

    In a non-selective model B1 = 1 + d and 1 - d give nearly the same train (flip angles
    alpha and 360 - alpha refocus alike), so the 3d search folds B1 into [0.4, 1.0].
    """
    n_t2 = int(np.ceil(np.log(t2_range_ms[1] / t2_range_ms[0]) / np.log(t2_ratio))) + 1
    t2 = t2_range_ms[0] * t2_ratio ** np.arange(n_t2)
    if b1_range is None:
        b1_range = (0.4, 1.0) if profile == "3d" else (0.4, 1.4)
    n_b1 = int(round((b1_range[1] - b1_range[0]) / b1_step)) + 1
    return t2, np.linspace(b1_range[0], b1_range[1], n_b1)


def cache_dir() -> Path:
    root = os.environ.get("MYOSITIS_QMRI_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "myositis-qmri" / "epg"


def build_dictionary(model: SequenceModel, fat_t2_ms: float, t2_grid_ms=None, b1_grid=None,
                     use_disk: bool = True) -> EpgDictionary:
    """The water/fat dictionary for `model`, from memory, disk cache, or simulated (then cached)."""
    if t2_grid_ms is None or b1_grid is None:
        t2_default, b1_default = default_grids(model.profile)
        t2_grid_ms = t2_default if t2_grid_ms is None else t2_grid_ms
        b1_grid = b1_default if b1_grid is None else b1_grid
    t2_grid_ms = np.asarray(t2_grid_ms, dtype=float)
    b1_grid = np.asarray(b1_grid, dtype=float)
    key = model.key(t2=np.round(t2_grid_ms, 6).tolist(), b1=np.round(b1_grid, 6).tolist(),
                    fat_t2=round(float(fat_t2_ms), 6))
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / f"epg-{key}.npz"
    dictionary = None
    if use_disk and path.exists():
        try:
            with np.load(path) as stored:
                water, fat = stored["water"], stored["fat"]
            if water.shape == (b1_grid.size, t2_grid_ms.size, model.n_echoes):
                dictionary = EpgDictionary(model, t2_grid_ms, b1_grid, float(fat_t2_ms), water, fat)
        except (OSError, ValueError, KeyError):
            dictionary = None   # a damaged cache file is simply rebuilt
    if dictionary is None:
        dictionary = _simulate(model, fat_t2_ms, t2_grid_ms, b1_grid)
        if use_disk:
            try:
                with atomic_path(path) as tmp:
                    np.savez(tmp, water=dictionary.water, fat=dictionary.fat)
            except OSError:
                pass            # a read-only home only costs the rebuild next time
    _MEMORY[key] = dictionary
    return dictionary


def simulate_trains(model: SequenceModel, t2_ms, b1, t1_ms: float) -> np.ndarray:
    """Echo trains for arbitrary (T2, B1) under `model` (used for dictionaries and tests)."""
    return epg.cpmg_train(t2_ms, b1, model.n_echoes, model.echo_spacing_ms, t1_ms,
                          model.refocusing_angle_deg, model.excitation_angle_deg, model.profile,
                          model.refocusing_width_ratio, model.tbw, pulse_shape=model.pulse_shape)


def _simulate(model: SequenceModel, fat_t2_ms: float, t2_grid_ms, b1_grid) -> EpgDictionary:
    water = simulate_trains(model, t2_grid_ms[None, :], b1_grid[:, None], model.water_t1_ms)
    fat = simulate_trains(model, float(fat_t2_ms), b1_grid, model.fat_t1_ms)
    return EpgDictionary(model, t2_grid_ms, b1_grid, float(fat_t2_ms), water, fat)
