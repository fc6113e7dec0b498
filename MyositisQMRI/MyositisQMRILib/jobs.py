"""Run the core's command line in a background process and follow its progress.

The Slicer module never calls the core in-process for long work: it builds a command with
`core_command`, starts a `BackgroundJob`, and polls it from a qt.QTimer. Each poll reads what
the child has printed so far without blocking and hands back parsed `JobEvent`s. Cancel sends
terminate, then kill after a grace period.
"""
from __future__ import annotations

import codecs
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

PROGRESS_ENV = "MYOSITIS_QMRI_PROGRESS"
# The folder that holds the core package `myositis_qmri` (this file is MyositisQMRILib/jobs.py).
MODULE_DIR = Path(__file__).resolve().parents[1]

_PROGRESS_RE = re.compile(r"^PROGRESS\s+([0-9.eE+-]+)\s*(.*)$")
_STEP_RE = re.compile(r"^STEP\s+(.*)$")
_ERROR_RE = re.compile(r"^myositis-qmri\s+(\S+):\s+(error|internal error|cancelled)(?::\s*(.*))?$")
_WARNING_RE = re.compile(r"^myositis-qmri\s+(\S+):\s+warning:\s*(.*)$")


@dataclass(frozen=True)
class JobEvent:
    """One parsed stderr line: kind is "progress", "step", "error", "warning" or "log"."""

    kind: str
    text: str
    fraction: float | None = None


def parse_line(line: str) -> JobEvent:
    """Parse one stderr line of the core (`PROGRESS f desc`, `STEP msg`, one-line errors and warnings)."""
    line = line.rstrip("\r\n")
    match = _PROGRESS_RE.match(line)
    if match:
        try:
            fraction = min(max(float(match.group(1)), 0.0), 1.0)
        except ValueError:
            return JobEvent("log", line)
        return JobEvent("progress", match.group(2).strip(), fraction)
    match = _STEP_RE.match(line)
    if match:
        return JobEvent("step", match.group(1).strip())
    match = _ERROR_RE.match(line)
    if match:
        reason = match.group(3) or match.group(2)
        return JobEvent("error", f"{match.group(1)}: {reason.strip()}")
    match = _WARNING_RE.match(line)
    if match:
        return JobEvent("warning", f"{match.group(1)}: {match.group(2).strip()}")
    return JobEvent("log", line)


def python_executable() -> str:
    """The Python that runs the core: PythonSlicer inside Slicer, else this interpreter.

    The sibling `PythonSlicer` of `sys.executable` (what pip_install and SlicerTotalSegmentator
    run) is preferred, so that the core runs in Slicer's Python with its environment.
    """
    exe_dir = Path(sys.executable).parent
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        candidate = exe_dir / name
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def core_command(subcommand: str, arguments: Sequence[object], python: str | None = None) -> list[str]:
    """argv for `python -m myositis_qmri SUBCOMMAND ARGS...`; None and False arguments vanish.

    Arguments may be plain values or (flag, value) pairs; a pair with value None/False is
    dropped, a pair with True becomes the bare flag, a list value repeats after the flag.
    """
    argv = [python or python_executable(), "-m", "myositis_qmri", subcommand]
    for item in arguments:
        if isinstance(item, tuple):
            flag, value = item
            if value is None or value is False:
                continue
            if value is True:
                argv.append(flag)
            elif isinstance(value, (list, tuple)):
                if value:
                    argv.append(flag)
                    argv.extend(str(v) for v in value)
            else:
                argv.extend([flag, str(value)])
        elif item is not None:
            argv.append(str(item))
    return argv


