"""Background jobs of the Slicer module: command building, progress parsing, run and cancel.

The jobs run real child processes (the core's progress module and `inspect`), exactly as the
Slicer module starts them, only polled here instead of by a qt.QTimer.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MyositisQMRI"))

from MyositisQMRILib import jobs, pipeline, study  # noqa: E402


def test_parse_progress_step_error_and_log_lines():
    assert jobs.parse_line("PROGRESS 0.2500 fitting T2\n") == jobs.JobEvent("progress", "fitting T2", 0.25)
    assert jobs.parse_line("PROGRESS 1.7 x").fraction == 1.0        # clamped
    assert jobs.parse_line("PROGRESS nan? x").kind == "log"
    assert jobs.parse_line("STEP segment: loading model") == jobs.JobEvent("step", "segment: loading model")
    error = jobs.parse_line("myositis-qmri t2: error: /data/x.nii.gz: a single echo cannot be fitted")
    assert error == jobs.JobEvent("error", "t2: /data/x.nii.gz: a single echo cannot be fitted")
    internal = jobs.parse_line("myositis-qmri segment: internal error: ValueError: bad (rerun with --debug)")
    assert internal.kind == "error" and internal.text.startswith("segment: ValueError")
    warning = jobs.parse_line("myositis-qmri segment: warning: /d/calf.dcm: is this a thigh series?")
    assert warning == jobs.JobEvent("warning", "segment: /d/calf.dcm: is this a thigh series?")
    assert jobs.parse_line("some warning").kind == "log"


def test_core_command_drops_unset_options_and_expands_lists():
    argv = jobs.core_command("ff", ["a", ("--water", None), ("--flag", True), ("--off", False),
                                    ("--te-ms", [1.2, 2.4]), ("--out", Path("/o"))], python="py")
    assert argv == ["py", "-m", "myositis_qmri", "ff", "a", "--flag", "--te-ms", "1.2", "2.4", "--out", "/o"]


def test_core_environment_turns_progress_lines_on_and_finds_the_core():
    env = jobs.core_environment({"PYTHONPATH": "/other"})
    assert env["MYOSITIS_QMRI_PROGRESS"] == "lines"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(jobs.MODULE_DIR), "/other"]
    assert (jobs.MODULE_DIR / "myositis_qmri" / "cli.py").is_file()


def test_pipeline_arguments_follow_the_command_line_contract():
    t2 = jobs.core_command("t2", pipeline.t2_arguments(["/s/mese"], "/w/t2", " 10, 20,30 ", "epg", ""), "py")
    assert t2[3:] == ["t2", "/s/mese", "--out", "/w/t2", "--te-ms", "10,20,30", "--model", "epg", "--fat-t2", "auto"]
    ff = jobs.core_command("ff", pipeline.ff_arguments("/w/ff", ["/s/gre", "/s/ph"], method="multiecho",
                                                         echo_times_ms=[1.2, 2.46], field_t=3.0), "py")
    assert ff[3:] == ["ff", "/s/gre", "/s/ph", "--out", "/w/ff", "--method", "multiecho",
                      "--te-ms", "1.2,2.46", "--field-t", "3"]
    assert jobs.core_command("ff", pipeline.ff_arguments("/o", ff_map="/m.nii.gz"), "py")[4:] == \
        ["--ff-map", "/m.nii.gz", "--out", "/o", "--method", "auto"]
    seg = jobs.core_command("segment", pipeline.segment_arguments("/i.nii.gz", "/w/seg"), "py")
    assert seg[3:] == ["segment", "/i.nii.gz", "--out", "/w/seg"]
    seg = jobs.core_command("segment", pipeline.segment_arguments("/i.nii.gz", "/w/seg", slice_range=(2, 30)), "py")
    assert seg[3:] == ["segment", "/i.nii.gz", "--out", "/w/seg", "--slice-range", "2", "30"]
    # The panel's spin boxes: -1 is the last slice; every slice needs no option; outside is refused.
    assert pipeline.segment_slice_range(0, -1, 40) is None and pipeline.segment_slice_range(0, 39, 40) is None
    assert pipeline.segment_slice_range(0, 20, 40) == (0, 20) and pipeline.segment_slice_range(5, -1, 40) == (5, 39)
    for first, last in ((30, 20), (0, 40), (41, -1)):
        with pytest.raises(ValueError, match="not slices of the volume"):
            pipeline.segment_slice_range(first, last, 40)
    report = jobs.core_command("report", pipeline.report_arguments("/l.nii.gz", "/r", ff="/ff.nii.gz",
                                                                   reviewer_grades="/g.json"), "py")
    assert report[3:] == ["report", "--seg", "/l.nii.gz", "--ff", "/ff.nii.gz", "--out", "/r",
                          "--review", "/g.json"]
    with pytest.raises(ValueError):
        pipeline.t2_arguments([], "/o")
    with pytest.raises(ValueError):
        pipeline.ff_arguments("/o", water="/w.nii.gz")          # water without fat
    with pytest.raises(ValueError):
        pipeline.report_arguments("/l", "/o")


def test_federation_site_arguments_parse_as_the_command_line_reads_them():
    from myositis_qmri.cli import build_parser
    argv = jobs.core_command("federate", pipeline.federation_site_arguments(
        " fl.hospital.org:8080 ", "/w/structural.nii.gz", "/w/muscles_edited.nii.gz", name="site-7",
        root_certificate="/certs/ca.pem"), "py")
    assert argv[3:5] == ["federate", "site"]
    args = build_parser(only="federate").parse_args(argv[3:])
    assert (args.role, args.server, args.name, args.model) == ("site", "fl.hospital.org:8080", "site-7", None)
    assert [str(p) for p in args.image + args.labels] == ["/w/structural.nii.gz", "/w/muscles_edited.nii.gz"]
    assert str(args.root_certificate) == "/certs/ca.pem"
    for address in ("", "fl.hospital.org", "fl.hospital.org:port", ":8080"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            pipeline.federation_site_arguments(address, "/i", "/l")


def _python_job(code: str) -> jobs.BackgroundJob:
    return jobs.BackgroundJob([sys.executable, "-c", code], jobs.core_environment()).start()


def test_job_reports_core_progress_lines_and_stdout():
    code = ("from myositis_qmri.progress import track, step\n"
            "step('fitting')\n"
            "import time\n"
            "for i in track(range(4), desc='slices'): time.sleep(0.25)\n"
            "print('done')")
    job = _python_job(code)
    seen = []
    while job.running:
        seen += job.poll()
        time.sleep(0.02)
    assert job.result.returncode == 0 and job.result.error is None
    assert job.result.stdout.strip() == "done"
    assert jobs.JobEvent("step", "fitting") in seen
    fractions = [e.fraction for e in seen if e.kind == "progress"]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert job.fraction == 1.0 and job.description == "slices"


def test_job_collects_the_core_warnings(tmp_path):
    code = ("import sys\n"
            "print('myositis-qmri segment: warning: calf.dcm: is this a thigh series?', file=sys.stderr)")
    result = _python_job(code).wait(timeout_s=60)
    assert result.returncode == 0 and result.warnings == ("segment: calf.dcm: is this a thigh series?",)


def test_job_error_is_the_core_one_line_message(tmp_path):
    missing = tmp_path / "nothing-here"
    job = jobs.BackgroundJob(jobs.core_command("inspect", [str(missing), "--json"], sys.executable),
                             jobs.core_environment()).start()
    result = job.wait(timeout_s=120)
    assert result.returncode == 2
    assert result.error.startswith("inspect: ") and str(missing) in result.error
    assert "Traceback" not in result.error


def test_cancel_stops_the_child_and_its_children():
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)")
    job = _python_job(code)
    deadline = time.monotonic() + 30
    while not job.poll() and not job.stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(job.stdout.split()[0])
    job.cancel(grace_s=2.0)
    result = job.wait(timeout_s=30)
    assert job.cancelled and result.error == "cancelled" and result.returncode != 0
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        _alive(grandchild)


def _alive(pid: int) -> None:
    os.kill(pid, 0)
    # a zombie is dead too: reaped by init once its parent is gone
    status = Path(f"/proc/{pid}/status")
    if status.exists() and "zombie" in status.read_text():
        raise ProcessLookupError(pid)


def test_inspect_job_on_phantom_study_gives_rows_and_series_folders(tmp_path):
    from myositis_qmri.phantom import make_exam, write_exam

    written = write_exam(make_exam(3, "small"), tmp_path / "exam")
    job = jobs.BackgroundJob(jobs.core_command("inspect", [str(written["dicom"]), "--json"], sys.executable),
                             jobs.core_environment()).start()
    result = job.wait(timeout_s=300)
    assert result.returncode == 0, result.error
    rows = study.rows_from_inspect_json(result.stdout)
    inputs = study.choose_inputs(rows)
    assert inputs.mese.n_echoes == 17 and inputs.structural.classification == "t1w"
    assert {r.classification for r in inputs.dixon} >= {"multiecho_gre", "vendor_ff"}

    # The Slicer side fills files from its DICOM database; here from the phantom writer's list.
    import pydicom

    files_by_uid = {}
    for files in written["series"].values():
        uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
        files_by_uid[uid] = [str(f) for f in files]
    rows = study.with_files(rows, files_by_uid)
    inputs = study.choose_inputs(rows)
    t2_inputs = pipeline.study_t2_inputs(inputs, tmp_path / "series")
    assert len(t2_inputs) == 1
    linked = sorted(Path(t2_inputs[0]).iterdir())
    assert len(linked) == len(inputs.mese.files)
    assert all(p.resolve() in {Path(f).resolve() for f in inputs.mese.files} for p in linked)

    # The linked folder holds exactly the MESE series: inspect on it finds only that series.
    again = jobs.BackgroundJob(jobs.core_command("inspect", [t2_inputs[0], "--json"], sys.executable),
                               jobs.core_environment()).start().wait(timeout_s=300)
    only = study.rows_from_inspect_json(again.stdout)
    assert [r.classification for r in only] == ["mese"]


def test_pipe_lines_hand_over_whole_lines_and_decode_characters_cut_between_reads():
    read_end, write_end = os.pipe()
    lines = jobs.PipeLines(os.fdopen(read_end, "rb", buffering=0))
    assert lines.read_available() == []                     # nothing written yet: returns at once
    os.write(write_end, b"PROGRESS 0.5 sl")
    assert lines.read_available() == []                     # a line not yet ended waits
    os.write(write_end, "ices\nT2 \u00b5s \xe2".encode("utf-8")[:-1])   # cut inside a character
    assert lines.read_available() == ["PROGRESS 0.5 slices\n"]
    os.write(write_end, "\u00e2".encode("utf-8")[-1:] + b"\nlast")
    assert lines.read_available() == ["T2 \u00b5s \u00e2\n"]
    assert not lines.closed
    os.close(write_end)
    assert lines.read_available() == ["last"] and lines.closed


@pytest.mark.skipif(os.name == "nt", reason="Windows pipes before Python 3.12 need a reader thread")
def test_job_reads_its_pipes_in_the_polling_thread():
    """Inside Slicer a reader thread would only run while Python does, so lines would come in
    bursts; the job starts no thread and each poll reads what is there."""
    threads = threading.active_count()
    job = _python_job("import sys, time\nprint('STEP first', file=sys.stderr, flush=True)\ntime.sleep(30)")
    assert threading.active_count() == threads
    deadline = time.monotonic() + 30
    seen = []
    while not seen and time.monotonic() < deadline:
        seen = job.poll()
        time.sleep(0.02)
    assert seen == [jobs.JobEvent("step", "first")] and job.running
    job.cancel(grace_s=1.0)
    assert job.wait(timeout_s=30).error == "cancelled"
