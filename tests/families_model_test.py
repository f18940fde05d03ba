"""The later ViT families' options, whole models against a float64 NumPy reference.

Each option of `keras_vit.variants.VariantSpec` (LayerScale, register tokens, the pre-encoder
LayerNorm, a patch embedding without bias, QuickGELU and SwiGLU MLPs) and the "map" pooling,
combined as DINOv2, CLIP and SigLIP combine them: the model's output equals a forward pass
written here in NumPy from the model's own weights in the canonical form
(`keras_vit.checkpoints`), in the order the DINOv2, CLIP and SigLIP papers give. The converter
tests check the same models against transformers' and timm's forward passes.
"""

import dataclasses
import math

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints, variants
from keras_vit.layers import MAPHead, RegisterTokens

MU = variants.parse_variant("mu/4")
FAMILIES = {
    "dinov2_registers": (dataclasses.replace(MU, layer_scale=1e-5, num_registers=3,
                                             approximate_gelu=False), dict(num_classes=0)),
    "dinov2_giant_swiglu": (dataclasses.replace(MU, layer_scale=1e-5, activation="swiglu"),
                            dict(num_classes=0)),
    "clip": (dataclasses.replace(MU, pre_norm=True, patch_bias=False, activation="quick_gelu",
                                 layer_norm_epsilon=1e-5), dict(num_classes=6)),
    "siglip": (MU, dict(num_classes=0, pooling="map")),
    "registers_gap": (dataclasses.replace(MU, num_registers=2), dict(num_classes=4,
                                                                      pooling="gap")),
}


