import math

import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import MAPHead


def test_standard_checks():
    # probe 32 + query (32*32+32) + key_value (32*64+64) + attention_output
    # (32*32+32) + norm 2*32 + MLP (32*64+64 + 64*32+32) = 8,512 in 13 weights.
    run_layer_test(
        MAPHead,
        dict(num_heads=4, mlp_dim=64, layer_norm_epsilon=1e-5, approximate_gelu=False),
        input_shape=(2, 16, 32),
        expected_output_shape=(2, 32),
        expected_num_trainable_weights=13,
        expected_num_params=8512,
    )


def _layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _reference(w, x, heads, eps, approximate):
    """big_vision's MAPHead / SigLIP's pooling head in NumPy float64."""
    b, t, d = x.shape
    q = w["probe"][0] @ w["query/kernel"] + w["query/bias"]  # (1, D)
    kv = x @ w["key_value/kernel"] + w["key_value/bias"]  # (B, T, 2D)
    k = kv[..., :d].reshape(b, t, heads, -1)
    v = kv[..., d:].reshape(b, t, heads, -1)
    q = q.reshape(1, heads, -1)
    logits = np.einsum("qhd,bthd->bhqt", q, k) / np.sqrt(d // heads)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    y = np.einsum("bhqt,bthd->bqhd", attn, v).reshape(b, d)
    y = y @ w["attention_output/kernel"] + w["attention_output/bias"]
    h = _layer_norm(y, w["norm/gamma"], w["norm/beta"], eps)
    h = _gelu(h @ w["mlp_dense_1/kernel"] + w["mlp_dense_1/bias"], approximate)
    return y + h @ w["mlp_dense_2/kernel"] + w["mlp_dense_2/bias"]


def _randomized(layer, shape, rng):
    layer.build(shape)
    w = {}
    for v in layer.weights:
        name = v.path.split("/", 1)[1]
        w[name] = rng.standard_normal(v.shape) * 0.3
        v.assign(w[name])
    return w


@pytest.mark.parametrize("approximate", [True, False])
def test_matches_the_attention_pooling_equations(approximate):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 9, 16))
    layer = MAPHead(num_heads=4, mlp_dim=24, layer_norm_epsilon=1e-5,
                    approximate_gelu=approximate)
    w = _randomized(layer, x.shape, rng)
    out = to_numpy(layer(x.astype("float32")))
    assert out.shape == (3, 16)
    expected = _reference(w, x, 4, 1e-5, approximate)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # The comparison can fail: one head instead of four, or keys and values
    # swapped, are not it.
    assert not np.allclose(out, _reference(w, x, 1, 1e-5, approximate), atol=1e-3)
    swapped = dict(w)
    swapped["key_value/kernel"] = np.concatenate(
        [w["key_value/kernel"][:, 16:], w["key_value/kernel"][:, :16]], axis=1)
    swapped["key_value/bias"] = np.concatenate(
        [w["key_value/bias"][16:], w["key_value/bias"][:16]])
    assert not np.allclose(out, _reference(swapped, x, 4, 1e-5, approximate), atol=1e-3)


def test_pools_every_token_and_is_permutation_invariant():
    # The probe attends over all tokens, no [class] token is singled out:
    # reordering the tokens leaves the pooled output unchanged.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 16)).astype("float32")
    layer = MAPHead(num_heads=2, mlp_dim=32)
    _randomized(layer, x.shape, rng)
    out = to_numpy(layer(x))
    np.testing.assert_allclose(to_numpy(layer(x[:, ::-1])), out, rtol=1e-5, atol=1e-5)
    changed = x.copy()
    changed[:, 5] += 1.0
    assert not np.allclose(to_numpy(layer(changed)), out, atol=1e-3)


def test_weight_names_and_shapes():
    layer = MAPHead(num_heads=4, mlp_dim=64)
    layer.build((None, 10, 32))
    shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in layer.weights}
    assert shapes == {
        "probe": (1, 1, 32),
        "query/kernel": (32, 32), "query/bias": (32,),
        "key_value/kernel": (32, 64), "key_value/bias": (64,),
        "attention_output/kernel": (32, 32), "attention_output/bias": (32,),
        "norm/gamma": (32,), "norm/beta": (32,),
        "mlp_dense_1/kernel": (32, 64), "mlp_dense_1/bias": (64,),
        "mlp_dense_2/kernel": (64, 32), "mlp_dense_2/bias": (32,),
    }


def test_dynamic_length():
    out = MAPHead(num_heads=2, mlp_dim=8)(keras.KerasTensor((None, None, 8)))
    assert tuple(out.shape) == (None, 8)
    layer = MAPHead(num_heads=2, mlp_dim=8)
    assert tuple(layer(np.ones((2, 5, 8), "float32")).shape) == (2, 8)
    assert tuple(layer(np.ones((2, 11, 8), "float32")).shape) == (2, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_heads=0, mlp_dim=8), "num_heads must be a positive integer, received 0"),
        (dict(num_heads=2, mlp_dim=None), "mlp_dim must be a positive integer, received None"),
        (dict(num_heads=2, mlp_dim=8, layer_norm_epsilon=0.0),
         "layer_norm_epsilon must be a number in (0, inf), received 0.0"),
        (dict(num_heads=2, mlp_dim=8, approximate_gelu="tanh"),
         "approximate_gelu must be a bool, received 'tanh'"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        MAPHead(**kwargs)
    assert str(info.value) == message


def test_rejects_num_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError) as info:
        MAPHead(num_heads=5, mlp_dim=8)(np.zeros((2, 4, 32), "float32"))
    assert str(info.value) == "The width 32 of the tokens is not divisible by num_heads 5"


def test_key_value_kernel_has_the_xavier_limit_of_each_part():
    # Keys and values each initialized as a (D, D) Xavier-uniform kernel: limit sqrt(3 / D).
    # (Scale 2 over the fused (D, 2D) kernel, the block's q|k|v rule, would give sqrt(4 / D).)
    head = MAPHead(num_heads=4, mlp_dim=64)
    head.build((None, 10, 256))
    kernel = np.abs(to_numpy(head.key_value.kernel))
    limit = np.sqrt(3 / 256)
    assert 0.99 * limit < kernel.max() <= limit
