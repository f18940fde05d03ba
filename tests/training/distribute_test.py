"""Tests of training/distribute.py and of training under real tf.distribute strategies.

`mirrored` runs over two logical CPU devices and `multi_worker` as two worker processes on
loopback ports; both need fresh processes (TensorFlow's devices and collective runtime are
configured once per process), so they run the binary or a small driver in subprocesses.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the training binary and tf.distribute need the TensorFlow backend",
)


def test_unknown_strategy_is_a_clear_error():
    from training import distribute

    with pytest.raises(ValueError, match="Unknown strategy 'horovod': expected one of default"):
        distribute.get_strategy("horovod")


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    from training import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable"):
        distribute.get_strategy("multi_worker")


@pytest.mark.parametrize(
    "tf_config, match",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "has no 'cluster' mapping"),
        ('{"cluster": {"worker": ["localhost:1"]}}', "has no 'task' with 'type' and 'index'"),
        (
            '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}',
            "is not in its cluster",
        ),
    ],
)
def test_multi_worker_with_a_bad_tf_config_is_a_clear_error(monkeypatch, tf_config, match):
    from training import distribute

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=match):
        distribute.get_strategy("multi_worker")


def test_tpu_without_a_tpu_is_a_clear_error(monkeypatch):
    from training import distribute

    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="--strategy=tpu found no TPU"):
        distribute.get_strategy("tpu")


def test_single_device_strategies_have_one_replica():
    from training import distribute

    for name in ("default", "one_device"):
        strategy = distribute.get_strategy(name)
        assert strategy.num_replicas_in_sync == 1
        assert distribute.is_chief(strategy)
        assert distribute.task_name(strategy) == "local"


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
    ],
)
def test_is_chief_follows_the_tf_config_convention(cluster, task_type, task_id, chief):
    import tensorflow as tf

    from training import distribute

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    strategy = types.SimpleNamespace(cluster_resolver=resolver)
    assert distribute.is_chief(strategy) is chief
    assert distribute.task_name(strategy) == f"{task_type}_{task_id}"


_MIRRORED_DRIVER = textwrap.dedent(
    """
    import dataclasses, json, sys
    import tensorflow as tf
    # Two logical CPUs: must happen before TensorFlow initializes its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from training import distribute, train
    from training.config import Config

    data_dir, workdir = sys.argv[1], sys.argv[2]
    mirrored = distribute.get_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2, mirrored.extended.worker_devices
    # A clip norm small enough to be active at every step: the replicas' gradients must be
    # summed before they are clipped for the runs to agree. No MixUp: keras-cv draws its
    # mixing per batch, and the replicas' batches are halves of the single replica's.
    config = Config(data_dir=data_dir, variant="mu/4", image_size=8, global_batch_size=16,
                    train_steps=8, warmup_steps=2, grad_clip_norm=0.05, learning_rate=0.01,
                    mixup=0.0,
                    progress=False, export=False, checkpoint_every_steps=4)
    # And with gradient accumulation: each replica's 8 examples in 4 micro-batches of 2.
    accumulated = dataclasses.replace(config, accumulation_steps=4)
    results = {}
    for name, strategy, run_config in (
            ("mirrored", mirrored, config),
            ("accumulated", mirrored, accumulated),
            ("default", distribute.get_strategy("default"), config)):
        model, metrics = train.train_and_evaluate(run_config, f"{workdir}/{name}",
                                                  strategy=strategy)
        np.savez(f"{workdir}/{name}.npz", *[np.asarray(w) for w in model.weights])
        results[name] = metrics
    for name, odd in (("odd", Config(data_dir=data_dir, global_batch_size=15)),
                      # 24 is a multiple of 8, but each replica's 12 is not.
                      ("odd_micro", Config(data_dir=data_dir, global_batch_size=24,
                                           accumulation_steps=8))):
        try:
            train.train_and_evaluate(odd, f"{workdir}/{name}", strategy=mirrored)
        except ValueError as exc:
            results[f"{name}_batch_error"] = str(exc)
    json.dump(results, open(f"{workdir}/results.json", "w"))
    """
)


def test_mirrored_over_two_cpus_matches_a_single_replica(
    tmp_path, tfds_data_dir, repo_root, subprocess_env
):
    driver = tmp_path / "driver.py"
    driver.write_text(_MIRRORED_DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), tfds_data_dir, str(tmp_path)],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    results = json.loads((tmp_path / "results.json").read_text())
    default = results["default"]
    assert default["num_replicas"] == 1
    # The same global batches (one input pipeline, per-example augmentation seeds), summed
    # gradients, one clip: the same training, up to float summation order (measured: 2e-7,
    # with or without 4 micro-batches per replica). Clipping each replica's share instead, as
    # Keras' optimizers do, is off by 4e-4 in the eval loss, and fails here; so does clipping
    # each micro-batch's gradient (1e-2 on the weights).
    for name in ("mirrored", "accumulated"):
        mirrored = results[name]
        assert mirrored["num_replicas"] == 2
        assert mirrored["global_step"] == default["global_step"] == 8
        assert mirrored["eval_examples"] == default["eval_examples"] == 359
        with np.load(tmp_path / f"{name}.npz") as a, np.load(tmp_path / "default.npz") as b:
            assert len(a.files) == len(b.files) > 0
            for key in a.files:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=2e-6,
                                           err_msg=f"{name} {key}")
        np.testing.assert_allclose(mirrored["eval_loss"], default["eval_loss"], rtol=1e-5)
        np.testing.assert_allclose(mirrored["eval_accuracy"], default["eval_accuracy"],
                                   atol=1e-9)
    assert "global_batch_size 15 is not divisible by the number of replicas 2" in (
        results["odd_batch_error"])
    assert results["odd_micro_batch_error"] == (
        "the per-replica batch 12 (global_batch_size 24 over 2 replicas) is not divisible by "
        "accumulation_steps 8; use a global_batch_size that is a multiple of 16")
    assert not (tmp_path / "odd").exists() and not (tmp_path / "odd_micro").exists()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


_WORKER_DRIVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from absl import app
    from training import distribute, flags, train

    def main(argv):
        config = flags.config_from_flags()
        strategy = distribute.get_strategy(config.strategy)
        model, metrics = train.train_and_evaluate(config, flags.FLAGS.workdir, strategy=strategy)
        np.savez(OUT, *[np.asarray(w) for w in model.weights])
        print("METRICS", metrics["eval_loss"], metrics["eval_accuracy"], metrics["global_step"])

    OUT = sys.argv.pop()
    flags.define_training_flags()
    app.run(main)
    """
)


