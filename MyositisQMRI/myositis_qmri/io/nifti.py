"""NIfTI and NRRD reading and writing, with geometry, through SimpleITK.

SimpleITK converts NIfTI's RAS to LPS, so volumes read here share the DICOM convention.
4-D files become an EchoSeries; echo times come from the caller or a BIDS JSON sidecar.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume import EchoSeries, Volume
from .acquisition import field_strength_tesla, refocusing_angle_deg
from .atomic import atomic_path, write_text_atomic
from .echo_times import echo_times_to_ms

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def is_image_file(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES)


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def read_sidecar(path: str | Path) -> dict:
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(side, f"unreadable JSON sidecar ({exc})") from None


def _nifti_data_end(head: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (voxel offset + voxel data), from its header."""
    for header_class in (nib.Nifti1Header, nib.Nifti2Header):
        size = header_class.sizeof_hdr
        if len(head) < size:
            continue
        try:
            header = header_class.from_fileobj(io.BytesIO(head[:size]), check=False)
            shape = header.get_data_shape()
            bits = int(header["bitpix"])
            offset = int(header["vox_offset"])
        except Exception:  # not this header flavour (wrong sizeof_hdr or magic)
            continue
        if int(header["sizeof_hdr"]) != size or bits <= 0 or bits % 8 or offset < 0 or not shape:
            continue
        return offset + int(np.prod(shape, dtype=object)) * bits // 8
    return None


