import math

import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import TransformerBlock
from keras_vit.layers.block_kernels import layer_norm
from keras_vit.layers.block_masks import BlockMasks


def _layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _reference_block(block, x, approximate):
    """Equations (2) and (3) of the paper, in NumPy float64."""
    w = {v.path.split("/", 1)[1]: to_numpy(v).astype("float64") for v in block.weights}
    heads, d = block.num_heads, x.shape[-1]
    h = _layer_norm(x, w["attention_norm/gamma"], w["attention_norm/beta"])
    qkv = h @ w["qkv/kernel"] + w["qkv/bias"]
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(x.shape[:2] + (heads, -1))
               for i in range(3))
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d // heads)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", attn, v).reshape(x.shape)
    x = x + out @ w["attention_output/kernel"] + w["attention_output/bias"]
    h = _layer_norm(x, w["mlp_norm/gamma"], w["mlp_norm/beta"])
    h = _gelu(h @ w["mlp_dense_1/kernel"] + w["mlp_dense_1/bias"], approximate)
    return x + h @ w["mlp_dense_2/kernel"] + w["mlp_dense_2/bias"], attn


def test_standard_checks():
    # 2 LayerNorms (2*2*32) + qkv (32*96+96) + out (32*32+32)
    # + MLP (32*64+64 + 64*32+32) = 8,544 parameters in 12 weights.
    run_layer_test(
        TransformerBlock,
        dict(num_heads=4, mlp_dim=64, dropout=0.1, attention_dropout=0.1,
             drop_path_rate=0.2, layer_norm_epsilon=1e-5, approximate_gelu=False,
             seed=3, remat=True),
        input_shape=(2, 17, 32),
        expected_output_shape=(2, 17, 32),
        expected_num_trainable_weights=12,
        expected_num_params=8544,
    )


@pytest.mark.parametrize("approximate", [True, False])
def test_matches_the_paper_equations(approximate):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 16)).astype("float32")
    block = TransformerBlock(num_heads=4, mlp_dim=24, approximate_gelu=approximate)
    block.build(x.shape)
    for v in block.weights:  # non-trivial LayerNorm and bias values
        v.assign(rng.standard_normal(v.shape).astype("float32") * 0.3
                 + (1.0 if v.path.endswith("gamma") else 0.0))
    expected, expected_attn = _reference_block(block, x.astype("float64"), approximate)
    np.testing.assert_allclose(to_numpy(block(x)), expected, rtol=1e-4, atol=1e-4)
    out, attn = block(x, return_attention_weights=True)
    assert tuple(attn.shape) == (2, 4, 9, 9)
    np.testing.assert_allclose(to_numpy(attn), expected_attn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4), ("mixed_bfloat16", 5e-2)])
def test_first_token_only_is_the_first_row_of_the_paper_equations(dtype, tolerance):
    # The last block of a [class]-token model computes that token alone; its
    # value and attention row are those of the full block.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 9, 16)).astype("float32")
    block = TransformerBlock(num_heads=4, mlp_dim=24, dtype=dtype)
    block.build(x.shape)
    for v in block.weights:
        v.assign(rng.standard_normal(v.shape).astype("float32") * 0.3
                 + (1.0 if v.path.endswith("gamma") else 0.0))
    expected, expected_attn = _reference_block(block, x.astype("float64"), True)
    out = block(x, first_token_only=True)
    assert tuple(out.shape) == (3, 1, 16)
    as_f32 = lambda t: to_numpy(keras.ops.cast(t, "float32"))  # noqa: E731
    np.testing.assert_allclose(as_f32(out), expected[:, :1], rtol=tolerance, atol=tolerance)
    # Not what the other tokens give: the comparison can fail.
    assert np.abs(as_f32(out) - expected[:, 1:2]).max() > 0.1
    out, attn = block(x, return_attention_weights=True, first_token_only=True)
    assert tuple(attn.shape) == (3, 4, 1, 9)
    np.testing.assert_allclose(to_numpy(attn), expected_attn[:, :, :1], rtol=tolerance,
                               atol=tolerance / 10)
    np.testing.assert_allclose(as_f32(out), expected[:, :1], rtol=tolerance, atol=tolerance)
    # Symbolic calls give the shapes too (the Functional ViT is built that way).
    tokens = keras.Input((9, 16))
    assert tuple(block(tokens, first_token_only=True).shape) == (None, 1, 16)
    spec = block.compute_output_spec(tokens, return_attention_weights=True, first_token_only=True)
    assert [tuple(t.shape) for t in spec] == [(None, 1, 16), (None, 4, 1, 9)]
    assert tuple(block(tokens).shape) == (None, 9, 16)


def test_inference_is_deterministic_with_dropout_rates():
    block = TransformerBlock(2, 16, dropout=0.5, attention_dropout=0.5,
                             drop_path_rate=0.5)
    x = np.random.default_rng(0).standard_normal((4, 5, 8)).astype("float32")
    np.testing.assert_array_equal(to_numpy(block(x)), to_numpy(block(x, training=False)))


