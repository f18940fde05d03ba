"""Tests of training/optim.py: schedule values, optimizer kinds, weight-decay exclusions."""

import keras
import numpy as np
import pytest

import keras_vit
from training import optim


def _values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_cosine_schedule_warms_up_linearly_then_follows_the_cosine():
    schedule = optim.create_learning_rate_schedule(
        "cosine", learning_rate=0.1, total_steps=1100, warmup_steps=100
    )
    steps = [0, 25, 50, 100, 350, 600, 850, 1100]
    # Warmup: 0.1 * s / 100. Decay over 1000 steps: 0.05 * (1 + cos(pi * (s - 100) / 1000)).
    expected = [0.0, 0.025, 0.05, 0.1]
    expected += [0.05 * (1 + np.cos(np.pi * (s - 100) / 1000)) for s in (350, 600, 850, 1100)]
    np.testing.assert_allclose(_values(schedule, steps), expected, rtol=1e-5, atol=1e-7)
    # Keras' own class does the work.
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)


def test_cosine_schedule_without_warmup_starts_at_the_peak():
    schedule = optim.create_learning_rate_schedule(
        "cosine", learning_rate=2.0, total_steps=10, warmup_steps=0
    )
    np.testing.assert_allclose(_values(schedule, [0, 5, 10]), [2.0, 1.0, 0.0], atol=1e-6)


def test_linear_schedule_warms_up_then_decays_linearly_to_zero():
    schedule = optim.create_learning_rate_schedule(
        "linear", learning_rate=1.0, total_steps=110, warmup_steps=10
    )
    np.testing.assert_allclose(
        _values(schedule, [0, 5, 10, 35, 60, 110, 200]),
        [0.0, 0.5, 1.0, 0.75, 0.5, 0.0, 0.0],
        atol=1e-6,
    )


def test_constant_schedule_with_and_without_warmup():
    schedule = optim.create_learning_rate_schedule(
        "constant", learning_rate=0.3, total_steps=100, warmup_steps=4
    )
    np.testing.assert_allclose(
        _values(schedule, [0, 1, 2, 4, 50, 1000]), [0.0, 0.075, 0.15, 0.3, 0.3, 0.3], atol=1e-7
    )
    assert (
        optim.create_learning_rate_schedule(
            "constant", learning_rate=0.3, total_steps=100, warmup_steps=0
        )
        == 0.3
    )


def test_linear_warmup_round_trips_through_its_config():
    schedule = optim.create_learning_rate_schedule(
        "linear", learning_rate=1.0, total_steps=110, warmup_steps=10
    )
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    steps = [0, 7, 10, 50, 110]
    np.testing.assert_allclose(_values(restored, steps), _values(schedule, steps), atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(schedule="step"), "Unknown schedule 'step'"),
        (dict(warmup_steps=100), "warmup_steps 100 must be smaller than the 100 training steps"),
        (dict(learning_rate=0.0), r"learning_rate must be a number in \(0, inf\), received 0.0"),
        (dict(total_steps=0), "total_steps must be a positive integer"),
        (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, match):
    arguments = dict(schedule="cosine", learning_rate=0.1, total_steps=100, warmup_steps=10)
    arguments.update(kwargs)
    schedule = arguments.pop("schedule")
    with pytest.raises(ValueError, match=match):
        optim.create_learning_rate_schedule(schedule, **arguments)


@pytest.mark.parametrize(
    "name, cls", [("adamw", "AdamW"), ("adam", "Adam"), ("sgd", "SGD")]
)
def test_create_optimizer_returns_keras_optimizers(name, cls):
    optimizer = optim.create_optimizer(name, 0.1, weight_decay=0.01, global_clipnorm=1.0)
    assert type(optimizer).__name__ == cls
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.weight_decay == 0.01
    if name == "sgd":
        assert optimizer.momentum == optim.SGD_MOMENTUM == 0.9


def test_create_optimizer_wraps_in_loss_scaling_for_float16():
    optimizer = optim.create_optimizer("adamw", 0.1, loss_scale=True)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(optimizer.inner_optimizer, keras.optimizers.AdamW)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="lamb"), "Unknown optimizer 'lamb'"),
        (dict(weight_decay=-0.1), r"weight_decay must be a number in \[0, inf\), received -0.1"),
        (dict(global_clipnorm=0.0), r"global_clipnorm must be a number in \(0, inf\), received 0.0"),
    ],
)
def test_create_optimizer_rejects_bad_arguments(kwargs, match):
    arguments = dict(name="adamw")
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        optim.create_optimizer(arguments.pop("name"), 0.1, **arguments)


def test_weight_decay_skips_biases_norms_and_embeddings():
    model = keras_vit.ViT("mu/4", image_size=8, num_classes=3)
    excluded = optim.no_weight_decay_variables(model)
    excluded_paths = sorted(v.path for v in excluded)
    # Rank <= 1 (biases, LayerNorm gamma/beta), the class token and the position embeddings.
    assert "class_token/token" in excluded_paths
    assert "position_embedding/embeddings" in excluded_paths
    assert all(len(v.shape) <= 1 for v in excluded if "token" not in v.path
               and "embeddings" not in v.path)
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    assert len(excluded) + len(kernels) == len(model.trainable_variables)

    learning_rate, weight_decay = 0.1, 0.5
    optimizer = optim.create_optimizer(
        "adamw", learning_rate, weight_decay=weight_decay, no_decay_variables=excluded
    )
    before = [np.array(v) for v in model.trainable_variables]
    # Zero gradients: Adam's update is 0, so the only change is the decoupled decay
    # w <- w * (1 - lr * wd) on the decayed variables.
    optimizer.apply_gradients(
        [(keras.ops.zeros(v.shape), v) for v in model.trainable_variables]
    )
    excluded_ids = {id(v) for v in excluded}
    for variable, old in zip(model.trainable_variables, before):
        factor = 1.0 if id(variable) in excluded_ids else 1.0 - learning_rate * weight_decay
        np.testing.assert_allclose(np.array(variable), old * factor, rtol=1e-6, atol=1e-7,
                                   err_msg=variable.path)
