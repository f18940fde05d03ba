"""Preemption and faults: SIGTERM saves the step and exits 75; a lost worker is named, exit 69.

The binary runs in subprocesses (a real signal, a real cluster of two worker processes on
loopback ports, as in distribute_test.py); digits at 8x8, 89 steps per epoch of batch 16, so a
checkpoint appears at every epoch end and the signals land between two of them.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import types

import keras
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the training binary needs the TensorFlow backend (tf.distribute, signals)",
)

STEPS_PER_EPOCH = 89  # 1438 digits // 16
EXIT_PREEMPTED, EXIT_WORKER_LOST = 75, 69
# The bound: 10 s plus a step. Measured on the 2-core CPU: 2-3 s.
EXIT_SECONDS = 10.0


def _latest_step(workdir):
    from training import checkpointing

    latest = checkpointing.latest_checkpoint(str(workdir))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


def _wait_for_checkpoint_after(step, workdir, procs, timeout=180):
    """Waits until the workdir holds a complete checkpoint newer than `step`; returns its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = _latest_step(workdir)
        if latest is not None and latest > step:
            return latest
        assert all(proc.poll() is None for proc in procs), "a process ended before the signal"
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint after step {step} within {timeout} s")


def _wait_all(procs, timeout):
    """Waits for every process; returns [(returncode, seconds from now)], killing stragglers."""
    start = time.monotonic()
    results = []
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            results.append(("hung", time.monotonic() - start))
            continue
        results.append((proc.returncode, time.monotonic() - start))
    return results


def _read(path):
    with open(path) as f:
        return f.read()


def test_stop_request_catches_sigterm_and_sigint_once_and_restores_handlers():
    from training import preemption

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with preemption.StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs the handler at the next bytecode boundary.
        assert stop.requested and stop.signal_name == "SIGTERM"
        # A second signal (SIGINT) while stopping is ignored: the first one's save goes on.
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert stop.signal_name == "SIGTERM"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == previous


def test_agree_sums_the_requests_and_the_docstring_example_runs():
    import doctest

    import tensorflow as tf

    from training import preemption

    strategy = tf.distribute.get_strategy()
    assert preemption.agree(strategy, True) is True
    assert preemption.agree(strategy, False) is False
    assert preemption.num_workers(strategy) == 1
    results = doctest.testmod(preemption)
    assert results.attempted == 1 and results.failed == 0, results


def _cluster(ports):
    import tensorflow as tf

    workers = [f"127.0.0.1:{port}" for port in ports]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": workers}), task_type="worker", task_id=0)
    return types.SimpleNamespace(cluster_resolver=resolver)


def _message(strategy, error, *, task, resume_step):
    from training import preemption

    lost, how = preemption.lost_tasks(strategy, error, task=task)
    return preemption.lost_worker_message(error, task=task, lost=lost, how=how,
                                          resume_step=resume_step)


def test_lost_worker_message_names_the_task_and_the_resume_step():
    import tensorflow as tf

    from training import preemption

    listening = [socket.socket(), socket.socket()]
    try:
        for s in listening:
            s.bind(("127.0.0.1", 0))
            s.listen()
        up = [s.getsockname()[1] for s in listening]
        # Worker 1's address refuses connections: it is the one gone, whatever the error says.
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        gone = closed.getsockname()[1]
        closed.close()
        error = tf.errors.UnavailableError(None, None, "Graph execution error:\n\nCollective "
                                           "ops is aborted by: Socket closed")
        message = _message(_cluster([up[0], gone]), error, task="worker_0", resume_step=178)
        assert message.startswith(
            f"worker_0 stopped: task worker_1 (127.0.0.1:{gone}) disappeared (no answer on its "
            "TF_CONFIG address). Rerunning the whole cluster with the same command resumes from "
            "step 178, the last complete checkpoint. (TensorFlow: UnavailableError: Collective "
            "ops is aborted by: Socket closed)"), message
        # Every address answers (a frozen process keeps its socket): the coordination service's
        # missed heartbeats name the task.
        unhealthy = tf.errors.UnavailableError(None, None, (
            "The following tasks are unhealthy (stopped sending heartbeats):\n"
            "/job:worker/replica:0/task:1\nThe tasks have crashed."))
        message = _message(_cluster(up), unhealthy, task="worker_0", resume_step=89)
        assert "worker_0 stopped: task worker_1 disappeared (named by TensorFlow's error). " \
            "Rerunning the whole cluster with the same command resumes from step 89" in message
        # The survivor's heartbeats to the coordination service (worker 0) time out.
        deadline = tf.errors.DeadlineExceededError(None, None, (
            "Collective ops is aborted by: Deadline Exceeded\n\n"
            "RPC: /tensorflow.CoordinationService/Heartbeat"))
        message = _message(_cluster(up), deadline, task="worker_1", resume_step=None)
        assert ("worker_1 stopped: task worker_0 disappeared (named by TensorFlow's error). "
                "Rerunning the whole cluster with the same command resumes from the last "
                "complete checkpoint in the chief's workdir (not visible from here).") in message
        # An internal error that names no task is not a lost worker: it passes through.
        bug = tf.errors.InternalError(None, None, "Something else broke")
        assert preemption.lost_tasks(_cluster(up), bug, task="worker_0") == (
            [], "named by TensorFlow's error")
        with pytest.raises(tf.errors.InternalError, match="Something else broke"):
            with preemption.explain_lost_workers(_cluster(up), task="worker_0",
                                                 resume_step=lambda: 0):
                raise bug
        with pytest.raises(preemption.WorkerLostError, match="a task of the cluster stopped "
                           "answering. Rerunning the whole cluster with the same command "
                           "resumes from step 7"):
            with preemption.explain_lost_workers(_cluster(up), task="worker_0",
                                                 resume_step=lambda: 7):
                raise tf.errors.CancelledError(None, None, "Cancelled")
    finally:
        for s in listening:
            s.close()