def test_drop_path_drops_whole_examples_at_the_given_rate():
    # With rate r, both residual branches of an example are dropped with
    # probability r^2, leaving the example exactly unchanged.
    block = TransformerBlock(2, 16, drop_path_rate=0.5, seed=0)
    x = np.random.default_rng(0).standard_normal((4000, 3, 8)).astype("float32")
    out = to_numpy(block(x, training=True))
    unchanged = np.all(out == x, axis=(1, 2)).mean()
    assert abs(unchanged - 0.25) < 0.03, unchanged


def test_dropout_masks_keep_the_given_fraction():
    # The block draws its masks itself (once per call, so that remat recomputes with the same
    # ones): one per residual branch and example for stochastic depth, one per value for
    # dropout and attention dropout.
    block = TransformerBlock(2, 48, dropout=0.25, attention_dropout=0.5, drop_path_rate=0.1,
                             seed=0)
    block.build((None, 9, 16))
    masks = {name: to_numpy(mask) for name, mask in BlockMasks(block, 2000, 9, 9, True).masks.items()}
    shapes = {name: mask.shape for name, mask in masks.items()}
    assert shapes == {
        "path_attention": (2000, 1, 1), "path_mlp": (2000, 1, 1),
        "attention_output": (18000, 16), "mlp_hidden": (18000, 48), "mlp_output": (18000, 16),
        "attention": (2000, 2, 9, 9),
    }
    for name, keep in (("path_attention", 0.9), ("path_mlp", 0.9), ("attention_output", 0.75),
                       ("mlp_hidden", 0.75), ("mlp_output", 0.75), ("attention", 0.5)):
        assert abs(masks[name].mean() - keep) < 0.03, (name, masks[name].mean())
    assert not np.array_equal(masks["path_attention"], masks["path_mlp"])
    assert BlockMasks(block, 2000, 9, 9, False).masks == {}


def test_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"width 30 of the tokens is not divisible by num_heads 4"):
        TransformerBlock(num_heads=4, mlp_dim=8)(np.zeros((1, 3, 30), "float32"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads=0, mlp_dim=8), "num_heads must be a positive integer, received 0"),
    (dict(num_heads=2, mlp_dim=8, dropout=1.0), r"dropout must be a number in \[0, 1\), received 1.0"),
    (dict(num_heads=2, mlp_dim=8, drop_path_rate=-0.1), r"drop_path_rate must be a number in \[0, 1\), received -0.1"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerBlock(**kwargs)


def test_mixed_bfloat16_attention_weights_are_float32_and_normalized():
    block = TransformerBlock(2, 16, dtype="mixed_bfloat16")
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype("float32")
    out, attn = block(x, return_attention_weights=True)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(keras.ops.sum(attn, -1)), 1.0, rtol=1e-5)


def test_mixed_bfloat16_output_is_the_same_with_and_without_weights():
    # Without returned weights the TensorFlow path takes its softmax in
    # bfloat16, with them in float32; the tokens must agree to bfloat16
    # precision.
    block = TransformerBlock(2, 32, dtype="mixed_bfloat16")
    x = np.random.default_rng(1).standard_normal((2, 9, 16)).astype("float32")
    plain = to_numpy(keras.ops.cast(block(x), "float32"))
    with_weights = to_numpy(keras.ops.cast(block(x, return_attention_weights=True)[0], "float32"))
    np.testing.assert_allclose(plain, with_weights, atol=0.05, rtol=0.02)


def _onednn_enabled():
    if keras.backend.backend() != "tensorflow":
        return False
    from tensorflow.python.util import _pywrap_util_port

    return _pywrap_util_port.IsMklEnabled()


