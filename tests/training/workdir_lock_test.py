"""One run per workdir: the lock of `training/workdir_lock.py`, held by another process."""

import os
import re
import signal
import socket
import subprocess
import sys

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training binary needs the TensorFlow backend")

# Another run's hold on the workdir, without TensorFlow: the lock and its description, as
# WorkdirLock takes them; prints "locked" once it holds the lock, then waits to be killed.
_HOLDER = """
import sys, time
from training import workdir_lock
with workdir_lock.WorkdirLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(repo_root, subprocess_env):
    """Starts a process holding the lock of a workdir; yields a function(workdir) -> Popen."""
    procs = []

    def start(workdir):
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir)], cwd=repo_root,
                                env=subprocess_env(), stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_run_on_a_busy_workdir_stops_at_once_naming_the_other(
        tmp_path, tfds_data_dir, tiny_config, holder):
    from training import train, workdir_lock

    workdir = tmp_path / "run"
    other = holder(workdir)
    with pytest.raises(workdir_lock.WorkdirBusyError) as error:
        train.train_and_evaluate(tiny_config(tfds_data_dir), str(workdir))
    assert re.fullmatch(
        rf"workdir '{re.escape(str(workdir))}' is in use by another training run \(pid "
        rf"{other.pid} on host {re.escape(socket.gethostname())}, started "
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; lock "
        rf"{re.escape(str(workdir / '.lock'))}\); wait for it to end and rerun, or use another "
        r"--workdir", str(error.value)), str(error.value)
    # Nothing read or written: the other run's lock file alone.
    assert os.listdir(workdir) == [".lock"]
    # SIGKILL: the system releases the lock; the next run takes the file over and completes.
    other.send_signal(signal.SIGKILL)
    other.wait()
    _, metrics = train.train_and_evaluate(tiny_config(tfds_data_dir, export=False), str(workdir))
    assert metrics["global_step"] == 6
    assert sorted(os.listdir(workdir)) == [
        ".lock", "checkpoints", "config.json", "logs", "metrics.json", "model.keras"]
    # Unlocked now: a third run takes the lock.
    with workdir_lock.WorkdirLock(workdir):
        pass


def test_a_refused_run_leaves_no_workdir_and_the_lock_is_taken_again(tmp_path, tiny_config):
    from training import train, workdir_lock

    # Refused after the lock was taken (the data_dir is checked with the data): no trace.
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        train.train_and_evaluate(tiny_config(str(tmp_path / "nowhere")), str(workdir))
    assert not workdir.exists()
    with workdir_lock.WorkdirLock(workdir):
        with pytest.raises(workdir_lock.WorkdirBusyError, match=rf"\(pid {os.getpid()} on"):
            with workdir_lock.WorkdirLock(workdir):
                pass
        assert os.listdir(workdir) == [".lock"]
    assert not workdir.exists()


def test_an_unwritable_workdir_is_one_line_before_the_data_is_read(tmp_path, tiny_config,
                                                                    monkeypatch):
    from training import input_pipeline, train

    # A workdir below a regular file (root ignores permission bits: this fails for everyone).
    (tmp_path / "file").write_text("")
    workdir = tmp_path / "file" / "run"
    monkeypatch.setattr(input_pipeline, "dataset_info", None)  # never reached
    with pytest.raises(ValueError) as error:
        train.train_and_evaluate(tiny_config(str(tmp_path / "nowhere")), str(workdir))
    assert str(error.value) == (
        f"workdir {str(workdir)!r} cannot be written (Not a directory: {workdir}); use a "
        "--workdir this process can write")
