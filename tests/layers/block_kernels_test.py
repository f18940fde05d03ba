import math

import keras
import numpy as np
import pytest
from layer_testing import to_numpy

from keras_vit.layers.block_kernels import attention, gelu, layer_norm


def _reference_attention(qkv, batch, heads):
    """Softmax(q k^T / sqrt(d)) v per head, in NumPy float64."""
    qkv = qkv.astype("float64").reshape(batch, -1, 3, heads, qkv.shape[-1] // (3 * heads))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, d)
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", weights, v)
    return out.reshape(-1, heads * q.shape[-1]), weights


def _qkv(rng, batch=2, length=7, width=12):
    # Spread 1.5: logits of order 1-10, softmax far from uniform.
    return (rng.standard_normal((batch * length, 3 * width)) * 1.5).astype("float32")


@pytest.mark.parametrize("return_weights", [False, True])
@pytest.mark.parametrize("through_dropout", [False, True])
def test_attention_matches_a_float64_reference(return_weights, through_dropout):
    # Without weights or dropout, JAX and PyTorch take
    # keras.ops.dot_product_attention and TensorFlow its two batched matmuls;
    # an identity "dropout" forces the explicit path on every backend.
    qkv = _qkv(np.random.default_rng(0))
    expected, expected_weights = _reference_attention(qkv, batch=2, heads=3)
    out, weights = attention(
        qkv, 2, 7, num_heads=3, compute_dtype="float32",
        dropout=(lambda p: p) if through_dropout else None,
        return_weights=return_weights,
    )
    assert tuple(out.shape) == (14, 12)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    if return_weights:
        assert keras.backend.standardize_dtype(weights.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(weights), expected_weights, rtol=1e-5, atol=1e-6)
    else:
        assert weights is None


def test_attention_dropout_acts_on_the_probabilities():
    # Halving every probability halves the output (it is linear in them),
    # while the returned weights stay the softmax before dropout.
    qkv = _qkv(np.random.default_rng(1))
    expected, expected_weights = _reference_attention(qkv, batch=2, heads=3)
    out, weights = attention(qkv, 2, 7, num_heads=3, compute_dtype="float32",
                             dropout=lambda p: p * 0.5, return_weights=True)
    np.testing.assert_allclose(to_numpy(out), expected * 0.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(weights), expected_weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("return_weights", [False, True])
def test_attention_in_bfloat16(return_weights):
    # The output is in the compute dtype, the weights float32 (softmax in
    # float32 whenever they are returned); both within bfloat16 rounding.
    qkv = _qkv(np.random.default_rng(2))
    qkv_bf16 = keras.ops.cast(qkv, "bfloat16")
    rounded = to_numpy(keras.ops.cast(qkv_bf16, "float32"))
    expected, expected_weights = _reference_attention(rounded, batch=2, heads=3)
    out, weights = attention(qkv_bf16, 2, 7, num_heads=3, compute_dtype="bfloat16",
                             return_weights=return_weights)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(keras.ops.cast(out, "float32")), expected,
                               rtol=0.03, atol=0.03)
    if return_weights:
        assert keras.backend.standardize_dtype(weights.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(weights), expected_weights, rtol=0.02, atol=0.01)


def _reference_layer_norm(x, gamma, beta, eps):
    x = x.astype("float64")
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_layer_norm_matches_a_float64_reference_and_the_keras_layer(dtype, tolerance):
    rng = np.random.default_rng(3)
    norm = keras.layers.LayerNormalization(epsilon=1e-3, dtype=dtype)
    norm.build((None, 16))
    gamma = rng.standard_normal(16).astype("float32")
    beta = rng.standard_normal(16).astype("float32")
    norm.gamma.assign(gamma)
    norm.beta.assign(beta)
    x = (rng.standard_normal((30, 16)) * 2 + rng.uniform(-3, 3, (30, 1))).astype("float32")
    x = keras.ops.cast(x, norm.compute_dtype)
    x64 = to_numpy(keras.ops.cast(x, "float32")).astype("float64")
    ours = layer_norm(norm, x)
    assert keras.backend.standardize_dtype(ours.dtype) == norm.compute_dtype
    ours = to_numpy(keras.ops.cast(ours, "float32"))
    # epsilon 1e-3 is large enough to matter (the variances are about 4): it
    # must be the layer's, not a default.
    np.testing.assert_allclose(ours, _reference_layer_norm(x64, gamma, beta, 1e-3),
                               rtol=tolerance, atol=tolerance)
    keras_layer = to_numpy(keras.ops.cast(norm(x), "float32"))
    np.testing.assert_allclose(ours, keras_layer, rtol=tolerance, atol=tolerance)


def _reference_gelu(x, approximate):
    x = x.astype("float64")
    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-6), ("bfloat16", 1e-2)])
