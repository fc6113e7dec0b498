"""`myositis-qmri inspect PATH [--json]`: what series a folder or file holds, and what was left out.

Per series: description, classification, vendor, field strength, echoes and TEs, image
kinds, matrix, voxel size and slices. Unreadable or unusable files are listed with the
reason. Nothing usable at all is an input error (one line, exit status 2).
"""
from __future__ import annotations

import json
import sys

from ..io.discover import discover


def add_arguments(parser) -> None:
    parser.add_argument("path", nargs="+", help="DICOM folder or file, or NIfTI/NRRD file(s)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")


def _fmt(values, digits=5) -> str:
    return "x".join(f"{v:.{digits}g}" for v in values)


def _text(summary: dict) -> str:
    te = summary["echo_times_ms"]
    te_text = ", ".join(f"{t:g}" for t in te) if len(te) <= 8 else \
        f"{te[0]:g}, {te[1]:g}, ... {te[-1]:g}"
    field = f"{summary['field_strength_t']:g} T" if summary["field_strength_t"] else "? T"
    return (f"{summary['description'] or '(no description)'}\n"
            f"    class {summary['classification']}  vendor {summary['vendor'] or '?'}  field {field}\n"
            f"    echoes {summary['n_echoes']}" + (f" (TE {te_text} ms)" if te else "") +
            f"  images {', '.join(summary['image_kinds'])}\n"
            f"    matrix {summary['matrix'][0]}x{summary['matrix'][1]}  voxel {_fmt(summary['voxel_size_mm'])} mm"
            f"  slices {summary['n_slices']}  files {summary['n_files']}")


def main(args) -> int:
    study = discover(args.path if len(args.path) > 1 else args.path[0])
    study.require_series(args.path[0])
    summaries = [s.summary() for s in study.series]
    if args.json:
        json.dump({"series": summaries, "problems": [{"path": p, "reason": r} for p, r in study.problems]},
                  sys.stdout, indent=2)
        print()
        return 0
    print(f"{len(summaries)} series")
    for summary in summaries:
        print(_text(summary))
    if study.problems:
        print(f"{len(study.problems)} files left out:")
        for path, reason in study.problems:
            print(f"    {path}: {reason}")
    return 0