def _check_nifti_complete(path: Path) -> None:
    """Refuse a truncated NIfTI file: SimpleITK reads one silently, the missing voxels
    becoming zeros, and allocates whatever a damaged header declares."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                head = handle.read(544)
        else:
            with open(path, "rb") as handle:
                head = handle.read(544)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(path, f"not a readable NIfTI file ({exc})") from None
    needed = _nifti_data_end(head)
    if needed is None:
        raise InputError(path, "not a NIfTI file (header unreadable)")
    if not name.endswith(".gz"):
        held = path.stat().st_size
    else:
        with open(path, "rb") as handle:  # gzip trailer: uncompressed size modulo 2**32
            handle.seek(-4, os.SEEK_END)
            trailer = int.from_bytes(handle.read(4), "little")
        held = needed if trailer == needed % 2**32 else _gzip_length(path, needed)
        if held is None:
            raise InputError(path, "truncated or damaged NIfTI file (the gzip stream ends early or is corrupt)")
    if held < needed:
        raise InputError(path, f"truncated NIfTI file: the header declares {needed} bytes of image, "
                               f"the file holds {held}")


def _gzip_length(path: Path, limit: int) -> int | None:
    """Uncompressed length, read up to `limit` bytes; None for a truncated or corrupt stream."""
    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            while total < limit:
                block = handle.read(min(1 << 24, limit - total))
                if not block:
                    break
                total += len(block)
    except (OSError, EOFError, zlib.error):
        return None
    return total


def _read_sitk(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputError(path, "file not found")
    _check_nifti_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise InputError(path, f"not a readable NIfTI/NRRD image ({first[:200]})") from None


def _check_finite_geometry(image: sitk.Image, path: Path) -> None:
    values = list(image.GetSpacing()) + list(image.GetOrigin()) + list(image.GetDirection())
    if not np.all(np.isfinite(values)) or min(image.GetSpacing()) <= 0:
        raise InputError(path, "header has invalid geometry (spacing, origin or direction)")


def read_volume(path: str | Path) -> Volume:
    """Read a 3-D NIfTI/NRRD file (a 4-D file with one volume is accepted)."""
    path = Path(path)
    image = _read_sitk(path)
    _check_finite_geometry(image, path)
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise InputError(path, f"expected a 3-D image, got 4-D with {size[3]} volumes")
        image = sitk.Extract(image, size[:3] + (0,), (0, 0, 0, 0))
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(path, f"expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, "multi-component (vector/RGB) images are not supported")
    meta = {"source_files": [str(path)], "series_description": path.name, **read_sidecar(path)}
    return Volume.from_sitk(image, meta)


def read_echo_series(path: str | Path, echo_times_ms=None, image_kind: str = "magnitude") -> EchoSeries:
    """Read a 4-D NIfTI/NRRD as an EchoSeries.

    Echo times come from `echo_times_ms` or else the sidecar's `EchoTime` (BIDS seconds, or
    ms as MyoQMRI writes them; the unit is detected).
    """
    path = Path(path)
    image = _read_sitk(path)
    _check_finite_geometry(image, path)
    if image.GetDimension() != 4:
        raise InputError(path, f"expected a 4-D multi-echo image, got {image.GetDimension()}-D; "
                               "give one 3-D file per echo or a 4-D file")
    array = sitk.GetArrayFromImage(image)  # (echo, z, y, x)
    direction4 = np.asarray(image.GetDirection()).reshape(4, 4)
    sidecar = read_sidecar(path)
    if echo_times_ms is None:
        if "EchoTime" not in sidecar:
            raise InputError(path, "no echo times: pass --te-ms or add a JSON sidecar with EchoTime")
        echo_times_ms = np.atleast_1d(sidecar["EchoTime"]).tolist()
    echo_times_ms = echo_times_to_ms(echo_times_ms, path)
    if len(echo_times_ms) != array.shape[0]:
        raise InputError(path, f"{len(echo_times_ms)} echo times given for {array.shape[0]} echoes")
    return EchoSeries(
        array, echo_times_ms, image.GetSpacing()[:3], image.GetOrigin()[:3],
        tuple(direction4[:3, :3].ravel()), image_kind=image_kind,
        field_strength_t=field_strength_tesla(sidecar.get("MagneticFieldStrength")),
        refocusing_angle_deg=refocusing_angle_deg(sidecar.get("FlipAngle"), sidecar.get("RefocusingFlipAngle")),
        vendor=sidecar.get("Manufacturer") or None,
        metadata={"source_files": [str(path)], "series_description": path.name, **sidecar},
    )


def read_echo_files(paths, echo_times_ms=None, image_kind: str = "magnitude") -> EchoSeries:
    """One 3-D file per echo (or a single 4-D file) to an EchoSeries."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1:
        return read_echo_series(paths[0], echo_times_ms, image_kind)
    volumes = [read_volume(p) for p in paths]
    if echo_times_ms is None:
        echo_times_ms = []
        for p, v in zip(paths, volumes):
            if "EchoTime" not in v.metadata:
                raise InputError(p, "no echo time: pass --te-ms or add a JSON sidecar with EchoTime")
            echo_times_ms.append(v.metadata["EchoTime"])
    echo_times_ms = echo_times_to_ms(echo_times_ms, paths[0])
    if len(echo_times_ms) != len(paths):
        raise InputError(paths[0], f"{len(echo_times_ms)} echo times given for {len(paths)} files")
    for p, v in zip(paths[1:], volumes[1:]):
        if not v.geometry.same_grid(volumes[0].geometry):
            raise InputError(p, f"grid differs from {paths[0].name}; all echoes must share one grid")
    order = np.argsort(echo_times_ms)
    return EchoSeries.from_volumes([volumes[i] for i in order], [echo_times_ms[i] for i in order],
                                   image_kind=image_kind)


def write_volume(volume: Volume, path: str | Path, dtype=None) -> Path:
    """Write a Volume to NIfTI/NRRD atomically (the format follows the extension)."""
    path = Path(path)
    array = volume.array if dtype is None else volume.array.astype(dtype)
    with atomic_path(path) as tmp:
        sitk.WriteImage(Volume(array, volume.spacing_mm, volume.origin_mm, volume.direction).to_sitk(),
                        str(tmp), True)
    return path


def write_echo_series(series: EchoSeries, path: str | Path, sidecar: bool = True) -> Path:
    """Write a 4-D NIfTI/NRRD atomically, with a BIDS sidecar holding EchoTime in seconds."""
    path = Path(path)
    image = sitk.JoinSeries([series.echo(i).to_sitk() for i in range(series.n_echoes)])
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    if sidecar:
        info = {"EchoTime": [t / 1000.0 for t in series.echo_times_ms],
                "MagneticFieldStrength": series.field_strength_t,
                "Manufacturer": series.vendor, "ImageKind": series.image_kind}
        write_text_atomic(sidecar_path(path), json.dumps({k: v for k, v in info.items() if v is not None}, indent=2))
    return path
