"""`run_layer_test`: the standard checks every keras_vit layer passes; `loss_and_gradients`.

Modelled on Keras' private `TestCase.run_layer_test`: config round trip with
the non-default arguments given, symbolic and eager output shapes, weight
counts, one training step that changes the weights, and a `mixed_bfloat16`
run that stays finite.
"""

import keras
import numpy as np


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def loss_and_gradients(layer, x):
    """(loss, gradients of the trainable weights) of sum(layer(x, training=True)^2), as the
    backend's own training does it: a traced function on TensorFlow and JAX, eager PyTorch."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * y)
            return loss, tape.gradient(loss, layer.trainable_variables)

        loss, grads = step(tf.constant(x))
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(trainable, x):
            y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return (y * y).sum()

        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(
            [v.value for v in layer.trainable_variables], x
        )
    else:
        import torch

        y = layer(torch.tensor(x), training=True)
        loss = (y * y).sum()
        loss.backward()
        grads = [v.value.grad for v in layer.trainable_variables]
        loss = loss.detach()
    return float(to_numpy(loss)), [to_numpy(g) for g in grads]


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    expected_num_params=None,
    call_kwargs=None,
):
    call_kwargs = call_kwargs or {}
    rng = np.random.default_rng(0)

    # Config round trip: every argument given comes back as given, and the
    # rebuilt layer has the same config.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert key in config, f"{layer_cls.__name__}.get_config() lacks {key!r}"
        got = config[key]
        if key.endswith("initializer"):
            expected = keras.initializers.get(value)
            assert got == keras.initializers.serialize(expected), (key, got)
        else:
            assert got == value or list(np.ravel(got)) == list(np.ravel(value)), (
                key,
                got,
                value,
            )
    rebuilt = layer_cls.from_config(config)
    assert rebuilt.get_config() == config
    # Registered under the package name, so saved models find it.
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"keras_vit>{layer_cls.__name__}"
    assert type(keras.saving.deserialize_keras_object(serialized)) is layer_cls

    # Symbolic shapes.
    symbolic = keras.KerasTensor((None,) + tuple(input_shape[1:]))
    out = layer_cls(**init_kwargs)(symbolic, **call_kwargs)
    assert tuple(out.shape) == (None,) + tuple(expected_output_shape[1:])

    # Eager shapes and weight counts.
    layer = layer_cls(**init_kwargs)
    inputs = rng.standard_normal(input_shape).astype("float32")
    out = layer(inputs, **call_kwargs)
    assert tuple(out.shape) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    if expected_num_params is not None:
        assert layer.count_params() == expected_num_params

    # One training step moves the weights and keeps the loss finite.
    if expected_num_trainable_weights:
        layer = layer_cls(**init_kwargs)
        x = keras.Input(tuple(input_shape[1:]))
        model = keras.Model(x, layer(x, **call_kwargs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = [to_numpy(w).copy() for w in layer.trainable_weights]
        targets = rng.standard_normal(expected_output_shape).astype("float32")
        loss = model.train_on_batch(inputs, targets)
        assert np.isfinite(loss)
        changed = [
            not np.array_equal(b, to_numpy(w))
            for b, w in zip(before, layer.trainable_weights)
        ]
        assert any(changed), "a training step changed no weight"

    # mixed_bfloat16: bfloat16 compute, float32 variables, finite output.
    layer = layer_cls(**init_kwargs, dtype="mixed_bfloat16")
    out = layer(inputs, **call_kwargs)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert all(
        keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights
    )
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(out, "float32"))))
    return layer
