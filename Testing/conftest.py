"""Shared pytest fixtures: the real data folder (skips when absent) and temporary outputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("MYOSITIS_QMRI_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (real MRI); tests using it skip when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent")
    return path


@pytest.fixture
def calf_roi_folder(tmp_path) -> Path:
    """A dafne-style calf outline pair (t1_manual_rois.npz, t1_example.npz): two legs, each with a
    tibialis anterior, a peroneus and a soleus drawn as discs, 1 mm pixels."""
    folder = tmp_path / "calf_rois"
    folder.mkdir()
    size = (200, 320)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    masks = {}
    for side, cx in (("R", 80), ("L", 240)):
        for name, (dy, dx, r) in {"Tibialis Anterior": (-30, -10, 14), "Peroneus": (0, 35, 12),
                                  "Soleus": (30, 0, 30)}.items():
            masks[f"{name}_{side}"] = (np.hypot(yy - 100 - dy, xx - cx - dx) <= r)[..., None].astype(np.uint8)
    np.savez(folder / "t1_manual_rois.npz", **masks)
    np.savez(folder / "t1_example.npz", image=np.zeros(size), resolution=np.array([1.0, 1.0]))
    return folder