def test_multi_worker_two_local_workers_agree(
    tmp_path, tfds_data_dir, repo_root, subprocess_env, tiny_flags
):
    driver = tmp_path / "worker.py"
    driver.write_text(_WORKER_DRIVER)
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    workdir = tmp_path / "run"
    procs = []
    for index in range(2):
        tf_config = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(subprocess.Popen(
            [sys.executable, str(driver), f"--workdir={workdir}", "--strategy=multi_worker",
             *tiny_flags(tfds_data_dir), str(tmp_path / f"worker{index}.npz")],
            cwd=repo_root, env=subprocess_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-5000:]
    reported = [
        [line for line in out.splitlines() if line.startswith("METRICS")] for out, _ in outputs
    ]
    assert reported[0] == reported[1] and len(reported[0]) == 1, reported
    # Each worker's own copy of the weights: identical after the all-reduced updates.
    with np.load(tmp_path / "worker0.npz") as a, np.load(tmp_path / "worker1.npz") as b:
        assert len(a.files) == len(b.files) > 0
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # Only the chief (worker 0) writes the run's outputs.
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["num_replicas"] == 2
    assert metrics["global_step"] == 6
    assert metrics["eval_examples"] == 359
    assert float(reported[0][0].split()[1]) == pytest.approx(metrics["eval_loss"])
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
        "ckpt-6.data-00000-of-00001", "ckpt-6.index",
    ]
