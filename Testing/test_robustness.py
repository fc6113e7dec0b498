"""Safety properties: clean one-line errors from the command line, atomic outputs, inputs left
untouched, model files limited to safetensors + JSON, and no network use in the core."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import myositis_qmri
from myositis_qmri.errors import InputError, ModelFileError
from myositis_qmri.io import atomic_path, read_volume, write_echo_series, write_volume
from myositis_qmri.volume import EchoSeries, Volume

CORE = Path(myositis_qmri.__file__).parent


def cli(*args, cwd=None, env_extra=None, timeout=180):
    env = {**os.environ, "MYOSITIS_QMRI_PROGRESS": "off", **(env_extra or {})}
    env.pop("MYOSITIS_QMRI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "myositis_qmri", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def assert_one_line_error(done, path_fragment: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    progress = ("» ", "STEP ", "PROGRESS ")  # step announcements before the failure are expected
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(progress)]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and path_fragment in lines[0]


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ bad input at the command line

def test_garbage_dicom_file_gives_exit_2_and_one_line(tmp_path):
    bad = tmp_path / "IM0001"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(300))
    assert_one_line_error(cli("inspect", bad), "IM0001")


def test_truncated_nifti_gives_exit_2_and_one_line(tmp_path):
    series = EchoSeries(np.random.default_rng(0).random((4, 3, 6, 6)).astype(np.float32) * 100, (10, 20, 30, 40))
    path = write_echo_series(series, tmp_path / "mese.nii")
    path.write_bytes(path.read_bytes()[:-100])
    assert_one_line_error(cli("t2", path, "--out", tmp_path / "out"), "mese.nii")
    assert not (tmp_path / "out" / "t2w.nii.gz").exists()


def test_pickled_model_gives_exit_2_and_one_line(tmp_path):
    noise = np.random.default_rng(2).random((4, 128, 128)).astype(np.float32) * 100
    image = write_volume(Volume(noise, (1.5, 1.5, 6.0)), tmp_path / "t1.nii.gz")
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    assert_one_line_error(cli("segment", image, "--out", tmp_path / "out", "--model", evil), "model.pt")


# ------------------------------------------------------------------ atomic outputs

def test_warnings_are_one_readable_line_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    one_slice = write_volume(Volume(rng.random((1, 128, 128)).astype(np.float32), (2.0, 2.0, 5.0)),
                             tmp_path / "one_slice.nii.gz")
    done = cli("segment", one_slice, "--out", tmp_path / "out", "--no-tta")
    assert done.returncode == 0, done.stderr
    assert "myositis-qmri segment: warning: " in done.stderr and "one_slice.nii.gz: a single slice" in done.stderr
    assert "UserWarning" not in done.stderr


def test_failed_write_leaves_nothing_under_the_final_name(tmp_path):
    final = tmp_path / "t2w.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half a volume")
            raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_normal_permissions_even_when_the_writer_recreates_the_file(tmp_path):
    # safetensors (model files) replaces the temporary file with a new one of mode 0600.
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.unlink()
            tmp.touch(mode=0o600)
    finally:
        os.umask(umask)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_failed_rewrite_keeps_the_previous_complete_file(tmp_path):
    volume = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    final = write_volume(volume, tmp_path / "ff.nii.gz")
    before = final.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"\x1f\x8b truncated")
            raise RuntimeError("killed midway")
    assert final.read_bytes() == before
    np.testing.assert_array_equal(read_volume(final).array, volume.array)


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from myositis_qmri.io import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(b"\\x1f\\x8b" + b"x" * 100000)
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
""")


def test_killed_process_leaves_no_file_under_the_final_name(tmp_path):
    final = tmp_path / "maps" / "t2w.nii.gz"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(final)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert not final.exists()
    leftovers = list(final.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".") and ".tmp" in leftovers[0].name
    with pytest.raises(InputError):  # nothing would pick the partial file up as the map
        read_volume(final)


def test_batch_does_not_count_a_killed_study_as_complete(tmp_path):
    from myositis_qmri import batch
    study = tmp_path / "study"
    study.mkdir()
    (study / "a.dcm").write_bytes(b"x")
    task = batch.plan_tasks([study], tmp_path / "out")[0]

    def dies_midway(study_path, output_dir, options):
        (output_dir / "report.json").write_text('{"muscles": [')
        raise KeyboardInterrupt  # stands in for a kill: the marker is never written

    with pytest.raises(KeyboardInterrupt):
        batch.process_study(task, dies_midway)
    assert batch.completed_marker(task.output_dir, task.fingerprint) is None


# ------------------------------------------------------------------ inputs are never modified

def test_t2_command_leaves_its_inputs_untouched(tmp_path):
    rng = np.random.default_rng(1)
    te = np.arange(1, 9) * 10.0
    signal_ = 800 * np.exp(-te[:, None, None, None] / 35.0) * np.ones((8, 2, 6, 6)) + rng.normal(0, 2, (8, 2, 6, 6))
    inputs = tmp_path / "in"
    write_echo_series(EchoSeries(np.abs(signal_).astype(np.float32), te), inputs / "mese.nii.gz")
    before = digest_tree(inputs)
    done = cli("t2", inputs / "mese.nii.gz", "--out", tmp_path / "out", "--model", "mono")
    assert done.returncode == 0, done.stderr
    assert digest_tree(inputs) == before
    assert (tmp_path / "out" / "t2w.nii.gz").exists()


