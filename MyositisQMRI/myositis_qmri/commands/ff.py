"""`myositis-qmri ff`: fat-fraction maps from a DICOM folder or NIfTI water/fat, Dixon or FF inputs.

A DICOM folder (or files) is searched for, in order, the scanner's FF map, a multi-echo GRE
series with phase (or real/imaginary), and vendor water + fat images; `--method` forces one.
"""
from __future__ import annotations

import json

from ..errors import InputError
from ..io.echo_times import parse_te_ms_argument
from ..io.kinds import ImageKind
from ..maps.dixon import METHODS, compute_fat_fraction
from ..progress import step


def add_arguments(parser) -> None:
    parser.add_argument("dicom", nargs="*", help="DICOM folder(s) or files of the study")
    parser.add_argument("--magnitude", nargs="+", metavar="F", help="magnitude echoes: one 4-D file or one 3-D file per echo")
    parser.add_argument("--phase", nargs="+", metavar="F", help="phase echoes (radians or raw 0..4095 / -4096..4095)")
    parser.add_argument("--water", metavar="F", help="vendor water image")
    parser.add_argument("--fat", metavar="F", help="vendor fat image")
    parser.add_argument("--ff-map", metavar="F", help="the scanner's fat-fraction map")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--method", default="auto", choices=METHODS)
    parser.add_argument("--te-ms", help="echo times, comma separated (ms or s)")
    parser.add_argument("--field-t", type=float, help="field strength in tesla when the headers do not give it")
    sense = parser.add_mutually_exclusive_group()
    sense.add_argument("--clockwise", dest="clockwise", action="store_true", default=None,
                       help="the data precess clockwise (PrecessionIsClockwise=1, as the ISMRM toolbox "
                            "means it): used as they are; default: decided from the data")
    sense.add_argument("--counter-clockwise", dest="clockwise", action="store_false",
                       help="the data precess counter-clockwise (PrecessionIsClockwise=0): conjugated "
                            "before fitting")
    parser.add_argument("--ff-scale", type=float, help="factor taking stored FF-map values to percent")
    parser.add_argument("--mask", metavar="F", help="optional mask limiting the fit")


def _inputs_from_files(args, te_ms) -> dict:
    from ..io.load import load_echo_series, load_magnitude_phase, load_volume

    inputs: dict = {}
    if args.magnitude and args.phase:
        if len(args.magnitude) != len(args.phase):
            raise InputError("--phase", f"{len(args.phase)} phase files for {len(args.magnitude)} magnitude files")
        if len(args.magnitude) == 1:
            inputs["magnitude"] = load_echo_series(args.magnitude, te_ms, ImageKind.MAGNITUDE)
            inputs["phase"] = load_echo_series(args.phase, te_ms, ImageKind.PHASE)
        else:
            inputs["magnitude"], inputs["phase"] = load_magnitude_phase(
                [p for pair in zip(args.magnitude, args.phase) for p in pair], te_ms)
    elif args.magnitude and args.method in ("auto", "dixon2", "dixon3", "multiecho") and not (
            args.water or args.ff_map or args.dicom):
        raise InputError("--magnitude", "magnitude images without phase: the Dixon and multi-echo methods need "
                                        "--phase images too (or give --water/--fat or --ff-map)")
    elif args.magnitude:
        inputs["magnitude"] = load_echo_series(args.magnitude, te_ms, ImageKind.MAGNITUDE)
    elif args.phase:
        raise InputError("--phase", "phase images without magnitude: give --magnitude images too")
    if args.water:
        inputs["water"] = load_volume(args.water)
    if args.fat:
        inputs["fat"] = load_volume(args.fat)
    if args.ff_map:
        inputs["ff_map"] = load_volume(args.ff_map)
    return inputs


def _inputs_from_dicom(paths, te_ms, method: str) -> dict:
    from ..io.discover import discover

    study = discover(paths)
    study.require_series(paths[0])
    inputs: dict = {}
    ff = study.vendor_map(ImageKind.FAT_FRACTION)
    if ff is not None and method in ("auto", "vendor"):
        inputs["ff_map"] = ff.to_volume(ImageKind.FAT_FRACTION)
    if method in ("dixon2", "dixon3", "multiecho") or (method == "auto" and "ff_map" not in inputs):
        inputs.update(_gre_inputs(study, te_ms))
    if method in ("vendor", "wf") or (method == "auto" and not ({"phase", "complex_series"} & inputs.keys())):
        for kind, key in ((ImageKind.WATER, "water"), (ImageKind.FAT, "fat")):
            series = study.vendor_map(kind)
            if series is not None:
                inputs[key] = series.to_volume(kind)
    return inputs


def _gre_inputs(study, te_ms) -> dict:
    """Magnitude + phase (or real + imaginary, or magnitude alone) echoes of the GRE series.

    Vendors store the kinds in one series or in one series each; the echo counts must agree.
    """
    from ..io.kinds import SeriesClass

    gre = study.of_class(SeriesClass.MULTIECHO_GRE)

    def pick(kind, n_echoes=None):
        found = [s for s in gre if kind in s.image_kinds and (n_echoes is None or s.n_echoes == n_echoes)]
        return max(found, key=lambda s: s.n_echoes) if found else None

    phase = pick(ImageKind.PHASE)
    if phase is not None:
        magnitude = phase if ImageKind.MAGNITUDE in phase.image_kinds else pick(ImageKind.MAGNITUDE, phase.n_echoes)
        if magnitude is not None:
            return {"magnitude": magnitude.to_echo_series(ImageKind.MAGNITUDE, te_ms),
                    "phase": phase.to_echo_series(ImageKind.PHASE, te_ms)}
    real = pick(ImageKind.REAL)
    imaginary = pick(ImageKind.IMAGINARY, real.n_echoes) if real is not None else None
    if real is not None and imaginary is not None:
        re = real.to_echo_series(ImageKind.REAL, te_ms)
        im = imaginary.to_echo_series(ImageKind.IMAGINARY, te_ms)
        return {"complex_series": re.replace(array=(re.array + 1j * im.array).astype("complex64"),
                                             image_kind="complex")}
    magnitude = pick(ImageKind.MAGNITUDE)
    return {"magnitude": magnitude.to_echo_series(ImageKind.MAGNITUDE, te_ms)} if magnitude is not None else {}


def main(args) -> int:
    te_ms = parse_te_ms_argument(args.te_ms)
    inputs = _inputs_from_files(args, te_ms)
    if args.dicom:
        for key, value in _inputs_from_dicom(args.dicom, te_ms, args.method).items():
            inputs.setdefault(key, value)
    mask = None
    if args.mask:
        from ..io.load import load_volume
        mask = load_volume(args.mask).array > 0
    maps = compute_fat_fraction(args.method, field_t=args.field_t, clockwise=args.clockwise,
                                ff_scale=args.ff_scale, mask=mask, **inputs)
    written = maps.write(args.out)
    step(f"fat fraction ({maps.metadata.get('method')}) written to {args.out}: {', '.join(p.name for p in written.values())}")
    print(json.dumps({"method": maps.metadata.get("method"), "outputs": {k: str(v) for k, v in written.items()}}))
    return 0