def core_environment(base: dict | None = None, module_dir: Path = MODULE_DIR) -> dict:
    """Environment for the child: progress lines on, the module folder first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env[PROGRESS_ENV] = "lines"
    env["PYTHONUNBUFFERED"] = "1"
    paths = [str(module_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@dataclass
class JobResult:
    returncode: int
    error: str | None
    stdout: str
    warnings: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """The command ran to the end: status 0, or 4 (done, some exports failed; named in its warnings)."""
        return self.returncode in (0, 4)


class PipeLines:
    """The lines a child writes to one pipe, read without ever blocking the caller.

    On POSIX the pipe is switched to non-blocking and read in the caller's thread: inside Slicer,
    Python threads only run while the main thread runs Python, so a reader thread would hand its
    lines over in bursts. Where a pipe cannot be made non-blocking (Windows before Python 3.12) a
    reader thread fills a queue instead.
    """

    def __init__(self, stream):
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self.closed = False
        self._queue: queue.Queue | None = None
        try:
            os.set_blocking(stream.fileno(), False)
        except (OSError, AttributeError):
            self._queue = queue.Queue()
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for chunk in iter(lambda: self._stream.read(65536), b""):
            self._queue.put(chunk)
        self._queue.put(b"")

    def read_available(self) -> list[str]:
        """Complete lines written since the last call; a line not yet ended waits, except the
        last one once the writer has closed the pipe (then `closed` is True)."""
        text = self._partial + "".join(self._decoder.decode(chunk) for chunk in self._chunks())
        *lines, self._partial = text.split("\n")
        lines = [line + "\n" for line in lines]
        if self.closed:
            tail, self._partial = self._partial + self._decoder.decode(b"", final=True), ""
            lines += [tail] if tail else []
        return lines

    def _chunks(self):
        while not self.closed:
            try:
                chunk = (self._queue.get_nowait() if self._queue is not None
                         else os.read(self._stream.fileno(), 65536))
            except (BlockingIOError, queue.Empty):
                return
            if not chunk:
                self.closed = True
                self._stream.close()
                return
            yield chunk


@dataclass
class BackgroundJob:
    """A running core command. Call `poll()` from a timer; it never blocks.

    `poll()` returns the events seen since the last call; `result` becomes a JobResult
    once the process has exited and its pipes are drained.
    """

    argv: list[str]
    env: dict | None = None
    cwd: str | None = None
    fraction: float = 0.0
    description: str = ""
    log: list[str] = field(default_factory=list)
    result: JobResult | None = None
    cancelled: bool = False

    def start(self) -> "BackgroundJob":
        # Own process group on POSIX, so Cancel also stops workers the core may spawn.
        platform = ({"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if os.name == "nt"
                    else {"start_new_session": True})
        self._process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, **platform)
        self._stderr, self._stdout = PipeLines(self._process.stderr), PipeLines(self._process.stdout)
        self._stdout_lines: list[str] = []
        self._errors: list[str] = []
        self._warnings: list[str] = []
        return self

    @property
    def running(self) -> bool:
        return self.result is None

    @property
    def stdout(self) -> str:
        """What the child has printed to stdout so far (as of the last poll)."""
        return "".join(self._stdout_lines)

    def poll(self) -> list[JobEvent]:
        """Drain what the child printed so far; set `result` once it has exited and closed its pipes."""
        self._stdout_lines += self._stdout.read_available()
        events = [self._take(line) for line in self._stderr.read_available()]
        exited = self._process.poll() is not None
        if self.result is None and exited and self._stdout.closed and self._stderr.closed:
            self.result = JobResult(self._process.returncode, self._error_message(), self.stdout,
                                    tuple(self._warnings))
        return events

    def _take(self, line: str) -> JobEvent:
        event = parse_line(line)
        self.log.append(line.rstrip("\r\n"))
        if event.kind == "progress":
            self.fraction, self.description = event.fraction, event.text or self.description
        elif event.kind == "step":
            self.description = event.text
        elif event.kind == "error":
            self._errors.append(event.text)
        elif event.kind == "warning":
            self._warnings.append(event.text)
        return event

    def _error_message(self) -> str | None:
        if self.cancelled:
            return "cancelled"
        if self._process.returncode in (0, 4):   # 4: finished, failed exports are warnings
            return None
        if self._errors:
            return self._errors[-1]
        tail = [line for line in self.log if line.strip()][-5:]
        return "\n".join(tail) or f"exited with status {self._process.returncode}"

    def cancel(self, grace_s: float = 3.0) -> None:
        """Terminate the child; kill it when it has not exited after `grace_s`."""
        if self._process.poll() is not None:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._process.poll() is None:
            self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
            self._process.wait()

    def _signal(self, signum: int) -> None:
        try:
            if os.name == "nt":
                # PythonSlicer is a launcher whose child runs the core: stop the whole process tree.
                subprocess.run(windows_tree_kill(self._process.pid), capture_output=True,
                               creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
            else:
                os.killpg(self._process.pid, signum)  # the group this job started, nothing else
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> JobResult:
        """Block until done (tests and batch use; the UI polls instead)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self.poll()
            if self.result is not None:
                return self.result
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[3:]} still running after {timeout_s} s")
            time.sleep(interval_s)


def windows_tree_kill(pid: int) -> list[str]:
    """The command that stops a Windows process and every process it started."""
    return ["taskkill", "/T", "/F", "/PID", str(pid)]


def start_core_job(subcommand: str, arguments: Sequence[object], python: str | None = None,
                   cwd: str | None = None) -> BackgroundJob:
    """Start `myositis_qmri SUBCOMMAND` in the background with progress lines on."""
    return BackgroundJob(core_command(subcommand, arguments, python), core_environment(), cwd).start()


def pip_install_command(requirements: Sequence[str], python: str | None = None) -> list[str]:
    """argv of `python -m pip install REQUIREMENTS...`, what slicer.util.pip_install runs, here
    started as a BackgroundJob so the install shows progress instead of freezing Slicer."""
    return [python or python_executable(), "-m", "pip", "install", *requirements]


_PIP_STEPS = (("Collecting ", "collecting"), ("Downloading ", "downloading"), ("Using cached ", "downloading"),
              ("Installing collected packages", "installing"), ("Successfully installed", "installed"))


class PipProgress:
    """Progress of a `pip install` read from its output lines.

    pip prints no overall percentage: each requirement first seen as "Collecting X" moves the bar
    up to half-way (dependencies count too), installing moves it to 90 %, "Successfully installed"
    to the end. `new_lines(job)` hands over what the job printed since the last call (stdout,
    where pip reports, then stderr) and updates `fraction` and `text`.
    """

    def __init__(self, requirements: Sequence[str]):
        self.requirements = list(requirements)
        self.fraction, self.text = 0.0, "Starting pip"
        self._collected: set = set()
        self._shown = [0, 0]

    def feed(self, line: str) -> bool:
        """Read one line; True when it moved the progress or its text."""
        text = line.strip()
        for prefix, kind in _PIP_STEPS:
            if not text.startswith(prefix):
                continue
            if kind == "collecting":
                words = text[len(prefix):].split()
                self._collected.add(words[0] if words else "")
            total = max(len(self.requirements), len(self._collected), 1)
            self.fraction = {"installing": 0.9, "installed": 1.0}.get(kind, 0.5 * len(self._collected) / total)
            self.text = text
            return True
        return False

    def new_lines(self, job: "BackgroundJob") -> list[str]:
        job.poll()
        out, err = job.stdout.splitlines(), job.log
        lines = out[self._shown[0]:] + err[self._shown[1]:]
        self._shown = [len(out), len(err)]
        for line in lines:
            self.feed(line)
        return lines
