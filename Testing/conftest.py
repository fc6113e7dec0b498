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


@pytest.fixture(scope="session")
def musclemap_data() -> Path:
    """SWastling/musclemap's tests/test_data (real scans, MIT; not in ../shared/data), named by
    MYOSITIS_QMRI_MUSCLEMAP_DATA; tests using it skip without it."""
    path = Path(os.environ.get("MYOSITIS_QMRI_MUSCLEMAP_DATA", "/nonexistent"))
    if not (path / "b1" / "input" / "se_fa120.nii.gz").is_file():
        pytest.skip("musclemap test data not given (set MYOSITIS_QMRI_MUSCLEMAP_DATA to its tests/test_data)")
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


@pytest.fixture
def pelvis_like_image(tmp_path):
    """A 4-slice image file that holds no thigh: one wide body, two round 'hips' and a dark
    'bladder', 2 mm pixels."""
    from myositis_qmri.volume import Volume
    yy, xx = np.mgrid[0:120, 0:200]
    body = ((yy - 60) / 50) ** 2 + ((xx - 100) / 90) ** 2 <= 1
    image = np.where(body, 300.0, 5.0)
    for cx in (55, 145):
        image[np.hypot(yy - 60, xx - cx) <= 14] = 900.0
    image[np.hypot(yy - 55, xx - 100) <= 12] = 60.0
    array = np.stack([image * (1 + 0.05 * z) for z in range(4)]).astype(np.float32)
    volume = Volume(array, (2.0, 2.0, 5.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    from myositis_qmri.io import write_volume
    return write_volume(volume, tmp_path / "pelvis.nii.gz")
