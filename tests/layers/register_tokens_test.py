import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import RegisterTokens


def test_standard_checks():
    run_layer_test(
        RegisterTokens,
        dict(num_registers=3, num_prefix_tokens=2, initializer="ones"),
        input_shape=(2, 18, 32),
        expected_output_shape=(2, 21, 32),
        expected_num_trainable_weights=1,
        expected_num_params=3 * 32,
    )


@pytest.mark.parametrize("num_prefix_tokens", [0, 1, 2])
def test_inserts_the_registers_after_the_prefix(num_prefix_tokens):
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((3, 6, 4))
    layer = RegisterTokens(4, num_prefix_tokens=num_prefix_tokens)
    layer.build(tokens.shape)
    registers = rng.standard_normal((1, 4, 4))
    layer.tokens.assign(registers)
    # Reference: [prefix..., registers..., patches...] (timm, transformers, DINOv2).
    p = num_prefix_tokens
    expected = np.concatenate(
        [tokens[:, :p], np.broadcast_to(registers, (3, 4, 4)), tokens[:, p:]], axis=1
    )
    out = to_numpy(layer(tokens.astype("float32")))
    assert out.shape == (3, 10, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # The comparison can fail: registers in front of the prefix are not it.
    if p:
        wrong = np.concatenate([np.broadcast_to(registers, (3, 4, 4)), tokens], axis=1)
        assert not np.allclose(out, wrong, atol=1e-3)


def test_zero_registers_is_the_identity_without_weights():
    layer = RegisterTokens(0)
    tokens = np.arange(24, dtype="float32").reshape(2, 3, 4)
    np.testing.assert_array_equal(to_numpy(layer(tokens)), tokens)
    assert layer.weights == []
    assert layer.compute_output_shape((2, 3, 4)) == (2, 3, 4)


def test_default_initializer_breaks_the_symmetry():
    # Registers carry no position embedding: equal initial tokens would stay equal.
    layer = RegisterTokens(4)
    layer.build((None, 5, 64))
    tokens = to_numpy(layer.tokens)
    assert tokens.shape == (1, 4, 64)
    assert 0 < np.abs(tokens).max() < 1e-4
    assert not np.allclose(tokens[0, 0], tokens[0, 1], atol=0, rtol=0)
    config = layer.get_config()
    assert config["initializer"] == keras.initializers.serialize(
        keras.initializers.RandomNormal(stddev=1e-6)
    )


def test_dynamic_length():
    out = RegisterTokens(2)(keras.KerasTensor((None, None, 8)))
    assert tuple(out.shape) == (None, None, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_registers=-1), "num_registers must be an integer >= 0, received -1"),
        (dict(num_registers=2.0), "num_registers must be an integer >= 0, received 2.0"),
        (dict(num_registers=True), "num_registers must be an integer >= 0, received True"),
        (dict(num_registers=4, num_prefix_tokens=-2),
         "num_prefix_tokens must be an integer >= 0, received -2"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        RegisterTokens(**kwargs)
    assert str(info.value) == message


def test_rejects_fewer_tokens_than_the_prefix():
    with pytest.raises(ValueError, match=r"at least num_prefix_tokens 3, received input shape \(2, 2, 8\)"):
        RegisterTokens(1, num_prefix_tokens=3)(np.zeros((2, 2, 8), "float32"))
