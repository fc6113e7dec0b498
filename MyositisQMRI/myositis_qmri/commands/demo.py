"""`myositis-qmri demo [--out DIR]`: synthesise a bilateral thigh exam, write it as DICOM, run the
whole pipeline on it, and print the path of report.html.

The phantom's ground truth lands in DIR/exam/truth, so the report can be checked against it.
"""
from __future__ import annotations

from pathlib import Path

from ..progress import step


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="demo", choices=("demo", "small"))
    parser.add_argument("--flavour", default="classic", choices=("classic", "enhanced"),
                        help="DICOM flavour of the synthetic study")


def run_demo(out, seed: int = 0, size: str = "demo", flavour: str = "classic", options=None) -> dict:
    from ..phantom import make_exam, write_exam
    from ..pipeline import run_study
    out = Path(out)
    step(f"demo: synthesising a {size} thigh exam (seed {seed})")
    exam = make_exam(seed=seed, size=size)
    written = write_exam(exam, out / "exam", flavour)
    summary = run_study(written["dicom"], out / "run", options)
    summary["truth"] = {k: str(v) for k, v in written["truth"].items()}
    return summary


def main(args) -> int:
    summary = run_demo(args.out, args.seed, args.size, args.flavour)
    for name, info in summary["steps"].items():
        print(f"{name:9s} {info['status']:8s} {info['message']}")
    print(Path(summary["report_html"]).resolve())
    return 0
