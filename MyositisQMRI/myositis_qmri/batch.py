"""Cohorts: run the pipeline on many studies in parallel on a Dask cluster.

Each study runs in isolation (a failure is recorded with its error and never stops the
others) into `OUT/<study name>/`. A study that finished writes a completion marker holding a
fingerprint of its inputs, the software version and options, and SHA-256 of every output; a
rerun skips studies whose marker still matches, so no work is repeated. A study whose report was
written but some exports failed is "partial": its outputs are kept and the failed exports named,
and a rerun tries it again. The cohort ends with
`manifest.json` (status, timings, errors, version per study) and `cohort.csv` (one row per
study, muscle and side, read from each study's report.json).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import InputError
from .io.atomic import write_text_atomic
from .progress import Progress

MARKER_NAME = ".batch-complete.json"
ERROR_LOG_NAME = "batch-error.log"
MANIFEST_NAME = "manifest.json"
COHORT_CSV_NAME = "cohort.csv"
REPORT_NAME = "report.json"

StudyFunction = Callable[[Path, Path, dict], Any]


@dataclass(frozen=True)
class StudyTask:
    """What a worker needs to process one study (picklable, no live objects)."""

    name: str
    study_path: str
    output_dir: str
    fingerprint: str
    options: dict = field(default_factory=dict)


# ---------------------------------------------------------------- fingerprints and markers

def input_fingerprint(study_path: str | Path, options: dict | None = None) -> str:
    """SHA-256 over the study's files (relative path, size, mtime), the options and version.

    Sizes and modification times rather than contents: hashing every DICOM file of a
    hundred-exam cohort on each rerun would cost as much reading as the run itself, and any
    edit or replacement of an input changes its mtime.
    """
    study_path = Path(study_path)
    digest = hashlib.sha256()
    digest.update(f"version={__version__}\n".encode())
    digest.update(json.dumps(options or {}, sort_keys=True, default=str).encode())
    if study_path.is_file():
        files = [study_path]
        root = study_path.parent
    else:
        files = sorted(p for p in study_path.rglob("*") if p.is_file())
        root = study_path
    for path in files:
        stat = path.stat()
        digest.update(f"\n{path.relative_to(root).as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _output_hashes(output_dir: Path) -> dict[str, str]:
    return {p.relative_to(output_dir).as_posix(): _sha256_file(p)
            for p in sorted(output_dir.rglob("*"))
            if p.is_file() and p.name not in (MARKER_NAME, ERROR_LOG_NAME) and ".tmp" not in p.name}


def completed_marker(output_dir: str | Path, fingerprint: str) -> dict | None:
    """The study's completion marker if its outputs are present and valid, else None.

    Valid means: the marker parses and matches the input fingerprint, every output it lists
    exists with the recorded SHA-256, and report.json (when produced) parses as JSON.
    """
    output_dir = Path(output_dir)
    try:
        marker = json.loads((output_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("input_fingerprint") != fingerprint:
        return None
    outputs = marker.get("outputs")
    if not isinstance(outputs, dict):
        return None
    for relative, sha in outputs.items():
        path = output_dir / relative
        if not path.is_file() or _sha256_file(path) != sha:
            return None
    if REPORT_NAME in outputs:
        try:
            json.loads((output_dir / REPORT_NAME).read_text(encoding="utf-8"))
        except ValueError:
            return None
    return marker


# ---------------------------------------------------------------- the per-study work (on a worker)

def default_study_function(study_path: Path, output_dir: Path, options: dict) -> Any:
    """The whole pipeline (`myositis-qmri run`) on one study."""
    from .pipeline import run_study
    return run_study(study_path, output_dir, options)


def _json_safe(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def process_study(task: StudyTask, study_function: StudyFunction | None = None) -> dict:
    """Run one study and return its manifest record; never raises for a bad study.

    The old marker is removed first, so a run killed midway can never leave a marker that
    vouches for a mixture of old and new outputs.
    """
    os.environ.setdefault("MYOSITIS_QMRI_PROGRESS", "off")  # one cohort bar, not one per worker
    study_function = study_function or default_study_function
    output_dir = Path(task.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in (output_dir / MARKER_NAME, output_dir / ERROR_LOG_NAME):
        stale.unlink(missing_ok=True)
    started = time.time()
    record = {"study": task.name, "input": task.study_path, "output": task.output_dir,
              "input_fingerprint": task.fingerprint, "software_version": __version__,
              "started": _iso(started), "worker_pid": os.getpid()}
    try:
        summary = study_function(Path(task.study_path), output_dir, dict(task.options))
    except Exception as exc:  # isolation: any failure of one study is recorded, not raised
        record.update(status="failed", seconds=round(time.time() - started, 3), finished=_iso(time.time()),
                      error=_one_line(exc), error_type=type(exc).__name__)
        write_text_atomic(output_dir / ERROR_LOG_NAME,
                          "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return record
    finished = time.time()
    failures = summary.get("export_failures") if isinstance(summary, dict) else None
    record.update(status="partial" if failures else "complete", seconds=round(finished - started, 3),
                  finished=_iso(finished), error=None, summary=_json_safe(summary))
    if failures:
        # Partly done: the report and every other output are kept, the failed exports named; no
        # completion marker, so a rerun (after a fix) tries the study again.
        record["export_failures"] = _json_safe(failures)
        record["error"] = "; ".join(f"{f['export']}: {f['reason']}" for f in failures)
        return record
    marker = {"input_fingerprint": task.fingerprint, "software_version": __version__,
              "options": _json_safe(task.options), "finished": record["finished"],
              "seconds": record["seconds"], "outputs": _output_hashes(output_dir)}
    write_text_atomic(output_dir / MARKER_NAME, json.dumps(marker, indent=2))
    return record


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(exc, InputError) else f"{type(exc).__name__}: {message}".rstrip(": ")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- planning

def study_names(study_paths: Sequence[str | Path]) -> list[str]:
    """Folder-safe, unique, rerun-stable output names: the study's own name, plus a short
    hash of its absolute path when two studies share a name."""
    bases = [re.sub(r"[^A-Za-z0-9._-]+", "_", _stem(Path(p))) or "study" for p in study_paths]
    names = []
    for path, base in zip(study_paths, bases):
        if bases.count(base) > 1:
            base = f"{base}-{hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]}"
        names.append(base)
    return names


def _stem(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".dcm", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_tasks(study_paths: Sequence[str | Path], out_dir: str | Path, options: dict | None = None
               ) -> list[StudyTask]:
    out_dir = Path(out_dir)
    options = dict(options or {})
    tasks = []
    for path, name in zip(study_paths, study_names(study_paths)):
        path = Path(path)
        if not path.exists():
            raise InputError(path, "study not found")
        tasks.append(StudyTask(name, str(path.resolve()), str((out_dir / name).resolve()),
                               input_fingerprint(path, options), options))
    return tasks


# ---------------------------------------------------------------- the cohort (client side)

@dataclass
class CohortResult:
    out_dir: Path
    records: list[dict]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] == "failed"]

    @property
    def completed(self) -> list[dict]:
        return [r for r in self.records if r["status"] == "complete"]

    @property
    def partial(self) -> list[dict]:
        """Studies whose report was written but some exports failed (named in each record)."""
        return [r for r in self.records if r["status"] == "partial"]

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "studies": len(self.records),
                "complete": len(self.completed), "partial": len(self.partial), "failed": len(self.failed),
                "reused": sum(1 for r in self.records if r.get("reused")),
                "manifest": str(self.out_dir / MANIFEST_NAME), "cohort_csv": str(self.out_dir / COHORT_CSV_NAME)}


def _local_cluster(n_workers: int | None):
    import dask
    from distributed import LocalCluster
    workers = n_workers or min(2, os.cpu_count() or 1)
    # Loopback only (scheduler, workers and the status page on a free port): nothing is
    # reachable from the network. A study that kills its worker (out of memory, a crash in a
    # native library) is retried once, not three times, then recorded as failed.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0", silence_logs=40)


def run_cohort(study_paths: Sequence[str | Path], out_dir: str | Path, options: dict | None = None, *,
               scheduler: str | None = None, n_workers: int | None = None,
               study_function: StudyFunction | None = None) -> CohortResult:
    """Run `study_function` (default: the whole pipeline) on every study, in parallel.

    With `scheduler` (an address such as tcp://host:8786) the work goes to that Dask cluster,
    whose workers must see the same paths; otherwise a local cluster of `n_workers` processes
    with one thread each is started for the run and closed afterwards.
    """
    from distributed import Client, as_completed

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_tasks(study_paths, out_dir, options)
    previous = _previous_records(out_dir)
    records: dict[str, dict] = {}
    pending = []
    for task in tasks:
        marker = completed_marker(task.output_dir, task.fingerprint)
        if marker is not None:
            records[task.name] = _reused_record(task, marker, previous.get(task.name))
        else:
            pending.append(task)

    started = time.time()
    with Progress(len(tasks), desc="cohort", unit="study") as progress:
        progress.update(len(tasks) - len(pending))
        if pending:
            cluster = None if scheduler else _local_cluster(n_workers)
            try:
                with Client(scheduler or cluster, set_as_default=False) as client:
                    futures = {client.submit(process_study, task, study_function, pure=False): task
                               for task in pending}
                    for future in as_completed(futures, loop=client.loop):
                        task = futures[future]
                        records[task.name] = _collect(future, task)
                        _write_manifest(out_dir, tasks, records, started)
                        progress.update(1)
            finally:
                if cluster is not None:
                    cluster.close()
    _write_manifest(out_dir, tasks, records, started)
    write_cohort_csv(out_dir / COHORT_CSV_NAME, [records[t.name] for t in tasks])
    return CohortResult(out_dir, [records[t.name] for t in tasks])


def _collect(future, task: StudyTask) -> dict:
    """The worker's record, or a failure record when the worker itself died (KilledWorker,
    out of memory, segfault in a native library)."""
    try:
        return future.result()
    except Exception as exc:
        return {"study": task.name, "input": task.study_path, "output": task.output_dir,
                "input_fingerprint": task.fingerprint, "software_version": __version__,
                "status": "failed", "error": _one_line(exc), "error_type": type(exc).__name__,
                "finished": _iso(time.time()), "seconds": None}


def _previous_records(out_dir: Path) -> dict[str, dict]:
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        return {r["study"]: r for r in manifest.get("studies", []) if isinstance(r, dict) and "study" in r}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def _reused_record(task: StudyTask, marker: dict, previous: dict | None) -> dict:
    record = dict(previous) if previous and previous.get("input_fingerprint") == task.fingerprint else {
        "study": task.name, "input": task.study_path, "output": task.output_dir,
        "input_fingerprint": task.fingerprint, "software_version": marker.get("software_version"),
        "status": "complete", "error": None, "finished": marker.get("finished"),
        "seconds": marker.get("seconds")}
    record.update(status="complete", reused=True)
    return record


def _write_manifest(out_dir: Path, tasks: list[StudyTask], records: dict[str, dict], started: float) -> None:
    studies = []
    for task in tasks:
        record = records.get(task.name) or {"study": task.name, "input": task.study_path,
                                            "output": task.output_dir, "status": "pending"}
        studies.append(record)
    manifest = {"software": "myositis-qmri", "software_version": __version__,
                "updated": _iso(time.time()), "batch_started": _iso(started),
                "counts": {s: sum(1 for r in studies if r["status"] == s)
                           for s in ("complete", "partial", "failed", "pending")},
                "studies": studies}
    write_text_atomic(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str))


# ---------------------------------------------------------------- cohort.csv

_ROW_LIST_KEYS = ("muscles", "rows", "regions", "labels", "measurements")


def report_rows(report: Any) -> list[dict]:
    """The per-muscle, per-side rows of a report.json, flattened to scalar columns.

    Accepts the rows at the top level (a list) or under a key such as "muscles"; nested
    dicts become `parent_child` columns.
    """
    rows = report if isinstance(report, list) else None
    if rows is None and isinstance(report, dict):
        rows = next((report[k] for k in _ROW_LIST_KEYS if isinstance(report.get(k), list)), None)
        if rows is None:  # a mapping keyed by label, e.g. {"vastus_lateralis_R": {...}}
            nested = report.get("muscles")
            if isinstance(nested, dict):
                rows = [{"label": key, **value} for key, value in nested.items() if isinstance(value, dict)]
    return [_flatten(row) for row in rows or [] if isinstance(row, dict)]


def _flatten(row: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "_"))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            flat[name] = value
    return flat


def write_cohort_csv(path: Path, records: list[dict]) -> Path:
    """One row per study, muscle and side, from each complete or partly done study's report.json."""
    rows: list[dict] = []
    for record in records:
        if record.get("status") not in ("complete", "partial"):
            continue
        try:
            report = json.loads((Path(record["output"]) / REPORT_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows.extend({"study": record["study"], **row} for row in report_rows(report))
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["study"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())

