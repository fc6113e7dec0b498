"""`myositis-qmri segment`: label every thigh muscle, left and right, on a structural image."""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("image", type=Path, help="structural image (NIfTI/NRRD, or a DICOM series)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda")


def _read_image(path: Path):
    from ..io import is_image_file, read_volume
    if path.is_dir() or not is_image_file(path):
        try:
            from ..io import dicom  # written by the DICOM reader's owner
            return dicom.read_dicom_volume(path)
        except (ImportError, AttributeError):
            from ..errors import InputError
            raise InputError(path, "not a NIfTI/NRRD file (DICOM input needs io.dicom.read_dicom_volume)") from None
    return read_volume(path)


def main(args) -> int:
    from ..progress import step
    from ..segmentation.export import write_segmentation
    from ..segmentation.infer import segment_muscles
    image = _read_image(args.image)
    step(f"segmenting {args.image}")
    labels = segment_muscles(image, args.model, device=args.device)
    paths = write_segmentation(labels, args.out)
    for path in paths.values():
        print(path)
    return 0
