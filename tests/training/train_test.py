"""Tests of training/train.py: outputs of a run, TensorBoard scalars, bad input, NaN handling."""

import glob
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the training binary needs the TensorFlow backend (tf.distribute, tf.data)",
)

METRIC_KEYS = {
    "eval_accuracy", "eval_loss", "global_step", "resumed_from_step", "train_images_per_sec",
}


def _scalars(logdir):
    """{tag: {step: value}} of the TensorBoard event files in `logdir`."""
    import tensorflow as tf

    scalars = {}
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                scalars.setdefault(value.tag, {})[event.step] = number
    return scalars


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tfds_data_dir, tiny_config):
    """A completed tiny run with export: (workdir, config, model, metrics)."""
    from training import train

    workdir = str(tmp_path_factory.mktemp("run") / "workdir")
    config = tiny_config(tfds_data_dir, export=True)
    model, metrics = train.train_and_evaluate(config, workdir)
    return workdir, config, model, metrics


def test_run_writes_metrics_json(finished_run):
    workdir, config, model, metrics = finished_run
    with open(os.path.join(workdir, "metrics.json")) as f:
        written = json.load(f)
    assert METRIC_KEYS <= set(written)
    assert set(written) == set(metrics)
    for key in METRIC_KEYS:
        assert written[key] == pytest.approx(metrics[key]), key
    assert written["global_step"] == config.train_steps == 6
    assert written["resumed_from_step"] == 0
    # digits: 1,438 train / 359 test examples; 1438 // 16 steps per epoch.
    assert written["num_train_examples"] == 1438
    assert written["eval_examples"] == written["num_eval_examples"] == 359
    assert written["steps_per_epoch"] == 89
    assert written["num_replicas"] == 1
    assert written["image_shape"] == [8, 8, 1]
    assert written["num_parameters"] == model.count_params()
    assert 0.0 <= written["eval_accuracy"] <= 1.0
    assert np.isfinite(written["eval_loss"]) and written["eval_loss"] > 0
    assert written["train_images_per_sec"] > 0


def test_run_writes_model_checkpoints_config_and_saved_model(finished_run):
    workdir, config, model, _ = finished_run
    assert sorted(os.listdir(workdir)) == [
        ".lock", "checkpoints", "config.json", "logs", "metrics.json", "model.keras",
        "saved_model",
    ]
    # checkpoint_every_steps=3 over 6 steps; the state file names the last one.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
        "ckpt-6.data-00000-of-00001", "ckpt-6.index",
    ]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train_steps"] == config.train_steps
    loaded = keras.saving.load_model(os.path.join(workdir, "model.keras"), compile=False)
    for saved, trained in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(trained))
    assert os.path.isfile(os.path.join(workdir, "saved_model", "saved_model.pb"))


def test_run_writes_tensorboard_scalars(finished_run):
    from training import optim

    workdir, config, _, metrics = finished_run
    train = _scalars(os.path.join(workdir, "logs", "train"))
    assert {"loss", "accuracy", "learning_rate", "images_per_sec", "grad_norm"} <= set(train)
    # log_every_steps=2 over 6 steps.
    assert sorted(train["loss"]) == [2, 4, 6]
    schedule = optim.create_learning_rate_schedule(
        config.schedule, learning_rate=config.learning_rate, total_steps=6, warmup_steps=2
    )
    # The rate of the last update before each write: that of optimizer iteration step - 1.
    for step, value in train["learning_rate"].items():
        assert value == pytest.approx(float(schedule(step - 1)), rel=1e-6)
    assert all(v > 0 for v in train["images_per_sec"].values())
    evaluation = _scalars(os.path.join(workdir, "logs", "eval"))
    assert evaluation["accuracy"] == {6: pytest.approx(metrics["eval_accuracy"])}
    assert evaluation["loss"] == {6: pytest.approx(metrics["eval_loss"], rel=1e-6)}


def test_rerun_of_a_finished_run_resumes_without_training(finished_run, tiny_config,
                                                          tfds_data_dir):
    from training import train

    workdir, config, _, metrics = finished_run
    _, again = train.train_and_evaluate(config, workdir)
    assert again["resumed_from_step"] == 6
    assert again["global_step"] == 6
    assert again["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert again["eval_accuracy"] == metrics["eval_accuracy"]


def test_more_train_steps_continue_from_the_checkpoint(tmp_path, tfds_data_dir, tiny_config):
    from training import train

    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config(tfds_data_dir), workdir)
    _, metrics = train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=9), workdir)
    assert metrics["resumed_from_step"] == 6
    assert metrics["global_step"] == 9


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(dataset="no_such_dataset"), "unknown dataset 'no_such_dataset'"),
        (dict(variant="mu/3"), "not divisible by patch_size 3"),
        (dict(variant="XL/4"), "size 'XL' is not one of"),
        (dict(global_batch_size=5000), "global_batch_size 5000 is larger than the 1438"),
        (dict(learning_rate=-1.0), "learning_rate must be a number in"),
        (dict(optimizer="lamb"), "Unknown optimizer 'lamb'"),
        (dict(strategy="horovod"), "Unknown strategy 'horovod'"),
        (dict(warmup_steps=6), "warmup_steps 6 must be smaller than the 6 training steps"),
        (dict(epochs=0, train_steps=0), "epochs and train_steps are both 0"),
        (dict(init_from="/no/such/file.weights.h5"), "init_from file .* does not exist"),
        (dict(init_position_embeddings="reinitialize"), "needs init_from to be a '.keras' model"),
    ],
)
def test_bad_settings_fail_before_writing_anything(tmp_path, tfds_data_dir, tiny_config,
                                                   overrides, match):
    from training import train

    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train.train_and_evaluate(tiny_config(tfds_data_dir, **overrides), str(workdir))
    assert not workdir.exists()


