"""Gradient accumulation (`accumulation_steps`): the whole batch's update, a micro-batch at a time.

The update of a global batch in N micro-batches must be the update of the batch in one piece:
the gradients summed, then clipped at their global norm (the paper's recipe, Appendix B.1.1),
then one optimizer step. SGD makes the clip visible in the weights (Adam's first step would
not: it is invariant to the gradient's scale), and the clip norm is small enough to be active.
Under two replicas, the binary with micro-batches is compared with one replica in
`distribute_test.py`'s mirrored driver (the process with two logical CPUs it starts anyway).
"""

import dataclasses
import os
import types

import keras
import numpy as np
import pytest

from keras_vit import model_layers

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the training binary needs the TensorFlow backend (tf.distribute, tf.function)",
)

# SGD, a constant rate and a clip at 0.05 (the gradient's norm at initialization is about 6).
_SETTINGS = dict(
    variant="mu/4", image_size=8, global_batch_size=16, optimizer="sgd", learning_rate=2.0,
    weight_decay=0.0, schedule="constant", warmup_steps=0, grad_clip_norm=0.05,
    dropout=0.0, attention_dropout=0.0, drop_path_rate=0.0, label_smoothing=0.1,
)


def random_batch(size=16, classes=3, seed=0):
    """A batch of random 8x8x1 images in [-1, 1] and one-hot labels."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, size=(size, 8, 8, 1)).astype("float32")
    labels = np.eye(classes, dtype="float32")[rng.integers(0, classes, size=size)]
    return images, labels


def one_update(strategy, images, labels, **overrides):
    """One `train` call on (images, labels) from a fresh state: (weights before, after, out)."""
    import tensorflow as tf

    from training import state as state_lib, steps as steps_lib
    from training.config import Config

    config = Config(**{**_SETTINGS, **overrides}).validate()
    # What create_state reads of a DatasetInfo: no input pipeline module to import (keras-cv
    # and TFDS, 3 s of the two-replica driver's start).
    info = types.SimpleNamespace(num_classes=labels.shape[-1], channels=images.shape[-1])
    state = state_lib.create_state(config, info, total_steps=10, strategy=strategy)
    # The zero-initialized head (the paper's) passes no gradient to the encoder in a first
    # step: a random one makes every weight's gradient count.
    kernel = state.model.get_layer("head").kernel
    kernel.assign(np.random.default_rng(1).normal(0.0, 0.5, kernel.shape).astype("float32"))
    before = [np.array(w) for w in state.model.trainable_weights]
    steps = steps_lib.create_step_functions(config, state, strategy)
    dataset = tf.data.Dataset.from_tensors((images, labels))
    out = steps.train(iter(strategy.experimental_distribute_dataset(dataset)),
                      tf.constant(0.0))
    after = [np.array(w) for w in state.model.trainable_weights]
    assert int(state.optimizer.iterations.numpy()) == 1
    return before, after, {key: float(value) for key, value in out.items()}


def check_same_update(reference, accumulated, atol=1e-5, rtol=1e-5):
    """The two `one_update` results agree, and the comparison could have failed."""
    (before, after, out), (before_n, after_n, out_n) = reference, accumulated
    assert len(before) == len(before_n) == len(after) == len(after_n) > 0
    for a, b in zip(before, before_n):
        np.testing.assert_array_equal(a, b)
    # The clip was active, and every weight moved far more than the tolerance.
    assert out["grad_norm"] > 5 * _SETTINGS["grad_clip_norm"], out
    for a, b in zip(after, before):
        assert np.max(np.abs(a - b)) > 20 * atol
    for a, b in zip(after_n, after):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    assert out_n["count"] == out["count"] == 16.0
    assert out_n["correct"] == out["correct"]
    np.testing.assert_allclose(out_n["loss_sum"], out["loss_sum"], rtol=rtol)
    np.testing.assert_allclose(out_n["grad_norm"], out["grad_norm"], rtol=rtol)
    # SGD's first step (its momentum starts at 0) is -lr times the clipped gradient: of global
    # norm lr * clip_norm when the sum is clipped, not each micro-batch's gradient.
    step_norm = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(after_n, before_n)))
    np.testing.assert_allclose(
        step_norm, _SETTINGS["learning_rate"] * _SETTINGS["grad_clip_norm"], rtol=1e-4)


def test_four_micro_batches_make_the_update_of_the_whole_batch():
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    images, labels = random_batch()
    reference = one_update(strategy, images, labels)
    for jit_compile in (False, True):
        accumulated = one_update(strategy, images, labels, accumulation_steps=4,
                                 jit_compile=jit_compile)
        check_same_update(reference, accumulated)
    # Under float16 loss scaling the micro-batches' gradients are summed scaled, and unscaled
    # once, for the clip, the reported norm and the update. float16 activations: measured
    # 1.5e-5 on the weights, 8e-6 on the norm, 1e-6 on the loss.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        scaled = [one_update(strategy, images, labels, mixed_precision="float16",
                             accumulation_steps=n) for n in (1, 4)]
    finally:
        keras.config.set_dtype_policy(previous)
    check_same_update(*scaled, atol=5e-5, rtol=1e-4)
    np.testing.assert_allclose(scaled[1][2]["grad_norm"], reference[2]["grad_norm"], rtol=1e-3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(accumulation_steps=0), "accumulation_steps must be an integer >= 1, received 0"),
        (dict(accumulation_steps=2.0), "accumulation_steps must be an integer >= 1, received 2.0"),
        (dict(global_batch_size=30, accumulation_steps=4),
         "global_batch_size 30 is not divisible by accumulation_steps 4; use a multiple of 4"),
    ],
)
def test_bad_accumulation_steps_are_clear_errors(overrides, message):
    from training.config import Config

    with pytest.raises(ValueError) as error:
        Config(**overrides).validate()
    assert str(error.value) == message


def test_accumulation_steps_flag(tmp_path):
    from training import config as config_lib, flags as training_flags

    training_flags.define_training_flags()
    flags = training_flags.FLAGS
    assert flags["accumulation_steps"].default == config_lib.Config().accumulation_steps == 1
    try:
        flags(["train", f"--workdir={tmp_path}", "--global_batch_size=512",
               "--accumulation_steps=16"])
        config = training_flags.config_from_flags()
    finally:
        flags.unparse_flags()
    assert (config.global_batch_size, config.accumulation_steps) == (512, 16)
    for argv, message in [
        (["--accumulation_steps=0"], "accumulation_steps must be an integer >= 1, received 0"),
        (["--global_batch_size=30", "--accumulation_steps=4"],
         "global_batch_size 30 is not divisible by accumulation_steps 4; use a multiple of 4"),
    ]:
        try:
            flags(["train", f"--workdir={tmp_path}", *argv])
            with pytest.raises(ValueError) as error:
                training_flags.config_from_flags()
        finally:
            flags.unparse_flags()
        assert str(error.value) == message


def test_config_examples_run():
    import doctest

    from training import config as config_lib

    result = doctest.testmod(config_lib)
    # Config.for_finetuning's and check_micro_batches' examples.
    assert result.attempted >= 2 and result.failed == 0


def test_steps_and_checkpoints_count_updates_and_resume_across_settings(
    tmp_path, tfds_data_dir, tiny_config
):
    import tensorflow as tf

    from training import train

    workdir = str(tmp_path / "run")
    # Dropout and stochastic depth draw their masks inside the micro-batch loop, and with
    # --remat (the other memory saver) before each recomputed block.
    config = tiny_config(tfds_data_dir, accumulation_steps=2, train_steps=2, warmup_steps=1,
                         checkpoint_every_steps=2, mixup=0.0, dropout=0.1, drop_path_rate=0.1,
                         remat=True)
    model, metrics = train.train_and_evaluate(config, workdir)
    assert metrics["global_step"] == 2
    assert [block.remat for block in model_layers.transformer_blocks(model)] == [True]
    # A checkpoint holds the optimizer after 2 updates (not 4 micro-batches) and no partial
    # sum: the run resumes from it without accumulation.
    _, metrics = train.train_and_evaluate(
        dataclasses.replace(config, accumulation_steps=1, train_steps=4, remat=False), workdir)
    assert (metrics["resumed_from_step"], metrics["global_step"]) == (2, 4)
    for step in (2, 4):
        reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{step}"))
        assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == step
        assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == step