def _layer_norm(x, arrays, prefix, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * arrays[f"{prefix}/scale"] + arrays[f"{prefix}/bias"]


def _gelu(x, approximate):
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _attention(queries, tokens, arrays, prefix):
    """Multi-head attention from the canonical (D, heads, d) kernels: (B, Q, D)."""
    def project(x, name):
        return np.einsum("btd,dhk->bhtk", x, arrays[f"{prefix}/{name}/kernel"]) + (
            arrays[f"{prefix}/{name}/bias"][None, :, None])
    q, k, v = project(queries, "query"), project(tokens, "key"), project(tokens, "value")
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = probs @ v  # (B, heads, Q, d)
    return np.einsum("bhqk,hkd->bqd", out, arrays[f"{prefix}/out/kernel"]) + (
        arrays[f"{prefix}/out/bias"])


def _mlp(x, arrays, prefix, spec):
    h = x @ arrays[f"{prefix}/Dense_0/kernel"] + arrays[f"{prefix}/Dense_0/bias"]
    if spec.activation == "swiglu":  # gate half first
        gate, value = np.split(h, 2, axis=-1)
        h = gate / (1 + np.exp(-gate)) * value
    elif spec.activation == "quick_gelu":
        h = h / (1 + np.exp(-1.702 * h))
    else:
        h = _gelu(h, spec.approximate_gelu)
    return h @ arrays[f"{prefix}/Dense_1/kernel"] + arrays[f"{prefix}/Dense_1/bias"]


def reference(arrays, spec, pooling, images):
    """The model's output from its canonical arrays, in float64."""
    arrays = {k: v.astype("float64") for k, v in arrays.items()}
    eps, p = spec.layer_norm_epsilon, spec.patch_size
    batch, height, width, channels = images.shape
    patches = images.reshape(batch, height // p, p, width // p, p, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, -1, p * p * channels)
    x = patches @ arrays["embedding/kernel"].reshape(p * p * channels, -1)
    if spec.patch_bias:
        x = x + arrays["embedding/bias"]
    prefix = [arrays[k] for k in ("cls", "dist") if k in arrays]
    x = np.concatenate([np.broadcast_to(t, (batch, 1, x.shape[-1])) for t in prefix] + [x], 1)
    x = x + arrays["Transformer/posembed_input/pos_embedding"]
    if spec.num_registers:  # after the prefix, without position embeddings
        registers = np.broadcast_to(arrays["reg"], (batch, *arrays["reg"].shape[1:]))
        x = np.concatenate([x[:, :len(prefix)], registers, x[:, len(prefix):]], axis=1)
    if spec.pre_norm:
        x = _layer_norm(x, arrays, "pre_norm", eps)
    for i in range(spec.depth):
        block = f"Transformer/encoderblock_{i}"
        scale = {name: arrays.get(f"{block}/LayerScale_{name}/scale", 1.0)
                 for name in ("attention", "mlp")}
        h = _layer_norm(x, arrays, f"{block}/LayerNorm_0", eps)
        x = x + scale["attention"] * _attention(
            h, h, arrays, f"{block}/MultiHeadDotProductAttention_1")
        h = _layer_norm(x, arrays, f"{block}/LayerNorm_2", eps)
        x = x + scale["mlp"] * _mlp(h, arrays, f"{block}/MlpBlock_3", spec)
    x = _layer_norm(x, arrays, "Transformer/encoder_norm", eps)
    if pooling == "token":
        x = x[:, 0]
    elif pooling == "gap":
        x = x[:, len(prefix) + spec.num_registers:].mean(1)
    else:  # "map": the probe attends, then a residual MLP on its LayerNorm
        probe = np.broadcast_to(arrays["MAPHead_0/probe"], (batch, 1, x.shape[-1]))
        y = _attention(probe, x, arrays, "MAPHead_0/MultiHeadDotProductAttention_0")
        y = y + _mlp(_layer_norm(y, arrays, "MAPHead_0/LayerNorm_0", eps), arrays,
                     "MAPHead_0/MlpBlock_0", dataclasses.replace(spec, activation="gelu"))
        x = y[:, 0]
    if "head/kernel" in arrays:
        x = x @ arrays["head/kernel"] + arrays["head/bias"]
    return x


def _randomized(model, seed=0):
    """Every weight drawn at random: LayerNorm scales around 1, the rest (LayerScale too) 0."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        layer_norm_scale = w.path.endswith("gamma") and "_scale/" not in w.path
        w.assign(float(layer_norm_scale) + 0.3 * rng.normal(size=w.shape).astype("float32"))
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_model_equals_float64_reference(family):
    spec, kwargs = FAMILIES[family]
    model = _randomized(keras_vit.ViT(spec, image_size=16, **kwargs))
    images = np.random.default_rng(1).normal(size=(2, 16, 16, 3))
    expected = reference(checkpoints._canonical_arrays(model), spec, kwargs.get("pooling", "token"),
                         images)
    ours = keras.ops.convert_to_numpy(model(images.astype("float32")))
    assert ours.shape == expected.shape
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(ours, expected, atol=2e-4 * np.abs(expected).max())


def test_chain_places_each_option_where_its_paper_does():
    spec = dataclasses.replace(MU, num_registers=2, pre_norm=True, patch_bias=False)
    model = keras_vit.ViT(spec, image_size=16, num_classes=0)
    names = [layer.name for layer in model.layers]
    assert names[:8] == ["images", "patch_embedding", "class_token", "position_embedding",
                         "register_tokens", "embedding_dropout", "pre_norm", "encoder_block_0"]
    assert isinstance(model.get_layer("register_tokens"), RegisterTokens)
    assert model.get_layer("patch_embedding").projection.bias is None
    # 1 [class] + 2 registers + 16 patches; the position embeddings cover the class and patches.
    assert tuple(model.get_layer("register_tokens").output.shape) == (None, 19, 32)
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 17, 32)
    siglip = keras_vit.ViT(MU, image_size=16, num_classes=0, pooling="map")
    assert "class_token" not in [layer.name for layer in siglip.layers]
    assert isinstance(siglip.get_layer("pooling"), MAPHead)
    assert tuple(siglip.get_layer("position_embedding").embeddings.shape) == (1, 16, 32)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_model_saves_and_loads_with_the_same_outputs(family, tmp_path):
    spec, kwargs = FAMILIES[family]
    model = _randomized(keras_vit.ViT(spec, image_size=16, **kwargs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_canonical_arrays_load_back_bit_for_bit(family):
    spec, kwargs = FAMILIES[family]
    model = _randomized(keras_vit.ViT(spec, image_size=16, **kwargs))
    arrays = checkpoints._canonical_arrays(model)
    other = keras_vit.ViT(spec, image_size=16, **kwargs)
    checkpoints._load_canonical(other, arrays, {k: k for k in arrays}, "test", [], "test")
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_map_pooling_with_a_distillation_token_is_refused():
    deit = dataclasses.replace(MU, distillation_token=True)
    with pytest.raises(ValueError, match="pooling 'map' cannot be used with a distillation "
                                         "token: expected 'token' or 'distilled'"):
        keras_vit.ViT(deit, image_size=16, pooling="map")
    with pytest.raises(ValueError, match=r"Unknown pooling 'max': expected one of \['token', "
                                         r"'gap', 'distilled', 'map'\]"):
        keras_vit.ViT(MU, image_size=16, pooling="max")