def test_missing_data_dir_fails_before_writing_anything(tmp_path, tiny_config):
    from training import train

    with pytest.raises(ValueError, match="does not exist or is not a directory"):
        train.train_and_evaluate(tiny_config(str(tmp_path / "nowhere")), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_workdir_of_another_model_is_refused_untouched(tmp_path, tfds_data_dir, tiny_config):
    from training import train

    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config(tfds_data_dir), str(workdir))
    before = {p: os.path.getmtime(p) for p in glob.glob(f"{workdir}/**", recursive=True)}
    with pytest.raises(ValueError, match="does not match this run's model"):
        train.train_and_evaluate(tiny_config(tfds_data_dir, variant="mu/2"), str(workdir))
    after = {p: os.path.getmtime(p) for p in glob.glob(f"{workdir}/**", recursive=True)}
    assert after == before


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    tmp_path, tfds_data_dir, tiny_config
):
    from training import checkpointing, train

    # Adam's first update moves every weight by about the learning rate: 1e30 keeps the
    # weights finite after step 1 (checkpointed), and overflows step 2.
    config = tiny_config(
        tfds_data_dir, learning_rate=1e30, schedule="constant", warmup_steps=0,
        weight_decay=0.0, grad_clip_norm=0.0, checkpoint_every_steps=1,
    )
    workdir = str(tmp_path / "run")
    with pytest.raises(train.NonFiniteLossError, match=r"(loss|gradient norm) is (nan|inf) at step 2 .*ckpt-1, is kept"):
        train.train_and_evaluate(config, workdir)
    assert checkpointing.latest_checkpoint(workdir).endswith("ckpt-1")
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))
    assert not os.path.exists(os.path.join(workdir, "model.keras"))


@pytest.mark.parametrize("mixed_precision, jit_compile", [("bfloat16", True), ("float16", False)])
def test_mixed_precision_runs(tmp_path, tfds_data_dir, tiny_config, mixed_precision,
                              jit_compile):
    from training import train

    config = tiny_config(tfds_data_dir, mixed_precision=mixed_precision, jit_compile=jit_compile)
    model, metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(metrics["eval_loss"])
    assert model.get_layer("encoder_block_0").compute_dtype == mixed_precision
    # The global policy is restored for the caller.
    assert keras.config.dtype_policy().name == "float32"


def test_cli_bad_input_exits_non_zero_with_a_message(tmp_path, tfds_data_dir, repo_root,
                                                     subprocess_env, tiny_flags):
    workdir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", f"--workdir={workdir}",
         *tiny_flags(tfds_data_dir, dataset="no_such_dataset")],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "training.train: error: unknown dataset 'no_such_dataset'" in proc.stderr
    assert not workdir.exists()


@pytest.mark.slow
def test_default_run_beats_97_percent_on_digits(tmp_path, repo_root, subprocess_env):
    """The project's main job, exactly as the README runs it: no flag but --workdir."""
    from training.config import Config

    workdir = tmp_path / "run"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "training.train", f"--workdir={workdir}"],
        cwd=repo_root, env=subprocess_env(TFDS_DATA_DIR=str(tmp_path / "tfds")),
        capture_output=True, text=True, timeout=300,
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    defaults = Config()
    assert metrics["dataset"] == "digits"
    assert metrics["global_step"] == defaults.epochs * (1438 // defaults.global_batch_size)
    assert metrics["eval_examples"] == 359
    assert metrics["eval_accuracy"] >= 0.97, (metrics, seconds)
    assert (workdir / "saved_model" / "saved_model.pb").is_file()
    assert seconds < 300

    # int8 weights (`model.quantize("int8")`, tests/quantization_test.py) keep the trained
    # model's top-1 on the same 359 test images within 1 point (3 images) of float.
    from training.train import evaluate_accuracy

    model = keras.saving.load_model(workdir / "model.keras")
    data_dir = str(tmp_path / "tfds")
    float_top1 = evaluate_accuracy(model, "digits", data_dir=data_dir,
                                   image_size=defaults.image_size)
    assert float_top1 == pytest.approx(metrics["eval_accuracy"], abs=1e-6)
    model.quantize("int8", filters=lambda layer: isinstance(layer, keras.layers.Dense))
    assert model.get_layer("encoder_block_0").qkv.quantization_mode == "int8"
    int8_top1 = evaluate_accuracy(model, "digits", data_dir=data_dir,
                                  image_size=defaults.image_size)
    assert abs(int8_top1 - float_top1) <= 0.01, (float_top1, int8_top1)