def test_gelu_matches_a_float64_reference_in_the_input_dtype(approximate, dtype, tolerance):
    x = np.random.default_rng(4).standard_normal(200).astype("float32") * 3
    x = keras.ops.cast(x, dtype)
    out = gelu(x, approximate)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    expected = _reference_gelu(to_numpy(keras.ops.cast(x, "float32")), approximate)
    np.testing.assert_allclose(to_numpy(keras.ops.cast(out, "float32")), expected,
                               rtol=tolerance, atol=tolerance)
    # The two forms differ by up to about 5e-4 on this range: the flag is used.
    other = _reference_gelu(to_numpy(keras.ops.cast(x, "float32")), not approximate)
    if dtype == "float32":
        assert np.abs(to_numpy(out) - other).max() > 1e-4


def _reference_gelu_derivative(x, approximate):
    x = x.astype("float64")
    if approximate:
        c = np.sqrt(2 / np.pi)
        t = np.tanh(c * (x + 0.044715 * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * c * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
    return cdf + x * np.exp(-0.5 * x**2) / np.sqrt(2 * np.pi)


def _value_and_input_gradient(fn, x, upstream):
    """(fn(x), d sum(fn(x) * upstream) / dx) by the backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x, output_gradients=upstream)
    if backend == "jax":
        import jax

        y, pullback = jax.vjp(fn, x)
        return y, pullback(upstream)[0]
    x = x.detach().requires_grad_()
    y = fn(x)
    y.backward(upstream)
    return y.detach(), x.grad


@pytest.mark.parametrize("approximate", [True, False])
@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_gelu_gradient_matches_a_float64_reference(approximate, dtype, tolerance):
    # The MLP's GELU in training: output and input gradient in the input's
    # dtype, each within one rounding of the float64 values (relative to the
    # upstream gradient's scale, 1).
    rng = np.random.default_rng(5)
    x = keras.ops.cast((rng.standard_normal(300) * 3).astype("float32"), dtype)
    upstream = keras.ops.cast(rng.standard_normal(300).astype("float32"), dtype)
    out, grad = _value_and_input_gradient(lambda t: gelu(t, approximate), x, upstream)
    assert keras.backend.standardize_dtype(grad.dtype) == dtype
    x64 = to_numpy(keras.ops.cast(x, "float32")).astype("float64")
    up64 = to_numpy(keras.ops.cast(upstream, "float32")).astype("float64")
    expected = _reference_gelu_derivative(x64, approximate) * up64
    np.testing.assert_allclose(to_numpy(keras.ops.cast(grad, "float32")), expected,
                               rtol=tolerance, atol=tolerance)
    # The derivative of the other form differs by up to ~1e-3 times the
    # upstream gradient: the float32 comparison can tell them apart.
    other = _reference_gelu_derivative(x64, not approximate) * up64
    if dtype == "float32":
        assert np.abs(to_numpy(grad) - other).max() > 1e-4


@pytest.mark.parametrize("approximate", [True, False])
def test_gelu_in_bfloat16_equals_float32_between_casts(approximate):
    # On PyTorch the bfloat16 GELU runs without casts (its kernels compute in
    # float32 internally); elsewhere the function casts. Either way output
    # and gradient are those of a float32 GELU rounded once to bfloat16.
    rng = np.random.default_rng(6)
    x = keras.ops.cast((rng.standard_normal(4096) * 3).astype("float32"), "bfloat16")
    upstream = keras.ops.cast(rng.standard_normal(4096).astype("float32"), "bfloat16")

    def between_casts(t):
        return keras.ops.cast(keras.ops.gelu(keras.ops.cast(t, "float32"), approximate),
                              "bfloat16")

    out, grad = _value_and_input_gradient(lambda t: gelu(t, approximate), x, upstream)
    cast_out, cast_grad = _value_and_input_gradient(between_casts, x, upstream)
    as_f32 = lambda t: to_numpy(keras.ops.cast(t, "float32"))  # noqa: E731
    if keras.backend.backend() == "torch":
        np.testing.assert_array_equal(as_f32(out), as_f32(cast_out))
        if approximate:
            np.testing.assert_array_equal(as_f32(grad), as_f32(cast_grad))
        else:
            # torch 2.14's bfloat16 backward of the exact form differs from the float32 one
            # in 169 of these 4096 elements, by at most 3.8e-6 (torch 2.13: bitwise): within
            # one bfloat16 rounding (2^-8) of the gradient's scale.
            scale = np.abs(as_f32(cast_grad)).max()
            np.testing.assert_allclose(as_f32(grad), as_f32(cast_grad), rtol=0,
                                       atol=2.0**-8 * scale)
    else:
        # TensorFlow's bfloat16 GELU is bfloat16 arithmetic (not cast), so
        # only within bfloat16 rounding of a few ops.
        np.testing.assert_allclose(as_f32(out), as_f32(cast_out), rtol=3e-2, atol=3e-2)
        np.testing.assert_allclose(as_f32(grad), as_f32(cast_grad), rtol=6e-2, atol=6e-2)
