"""One exit-code contract from the first line of `python -m training.train` to the last:
SIGTERM/SIGINT gives 75 before the run completed (nothing lost: rerun), 0 once it completed."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training binary needs the TensorFlow backend")

EXIT_PREEMPTED = 75


def _start(workdir, tfds_data_dir, repo_root, subprocess_env, tiny_flags):
    return subprocess.Popen(
        [sys.executable, "-m", "training.train", f"--workdir={workdir}",
         *tiny_flags(tfds_data_dir)], cwd=repo_root, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigterm_at_half_a_second_exits_75_with_nothing_written(
        tmp_path, tfds_data_dir, repo_root, subprocess_env, tiny_flags):
    workdir = tmp_path / "run"
    proc = _start(workdir, tfds_data_dir, repo_root, subprocess_env, tiny_flags)
    time.sleep(0.5)  # the imports are still running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "training.train: stopped by SIGTERM before the run started; nothing was written, rerun "
        "the same command")
    assert not workdir.exists()


def test_sigterm_after_done_exits_0(tmp_path, tfds_data_dir, repo_root, subprocess_env,
                                    tiny_flags):
    workdir = tmp_path / "run"
    proc = _start(workdir, tfds_data_dir, repo_root, subprocess_env, tiny_flags)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "] Done: eval_accuracy" in line:
                break
        # A SIGTERM every 20 ms from the "Done:" line until the process has ended: one lands
        # wherever the exit is, the interpreter's teardown included (143 there before).
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.02)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, ("".join(lines) + err)[-3000:]
    assert json.loads((workdir / "metrics.json").read_text())["global_step"] == 6


def test_a_stop_during_the_final_evaluation_is_75_and_during_the_outputs_0(
        tmp_path, tfds_data_dir, tiny_config, monkeypatch):
    from training import checkpointing, loop, outputs, preemption, train

    workdir = tmp_path / "run"
    evaluate = loop.evaluate
    with preemption.StopRequest() as stop:
        # The signal lands while the final evaluation runs (the loop is over, step 6 saved).
        def evaluate_then_signal(*args, **kwargs):
            stop.request("SIGTERM")
            return evaluate(*args, **kwargs)

        monkeypatch.setattr(loop, "evaluate", evaluate_then_signal)
        with pytest.raises(train.Preempted) as error:
            train.train_and_evaluate(tiny_config(tfds_data_dir), str(workdir), stop_request=stop)
    assert str(error.value) == (
        "stopped by SIGTERM during the final evaluation at step 6; checkpoint 6 saved in "
        f"{workdir / 'checkpoints'}. Rerun the same command to evaluate and write the outputs")
    assert error.value.step == 6
    assert checkpointing.latest_checkpoint(str(workdir)).endswith("ckpt-6")
    assert not (workdir / "metrics.json").exists() and not (workdir / "model.keras").exists()

    # The rerun: a signal while model.keras and metrics.json are written changes nothing.
    monkeypatch.setattr(loop, "evaluate", evaluate)
    write_final = outputs.RunOutputs.write_final
    with preemption.StopRequest() as stop:
        def signal_then_write(self, *args, **kwargs):
            stop.request("SIGTERM")
            return write_final(self, *args, **kwargs)

        monkeypatch.setattr(outputs.RunOutputs, "write_final", signal_then_write)
        _, metrics = train.train_and_evaluate(tiny_config(tfds_data_dir), str(workdir),
                                              stop_request=stop)
    assert metrics["resumed_from_step"] == metrics["global_step"] == 6
    assert json.loads((workdir / "metrics.json").read_text())["global_step"] == 6
    assert os.path.isfile(workdir / "model.keras")
