"""`myositis-qmri t2`: water T2 (EPG, water/fat, B1) or mono-exponential T2 from a MESE series.

Writes t2w.nii.gz (ms), ffmese.nii.gz (%), b1.nii.gz, residual.nii.gz and t2w_crlb.nii.gz
(Cramer-Rao bound of water T2, ms) on the input grid, plus t2_fit.json describing the fit.
When the input is a scanner T2 map (a DICOM series classified as one, or any image with
--scanner-t2), it is imported in ms as t2w.nii.gz, labelled as the scanner's T2 in t2_fit.json.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..io.atomic import write_text_atomic
from ..io.echo_times import parse_te_ms_argument
from ..progress import step


def add_arguments(parser) -> None:
    parser.add_argument("input", nargs="+", help="DICOM folder/file, a 4-D NIfTI/NRRD, or one file per echo")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--te-ms", help="echo times, e.g. 10,20,30 (ms; seconds are detected)")
    parser.add_argument("--model", choices=("epg", "mono"), default="epg")
    parser.add_argument("--profile", choices=("2d", "3d"), default=None,
                        help="slice-selective (2d) or non-selective (3d) EPG model; default from headers")
    parser.add_argument("--fat-t2", default="151", help="fat T2 in ms, or 'auto' to calibrate on subcutaneous fat")
    parser.add_argument("--mask", help="fit only inside this mask (resampled by position if on another grid)")
    parser.add_argument("--fat-suppressed", action="store_true",
                        help="fat-saturated MESE: single-component water fit with B1")
    parser.add_argument("--drop-first-echo", action="store_true", help="mono model: ignore the first echo")
    parser.add_argument("--scanner-t2", action="store_true",
                        help="INPUT is a scanner T2 map (MapIt, Cartigram, ...): import it instead of fitting")
    parser.add_argument("--scanner-t2-scale", type=float, default=None,
                        help="scanner T2 map: factor from stored values to ms (default: detected)")
    parser.add_argument("--refocusing-ratio", default=None,
                        help="2d model: refocusing / excitation slice width, or 'auto' (default): calibrated "
                             "on this series' bright low-fat voxels, kept at 1.2 unless another ratio (or, "
                             "when the headers do not say 2D or 3D, the 3d model) fits clearly better")
    add_t2_fit_arguments(parser)


def add_t2_fit_arguments(parser, step: str = "") -> None:
    """--b1-smoothing, --device and --no-bias-correction: the water-T2 fit options that `t2` and
    `run`/`batch` share (dests b1_smoothing_mm, t2_device, t2_bias_correction). step prefixes
    the help, e.g. "T2 step: "."""
    parser.add_argument("--b1-smoothing", dest="b1_smoothing_mm", type=float, default=None, metavar="MM",
                        help=step + "smooth B1 in plane (Gaussian FWHM in mm, e.g. 20) and refit water T2 with "
                                    "B1 fixed where the fit allows it; skipped when the B1 map is not smooth. "
                                    "Default: voxel-wise B1")
    parser.add_argument("--device", dest="t2_device", choices=("auto", "cpu", "cuda"), default="auto",
                        help=step + "dictionary fit on numpy (cpu) or torch on a CUDA GPU; auto uses the GPU "
                                    "when torch sees one")
    parser.add_argument("--no-bias-correction", dest="t2_bias_correction", action="store_false",
                        help=step + "report the plain maximum-likelihood water T2 (median-unbiased, but its "
                                    "mean reads long in fatty muscle) instead of the bias-corrected one "
                                    "(mean-unbiased)")


def _load(inputs, te_ms):
    try:
        from ..io.load import load_echo_series
    except ImportError:  # the NIfTI reader alone
        from ..io.nifti import read_echo_files
        return read_echo_files(inputs, te_ms)
    return load_echo_series(inputs if len(inputs) > 1 else inputs[0], te_ms=te_ms)


def _fat_t2(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError("--fat-t2", f"expected a number of ms or 'auto', got {text!r}") from None


def _refocusing_ratio(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        ratio = float(text)
    except ValueError:
        raise InputError("--refocusing-ratio", f"expected a ratio or 'auto', got {text!r}") from None
    if not 0.5 <= ratio <= 5:
        raise InputError("--refocusing-ratio", "expected a ratio between 0.5 and 5")
    return ratio


def _is_scanner_t2_map(args) -> bool:
    """--scanner-t2, or one DICOM input holding a scanner T2 map and no MESE series."""
    if args.scanner_t2 or args.scanner_t2_scale is not None:
        return True
    from ..io.discover import discover
    from ..io.kinds import SeriesClass
    from ..io.nifti import is_image_file
    if len(args.input) != 1 or is_image_file(Path(args.input[0])):
        return False
    classes = {s.series_class for s in discover(args.input[0]).series}
    return SeriesClass.VENDOR_T2 in classes and SeriesClass.MESE not in classes


def _import_scanner_t2(args, mask) -> int:
    from ..io.nifti import write_volume
    from ..maps.scanner_t2 import read_scanner_t2_map
    from ..maps.t2 import mask_on_grid
    step(f"importing scanner T2 map {args.input[0]}")
    t2 = read_scanner_t2_map(args.input[0], args.scanner_t2_scale)
    if mask is not None:
        t2 = t2.with_array(t2.array * mask_on_grid(mask, t2.geometry))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_volume(t2, out / "t2w.nii.gz", "float32")
    info = {"model": "scanner", "source": t2.metadata["source"],
            "scanner_t2_scale": t2.metadata["scanner_t2_scale"],
            "value_mapping": t2.metadata.get("value_mapping"),
            "note": "imported scanner T2 map (mono-exponential, vendor-fitted): not the EPG water T2; "
                    "it reads longer where refocusing is imperfect or fat is present. No FF or B1 map.",
            "outputs": {"water_t2_ms": "t2w.nii.gz"}}
    write_text_atomic(out / "t2_fit.json", json.dumps(info, indent=2, default=str))
    step(f"wrote t2w.nii.gz ({t2.metadata['source']}) to {args.out}")
    return 0


def main(args) -> int:
    from ..io.load import load_volume
    from ..maps.t2 import fit_water_t2, write_fit_info
    from ..maps.t2.b1map import checked_b1_smoothing_mm

    mask = load_volume(args.mask) if args.mask else None
    if _is_scanner_t2_map(args):
        return _import_scanner_t2(args, mask)
    te_ms = parse_te_ms_argument(args.te_ms)
    step(f"reading {', '.join(args.input)}")
    series = _load(args.input, te_ms)
    options = {"device": args.t2_device, "bias_correction": args.t2_bias_correction}
    if args.refocusing_ratio is not None:
        options["refocusing_width_ratio"] = _refocusing_ratio(args.refocusing_ratio)
    if args.b1_smoothing_mm is not None:
        options["b1_smoothing_mm"] = checked_b1_smoothing_mm(args.b1_smoothing_mm)
    step(f"fitting {args.model} T2 on {series.n_echoes} echoes")
    maps = fit_water_t2(series, mask=mask, model=args.model, profile=args.profile,
                        fat_t2_ms=_fat_t2(args.fat_t2), fat_suppressed=True if args.fat_suppressed else None,
                        drop_first_echo=args.drop_first_echo, source=args.input[0], **options)
    paths = maps.write(args.out)
    write_fit_info(maps, series, paths, Path(args.out) / "t2_fit.json")
    step(f"wrote {', '.join(Path(p).name for p in paths.values())} to {args.out}")
    return 0