def test_sigterm_mid_run_saves_that_step_and_the_same_command_resumes_from_it(
        tmp_path, tfds_data_dir, repo_root, subprocess_env, tiny_flags):
    workdir = tmp_path / "run"
    total = 1500
    # No periodic checkpoint: only epoch ends (89, 178, ...) save, so a saved step that is not
    # a multiple of 89 can only come from the SIGTERM.
    command = [sys.executable, "-m", "training.train", f"--workdir={workdir}",
               *tiny_flags(tfds_data_dir, train_steps=total, checkpoint_every_steps=0)]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=repo_root, env=subprocess_env(), stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            epoch_end = _wait_for_checkpoint_after(0, workdir, [proc])
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            # A second SIGTERM while the first one's checkpoint is being saved.
            time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            [(returncode, seconds)] = _wait_all([proc], timeout=60)
        finally:
            proc.kill()
    text = _read(log)
    assert returncode == EXIT_PREEMPTED, text[-3000:]
    assert seconds < EXIT_SECONDS, text[-3000:]
    match = re.search(r"stopped by SIGTERM at step (\d+) of 1500; checkpoint \1 saved", text)
    assert match, text[-3000:]
    stopped = int(match.group(1))
    # Saved by the SIGTERM, after the last epoch-end checkpoint.
    assert STEPS_PER_EPOCH <= epoch_end < stopped < total, (epoch_end, stopped)
    assert f"Rerun the same command to resume from step {stopped}" in text
    assert _latest_step(workdir) == stopped
    # Complete checkpoints only, and no result files of an unfinished run.
    names = set(os.listdir(workdir / "checkpoints"))
    assert {f"ckpt-{stopped}.index", f"ckpt-{stopped}.data-00000-of-00001", "checkpoint"} <= names
    assert all(re.fullmatch(r"checkpoint|ckpt-\d+\.(index|data-00000-of-00001)", n)
               for n in names), names
    assert not (workdir / "metrics.json").exists() and not (workdir / "model.keras").exists()

    proc = subprocess.run(command, cwd=repo_root, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == stopped
    assert metrics["global_step"] == total
    assert metrics["eval_examples"] == 359


_MIRRORED_DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    import tensorflow as tf
    # Two logical CPUs: must happen before TensorFlow initializes its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from training import checkpointing, distribute, preemption, train
    from training.config import Config

    data_dir, workdir = sys.argv[1], sys.argv[2]
    strategy = distribute.get_strategy("mirrored")
    config = Config(data_dir=data_dir, variant="mu/4", image_size=8, global_batch_size=16,
                    train_steps=400, warmup_steps=2, checkpoint_every_steps=0, progress=False,
                    export=False)

    def sigterm_after_the_first_checkpoint():
        while checkpointing.latest_checkpoint(workdir) is None:
            time.sleep(0.01)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=sigterm_after_the_first_checkpoint, daemon=True).start()
    result = {"replicas": strategy.num_replicas_in_sync}
    try:
        train.train_and_evaluate(config, workdir, strategy=strategy)
    except preemption.Preempted as exc:
        result.update(step=exc.step, signal=exc.signal_name,
                      latest=checkpointing.latest_checkpoint(workdir))
    _, metrics = train.train_and_evaluate(config, workdir, strategy=strategy)
    result.update(resumed=metrics["resumed_from_step"], final=metrics["global_step"])
    print("RESULT", json.dumps(result))
    """
)


def test_sigterm_under_mirrored_over_two_replicas_saves_that_step_and_resumes(
        tmp_path, tfds_data_dir, repo_root, subprocess_env):
    driver = tmp_path / "driver.py"
    driver.write_text(_MIRRORED_DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), tfds_data_dir, str(tmp_path / "run")],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    result = json.loads(line.split(" ", 1)[1])
    assert result["replicas"] == 2
    assert result["signal"] == "SIGTERM"
    assert STEPS_PER_EPOCH <= result["step"] < 400, result
    assert result["latest"].endswith(f"ckpt-{result['step']}")
    assert result["resumed"] == result["step"] and result["final"] == 400, result


class _Cluster:
    """Two `python -m training.train --strategy=multi_worker` processes on loopback ports."""

    def __init__(self, tmp_path, command, repo_root, subprocess_env):
        sockets = [socket.socket() for _ in range(2)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        self.ports = [s.getsockname()[1] for s in sockets]
        for s in sockets:
            s.close()
        self.tmp_path, self.command = tmp_path, command
        self.repo_root, self.subprocess_env = repo_root, subprocess_env
        self.procs, self.logs = [], []

    def start(self, name):
        workers = [f"127.0.0.1:{port}" for port in self.ports]
        self.logs = [self.tmp_path / f"{name}.worker{index}.log" for index in range(2)]
        self.procs = []
        for index, log in enumerate(self.logs):
            tf_config = json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(
                    self.command, cwd=self.repo_root,
                    env=self.subprocess_env(TF_CONFIG=tf_config), stdout=out,
                    stderr=subprocess.STDOUT))
        return self.procs

    def texts(self):
        return [_read(log) for log in self.logs]

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_workers_sigterm_then_a_lost_worker_then_resume(
        tmp_path, tfds_data_dir, repo_root, subprocess_env, tiny_flags):
    workdir = tmp_path / "run"
    total = 400
    command = [sys.executable, "-m", "training.train", f"--workdir={workdir}",
               "--strategy=multi_worker",
               *tiny_flags(tfds_data_dir, train_steps=total, checkpoint_every_steps=0)]
    cluster = _Cluster(tmp_path, command, repo_root, subprocess_env)
    try:
        # 1. SIGTERM to both workers between two epoch ends: both stop at one step, saved.
        procs = cluster.start("sigterm")
        _wait_for_checkpoint_after(0, workdir, procs)
        time.sleep(0.5)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        results = _wait_all(procs, timeout=60)
        texts = cluster.texts()
        for (returncode, seconds), text in zip(results, texts):
            assert returncode == EXIT_PREEMPTED, text[-3000:]
            assert seconds < EXIT_SECONDS, text[-3000:]
        steps = [int(re.search(r"stopped by SIGTERM at step (\d+) of 400", text).group(1))
                 for text in texts]
        stopped = steps[0]
        assert steps == [stopped, stopped]
        assert STEPS_PER_EPOCH < stopped < 2 * STEPS_PER_EPOCH
        assert _latest_step(workdir) == stopped

        # 2. The same command resumes there; then the chief (worker 0, also the coordination
        # service's leader) is SIGKILLed after the next epoch-end checkpoint.
        procs = cluster.start("sigkill")
        saved = _wait_for_checkpoint_after(stopped, workdir, procs)
        killed = time.monotonic()
        procs[0].kill()
        [(survivor_code, _)] = _wait_all(procs[1:], timeout=60)
        survived_for = time.monotonic() - killed
        procs[0].wait()
        resume = _latest_step(workdir)
        texts = cluster.texts()
        assert re.search(rf"Resuming from \S+: step {stopped}\b", texts[1]), texts[1][-3000:]
        assert survivor_code == EXIT_WORKER_LOST, texts[1][-3000:]
        assert survived_for < 60
        assert resume >= saved == 2 * STEPS_PER_EPOCH
        assert (f"training.train: error: worker_1 stopped: task worker_0 "
                f"(127.0.0.1:{cluster.ports[0]}) disappeared (no answer on its TF_CONFIG "
                f"address). Rerunning the whole cluster with the same command resumes from "
                f"step {resume}, the last complete checkpoint.") in texts[1], texts[1][-3000:]

        # 3. The whole cluster, rerun, resumes from that checkpoint and completes.
        procs = cluster.start("resume")
        results = _wait_all(procs, timeout=300)
        texts = cluster.texts()
        for (returncode, _), text in zip(results, texts):
            assert returncode == 0, text[-3000:]
    finally:
        cluster.kill()
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resume
    assert metrics["global_step"] == total
    assert metrics["num_replicas"] == 2
    assert metrics["eval_examples"] == 359