@pytest.mark.skipif(not _onednn_enabled(),
                    reason="grappler's GELU fusion needs TensorFlow with oneDNN on CPU")
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("approximate,fused_gelu,gelu_op", [
    (True, b"GeluApproximate", "Tanh"), (False, b"GeluExact", "Erf"),
])
def test_tensorflow_fuses_gelu_into_the_mlp_matmul(dtype, approximate, fused_gelu, gelu_op):
    # The GELU is Dense's activation so that grappler's remapper folds it into
    # the MatMul (it does so only within the Dense's name scope); a GELU
    # applied after the layer runs as 8 separate elementwise ops, about 10%
    # of a B/16 forward pass on CPU. This runs grappler on the inference graph
    # as tf.function would, and looks at what it made.
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.grappler import tf_optimizer

    block = TransformerBlock(2, 64, approximate_gelu=approximate, dtype=dtype)
    block.build((2, 5, 32))
    concrete = tf.function(lambda x: block(x)).get_concrete_function(
        tf.TensorSpec((2, 5, 32))
    )
    graph = concrete.graph.as_graph_def()
    for node in graph.node:
        node.device = "/job:localhost/replica:0/task:0/device:CPU:0"
    meta_graph = meta_graph_pb2.MetaGraphDef(graph_def=graph)
    meta_graph.collection_def["train_op"].node_list.value.extend(
        t.name for t in concrete.outputs
    )
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta_graph)
    fused = [list(n.attr["fused_ops"].list.s) for n in optimized.node
             if n.op == "_FusedMatMul"]
    assert fused.count([b"BiasAdd", fused_gelu]) == 1, fused
    assert [n.name for n in optimized.node if n.op == gelu_op] == []


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_block_layer_norm_matches_a_float64_reference(dtype, tolerance):
    # On TensorFlow the block normalizes with its own, faster formulation
    # (`block_kernels.layer_norm`), using the LayerNormalization sublayers'
    # weights (elsewhere it calls the sublayer); either way it must give the
    # LayerNorm of float64 arithmetic.
    block = TransformerBlock(2, 16, dtype=dtype)
    block.build((1, 40, 8))
    rng = np.random.default_rng(2)
    norm = block.mlp_norm
    norm.gamma.assign(rng.standard_normal(8).astype("float32"))
    norm.beta.assign(rng.standard_normal(8).astype("float32"))
    # Large common offsets per token, where a naive E[x^2] - E[x]^2 would
    # lose the variance.
    x = (rng.standard_normal((40, 8)) * 0.5 + rng.uniform(-50, 50, (40, 1))).astype("float32")
    x = to_numpy(keras.ops.cast(keras.ops.cast(x, block.compute_dtype), "float32"))
    expected = _layer_norm(x.astype("float64"), to_numpy(norm.gamma), to_numpy(norm.beta))
    ours = to_numpy(keras.ops.cast(
        layer_norm(norm, keras.ops.cast(x, block.compute_dtype)), "float32"))
    # float32: within what float32 inputs of magnitude 50 and spread 0.5
    # allow (PyTorch's fused kernel is 3e-5 off here); bfloat16: within the
    # rounding of the output.
    np.testing.assert_allclose(ours, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("activation, layer_scale, params", [
    # 8544 of the paper's block + 2 * 32 LayerScale gammas.
    ("gelu", 1e-5, 8544 + 64),
    # QuickGELU changes no weight.
    ("quick_gelu", None, 8544),
    # SwiGLU: the packed first layer is (32, 2 * 64) + 128 instead of (32, 64) + 64.
    ("swiglu", 0.1, 8544 + 32 * 64 + 64 + 64),
])
def test_standard_checks_with_the_later_families_options(activation, layer_scale, params):
    run_layer_test(
        TransformerBlock,
        dict(num_heads=4, mlp_dim=64, activation=activation, layer_scale=layer_scale),
        input_shape=(2, 17, 32),
        expected_output_shape=(2, 17, 32),
        expected_num_trainable_weights=12 + 2 * (layer_scale is not None),
        expected_num_params=params,
    )


def _silu(x):
    return x / (1 + np.exp(-x))


@pytest.mark.parametrize("activation", ["quick_gelu", "swiglu"])
def test_later_families_block_equals_float64_reference(activation):
    # x' = x + g1 * MSA(LN(x)); x = x' + g2 * MLP(LN(x')), with QuickGELU or SwiGLU in the MLP.
    block = TransformerBlock(num_heads=2, mlp_dim=8, activation=activation, layer_scale=0.5,
                             layer_norm_epsilon=1e-5)
    x = np.random.default_rng(0).normal(size=(2, 5, 8))
    block(x.astype("float32"))
    rng = np.random.default_rng(1)
    for w in block.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5)
    w = {v.path.split("/", 1)[1]: to_numpy(v).astype("float64") for v in block.weights}
    h = _layer_norm(x, w["attention_norm/gamma"], w["attention_norm/beta"], 1e-5)
    q, k, v = np.split(h @ w["qkv/kernel"] + w["qkv/bias"], 3, axis=-1)
    heads = lambda t: t.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
    logits = heads(q) @ heads(k).transpose(0, 1, 3, 2) / 2.0
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    attended = (probs @ heads(v)).transpose(0, 2, 1, 3).reshape(2, 5, 8)
    x = x + w["attention_scale/gamma"] * (
        attended @ w["attention_output/kernel"] + w["attention_output/bias"])
    h = _layer_norm(x, w["mlp_norm/gamma"], w["mlp_norm/beta"], 1e-5)
    h = h @ w["mlp_dense_1/kernel"] + w["mlp_dense_1/bias"]
    if activation == "swiglu":
        h = _silu(h[..., :8]) * h[..., 8:]  # gate first
    else:
        h = h / (1 + np.exp(-1.702 * h))
    expected = x + w["mlp_scale/gamma"] * (h @ w["mlp_dense_2/kernel"] + w["mlp_dense_2/bias"])
    out = to_numpy(block(np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")))
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(out, expected, atol=2e-4 * np.abs(expected).max())


def test_later_families_options_are_checked():
    with pytest.raises(ValueError, match="Unknown activation 'relu': expected one of gelu, "
                                         "quick_gelu, swiglu"):
        TransformerBlock(num_heads=2, mlp_dim=8, activation="relu")
    with pytest.raises(ValueError, match="layer_scale"):
        TransformerBlock(num_heads=2, mlp_dim=8, layer_scale=0.0)
