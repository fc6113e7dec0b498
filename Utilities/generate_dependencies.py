#!/usr/bin/env python3
"""Copy pyproject.toml's dependency contract to MyositisQMRI/Resources/dependencies.json.

Why: inside Slicer the core is not pip-installed, so the module cannot read the stage extras
from the distribution's metadata; it reads this generated copy instead (see
MyositisQMRILib/dependencies.py). pyproject.toml stays the one source: rerun this script after
editing its dependencies; Testing/test_slicer_dependencies.py fails while the copy is stale.

    python Utilities/generate_dependencies.py          # write the file
    python Utilities/generate_dependencies.py --check  # exit 1 when it differs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
OUTPUT = ROOT / "MyositisQMRI" / "Resources" / "dependencies.json"


def contract(pyproject: Path = PYPROJECT) -> dict:
    """The name, Python floor, base dependencies and extras of pyproject's [project] table."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return {"generated_from": "pyproject.toml by Utilities/generate_dependencies.py; do not edit",
            "name": project["name"],
            "requires-python": project.get("requires-python", ""),
            "dependencies": list(project.get("dependencies", [])),
            "optional-dependencies": {extra: list(reqs) for extra, reqs
                                      in sorted(project.get("optional-dependencies", {}).items())}}


def render(pyproject: Path = PYPROJECT) -> str:
    return json.dumps(contract(pyproject), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).relative_to(ROOT)}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