# ------------------------------------------------------------------ model files: safetensors + JSON only

class _RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "code-was-run"


def _model_module():
    return pytest.importorskip("myositis_qmri.segmentation.model")


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "model.ckpt", "model.safetensors", "model.bin"])
def test_pickles_are_refused_under_any_name_and_never_unpickled(tmp_path, marker, name):
    model = _model_module()
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_RunsCode(marker), protocol=4))
    with pytest.raises(ModelFileError):
        model.load_model(path)
    assert not marker.exists()


def test_torch_save_archive_renamed_to_safetensors_is_refused(tmp_path, marker):
    model = _model_module()
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.safetensors"
    torch.save({"w": torch.zeros(3), "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelFileError):
        model.load_model(path)
    assert not marker.exists()


def test_safetensors_without_json_header_is_refused(tmp_path):
    model = _model_module()
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="header"):
        model.load_model(path)


@pytest.mark.parametrize("damage", ["truncated", "huge_header_length", "header_not_json"])
def test_damaged_safetensors_is_refused(tmp_path, damage):
    model = _model_module()
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(64)}, str(path), metadata={"myositis_qmri": "{}"})
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "huge_header_length":
        raw[:8] = (2**62).to_bytes(8, "little")
    else:
        raw[8:12] = b"\xff\xfe{["
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        model.load_model(path)


# ------------------------------------------------------------------ privacy: no network in the core

NETWORK_MODULES = {"socket", "ssl", "urllib", "urllib2", "urllib3", "http", "httpx", "requests", "aiohttp",
                   "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc", "websocket", "websockets",
                   "paramiko", "huggingface_hub", "boto3", "botocore", "sentry_sdk", "posthog", "mixpanel"}
DOWNLOAD_CALLS = {"urlopen", "urlretrieve", "load_state_dict_from_url", "download_url", "download_url_to_file",
                  "hf_hub_download", "snapshot_download", "download_and_extract", "pip_install"}
# The cluster client is the one module allowed to talk over sockets, and only when a user runs
# `batch`; its local cluster listens on the loopback interface only.
CLUSTER_MODULES = {"distributed", "dask"}
CLUSTER_ALLOWED_IN = {"batch.py"}


def core_sources():
    return sorted(CORE.rglob("*.py"))


def test_core_package_imports_no_network_module_and_downloads_nothing():
    offences = []
    for path in core_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root in NETWORK_MODULES or (root in CLUSTER_MODULES and path.name not in CLUSTER_ALLOWED_IN):
                    offences.append(f"{path.relative_to(CORE)}:{node.lineno} imports {name}")
            if isinstance(node, ast.Attribute) and node.attr in DOWNLOAD_CALLS:
                offences.append(f"{path.relative_to(CORE)}:{node.lineno} uses {node.attr}")
            if isinstance(node, ast.Name) and node.id in DOWNLOAD_CALLS:
                offences.append(f"{path.relative_to(CORE)}:{node.lineno} uses {node.id}")
            if isinstance(node, ast.Attribute) and node.attr == "hub" and getattr(node.value, "id", "") == "torch":
                offences.append(f"{path.relative_to(CORE)}:{node.lineno} uses torch.hub")
    assert not offences, "\n".join(offences)


NO_SOCKETS = textwrap.dedent("""
    # Creating a socket is harmless (urllib3, imported by pydicom, probes IPv6 support that
    # way); reaching any address or name server is what must never happen.
    import socket, sys
    def refuse(*args, **kwargs):
        raise SystemExit("network access attempted: " + repr(args)[:200])
    class RefusedSocket(socket.socket):
        connect = connect_ex = sendto = sendmsg = refuse
    socket.socket = RefusedSocket
    socket.create_connection = socket.getaddrinfo = socket.gethostbyname = socket.gethostbyname_ex = refuse
    from myositis_qmri.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_commands_run_with_sockets_disabled(tmp_path):
    te = np.arange(1, 7) * 10.0
    data = (600 * np.exp(-te[:, None, None, None] / 40.0) * np.ones((6, 2, 5, 5))).astype(np.float32)
    image = write_echo_series(EchoSeries(data, te), tmp_path / "mese.nii.gz")
    env = {**os.environ, "MYOSITIS_QMRI_PROGRESS": "off"}
    for args in (["inspect", image, "--json"], ["t2", image, "--out", tmp_path / "out", "--model", "mono"]):
        done = subprocess.run([sys.executable, "-c", NO_SOCKETS, *map(str, args)], capture_output=True,
                              text=True, timeout=180, env=env)
        assert done.returncode == 0, (args[0], done.stderr[-2000:])
        assert "network access attempted" not in done.stderr
    assert json.loads(subprocess.run([sys.executable, "-c", NO_SOCKETS, "inspect", str(image), "--json"],
                                     capture_output=True, text=True, timeout=180, env=env).stdout)
