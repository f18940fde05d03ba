"""Checkpoints and resume: the optimizer state really restored, real SIGKILLs, torn saves."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the training binary needs the TensorFlow backend (tf.train.Checkpoint)",
)


def _model_and_optimizer(seed):
    import tensorflow as tf

    import keras_vit
    from training import optim

    keras.utils.set_random_seed(seed)
    model = keras_vit.ViT("mu/4", image_size=8, num_classes=3, num_channels=1)
    schedule = optim.create_learning_rate_schedule(
        "cosine", learning_rate=0.01, total_steps=20, warmup_steps=2)
    optimizer = optim.create_optimizer(
        "adamw", schedule, weight_decay=0.1,
        no_decay_variables=optim.no_weight_decay_variables(model))
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    epoch = tf.Variable(0, dtype=tf.int64)
    return model, optimizer, step, epoch


def _train_step(model, optimizer, images, labels):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
            labels, model(images, training=True), from_logits=True))
    optimizer.apply_gradients(
        zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))


def test_restore_brings_back_weights_and_optimizer_state_exactly(tmp_path):
    from training import checkpointing

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(4, 8, 8, 1)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]

    model, optimizer, step, epoch = _model_and_optimizer(seed=1)
    for _ in range(3):
        _train_step(model, optimizer, images, labels)
    step.assign(3)
    epoch.assign(1)
    saver = checkpointing.CheckpointSaver(
        checkpointing.create_checkpoint(model, optimizer, step, epoch), str(tmp_path),
        is_chief=True, max_to_keep=2)
    saver.save(3)

    # Another initialization, and a different optimizer state, before the restore.
    other, other_optimizer, other_step, other_epoch = _model_and_optimizer(seed=2)
    _train_step(other, other_optimizer, images[::-1], labels)
    checkpointing.restore(
        checkpointing.create_checkpoint(other, other_optimizer, other_step, other_epoch),
        checkpointing.latest_checkpoint(str(tmp_path)))

    assert int(other_step.numpy()) == 3 and int(other_epoch.numpy()) == 1
    assert int(other_optimizer.iterations.numpy()) == 3
    # Adam's first and second moments of every weight, and the weights themselves.
    assert len(other_optimizer.variables) == len(optimizer.variables) > 2 * len(model.weights)
    for restored, saved in zip(other_optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(saved), restored.path)
    for restored, saved in zip(other.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(saved), restored.path)
    # The continuation is the same: a step after the restore equals a step without it.
    _train_step(model, optimizer, images, labels)
    _train_step(other, other_optimizer, images, labels)
    for continued, reference in zip(other.weights, model.weights):
        np.testing.assert_allclose(np.asarray(continued), np.asarray(reference),
                                   rtol=1e-6, atol=1e-7)


def test_torn_or_missing_checkpoint_files_are_skipped(tmp_path, tfds_data_dir, tiny_config):
    from training import checkpointing, train

    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=9), str(workdir))
    directory = workdir / "checkpoints"
    # What a kill in the middle of saving step 12 can leave: TensorFlow's temporary shard
    # directory and files of a checkpoint that the state file does not name yet.
    (directory / "ckpt-12_temp").mkdir()
    (directory / "ckpt-12_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0")
    (directory / "ckpt-12.index").write_bytes(b"torn")
    assert checkpointing.latest_checkpoint(str(workdir)).endswith("ckpt-9")
    # The newest named checkpoint lost its data (deleted by hand, or a partial copy of the
    # directory): the newest complete one is used.
    os.remove(directory / "ckpt-9.data-00000-of-00001")
    assert checkpointing.latest_checkpoint(str(workdir)).endswith("ckpt-6")
    # Without the state file at all.
    os.remove(directory / "checkpoint")
    assert checkpointing.latest_checkpoint(str(workdir)).endswith("ckpt-6")

    _, metrics = train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=12),
                                          str(workdir))
    assert metrics["resumed_from_step"] == 6
    assert metrics["global_step"] == 12
    assert checkpointing.latest_checkpoint(str(workdir)).endswith("ckpt-12")


def _start(command, log, repo_root, env):
    return subprocess.Popen(command, cwd=repo_root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _wait_for(predicate, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def test_sigkill_at_any_moment_then_rerun_resumes(tmp_path, tfds_data_dir, repo_root,
                                                 subprocess_env, tiny_flags):
    from training import checkpointing

    workdir = tmp_path / "run"
    # Checkpoints every 2 steps: most of the run is spent saving, so the kills below land in
    # the middle of writes as often as not.
    total_steps = 400
    command = [sys.executable, "-m", "training.train", f"--workdir={workdir}",
               *tiny_flags(tfds_data_dir, train_steps=total_steps, checkpoint_every_steps=2,
                           export=True)]
    env = subprocess_env()
    logs = []
    resumed = [0]
    for attempt, delay in enumerate((0.0, 0.3)):
        logs.append(tmp_path / f"attempt{attempt}.log")
        with open(logs[-1], "w") as log:
            proc = _start(command, log, repo_root, env)
            try:
                # Wait for a checkpoint newer than the one this attempt resumed from.
                def newer():
                    latest = checkpointing.latest_checkpoint(str(workdir))
                    return latest is not None and int(latest.rsplit("-", 1)[1]) > resumed[-1]

                assert _wait_for(newer, proc, timeout=120), logs[-1].read_text()[-3000:]
                time.sleep(delay)
                assert proc.poll() is None, "the run ended before it could be killed"
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not (workdir / "metrics.json").exists()
        latest = checkpointing.latest_checkpoint(str(workdir))
        assert latest is not None
        resumed.append(int(latest.rsplit("-", 1)[1]))
        if attempt:
            # The killed attempt had resumed where the one before it stopped.
            match = re.search(r"Resuming from \S+: step (\d+)", logs[-1].read_text())
            assert match and int(match.group(1)) == resumed[-2], logs[-1].read_text()[-3000:]

    proc = subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resumed[-1] > 0
    assert metrics["global_step"] == total_steps
    assert metrics["eval_examples"] == 359
    assert (workdir / "model.keras").is_file()
    assert (workdir / "saved_model" / "saved_model.pb").is_file()
