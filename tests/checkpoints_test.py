"""Tests of keras_vit/checkpoints.py: the released .npz layouts, loaded exactly and safely."""

import dataclasses
import os
import pathlib
import pickle
import re
import zipfile

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints, finetune, variants

POSEMB = "Transformer/posembed_input/pos_embedding"
BLOCK0 = "Transformer/encoderblock_0"


@pytest.fixture(autouse=True)
def _pico(monkeypatch):
    # A 2-block, 4-head size: block order and head order are both visible in the outputs.
    monkeypatch.setitem(variants.SIZES, "pico", dict(hidden_dim=32, depth=2, mlp_dim=64,
                                                     num_heads=4))


def _randomize(model, seed=0):
    """Every weight random (heads and LayerNorms included), so that a wrong mapping shows."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    return model


def _model(variant="pico/4", image_size=16, num_classes=10, seed=0, **kwargs):
    return _randomize(
        keras_vit.ViT(variant, image_size=image_size, num_classes=num_classes, **kwargs), seed)


def _images(size=16, batch=2):
    return np.random.default_rng(7).uniform(-1, 1, (batch, size, size, 3)).astype("float32")


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def _save_dict(path, arrays):
    np.savez(path, **arrays)
    return str(path)


# ------------------------------------------------------------------ the original layout


def test_original_layout_keys_and_shapes(tmp_path):
    model = _model("mu/4", representation_size=16)
    arrays = dict(np.load(checkpoints.save_npz(model, tmp_path / "m.npz")))
    attention = f"{BLOCK0}/MultiHeadDotProductAttention_1"
    expected = {
        "embedding/kernel": (4, 4, 3, 32), "embedding/bias": (32,), "cls": (1, 1, 32),
        POSEMB: (1, 17, 32),
        f"{BLOCK0}/LayerNorm_0/scale": (32,), f"{BLOCK0}/LayerNorm_0/bias": (32,),
        f"{attention}/query/kernel": (32, 2, 16), f"{attention}/query/bias": (2, 16),
        f"{attention}/key/kernel": (32, 2, 16), f"{attention}/key/bias": (2, 16),
        f"{attention}/value/kernel": (32, 2, 16), f"{attention}/value/bias": (2, 16),
        f"{attention}/out/kernel": (2, 16, 32), f"{attention}/out/bias": (32,),
        f"{BLOCK0}/LayerNorm_2/scale": (32,), f"{BLOCK0}/LayerNorm_2/bias": (32,),
        f"{BLOCK0}/MlpBlock_3/Dense_0/kernel": (32, 128),
        f"{BLOCK0}/MlpBlock_3/Dense_0/bias": (128,),
        f"{BLOCK0}/MlpBlock_3/Dense_1/kernel": (128, 32),
        f"{BLOCK0}/MlpBlock_3/Dense_1/bias": (32,),
        "Transformer/encoder_norm/scale": (32,), "Transformer/encoder_norm/bias": (32,),
        "pre_logits/kernel": (32, 16), "pre_logits/bias": (16,),
        "head/kernel": (16, 10), "head/bias": (10,),
    }
    assert {k: v.shape for k, v in arrays.items()} == expected
    assert all(v.dtype == np.float32 for v in arrays.values())
    # The fused (D, 3D) kernel is q | k | v, each head's columns contiguous.
    qkv = keras.ops.convert_to_numpy(model.get_layer("encoder_block_0").qkv.kernel)
    np.testing.assert_array_equal(arrays[f"{attention}/key/kernel"][:, 1, :], qkv[:, 48:64])


@pytest.mark.parametrize("pooling,representation_size", [("token", None), ("gap", 24)])
def test_round_trip_is_exact(tmp_path, pooling, representation_size):
    source = _model(pooling=pooling, representation_size=representation_size)
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    target = keras_vit.ViT("pico/4", image_size=16, num_classes=10, pooling=pooling,
                           representation_size=representation_size)
    summary = checkpoints.load_npz(target, path)
    for a, b in zip(_weights(source), _weights(target)):
        np.testing.assert_array_equal(a, b)
    images = _images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(source(images)),
                                  keras.ops.convert_to_numpy(target(images)))
    # Saving the loaded model writes the same arrays: the writer is the loader's inverse.
    again = dict(np.load(checkpoints.save_npz(target, tmp_path / "again.npz")))
    first = dict(np.load(path))
    assert sorted(again) == sorted(first)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])
    assert summary.layout == "original ViT"
    assert len(summary.loaded) == len(first)
    assert summary.resized == summary.dropped == summary.zero_initialized == []


def test_vit_weights_argument_loads_npz(tmp_path):
    source = _model()
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    model = keras_vit.ViT("pico/4", image_size=16, num_classes=10, weights=path)
    images = _images()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(source(images)),
                                  keras.ops.convert_to_numpy(model(images)))


# ------------------------------------------------------------------ a NumPy reference forward


def _random_checkpoint(rng, *, pooling, representation_size, width=32, depth=2, heads=4,
                       mlp=64, patch=4, grid=4, classes=10):
    """An original-layout dict of random arrays, written without keras_vit."""
    def normal(*shape):
        return rng.normal(scale=0.3, size=shape).astype("float32")

    head_dim = width // heads
    w = {"embedding/kernel": normal(patch, patch, 3, width), "embedding/bias": normal(width)}
    prefix = 1 if pooling == "token" else 0
    if prefix:
        w["cls"] = normal(1, 1, width)
    w[POSEMB] = normal(1, prefix + grid * grid, width)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}"
        a = f"{b}/MultiHeadDotProductAttention_1"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{b}/{ln}/scale"] = 1 + normal(width)
            w[f"{b}/{ln}/bias"] = normal(width)
        for name in ("query", "key", "value"):
            w[f"{a}/{name}/kernel"] = normal(width, heads, head_dim)
            w[f"{a}/{name}/bias"] = normal(heads, head_dim)
        w[f"{a}/out/kernel"] = normal(heads, head_dim, width)
        w[f"{a}/out/bias"] = normal(width)
        w[f"{b}/MlpBlock_3/Dense_0/kernel"] = normal(width, mlp)
        w[f"{b}/MlpBlock_3/Dense_0/bias"] = normal(mlp)
        w[f"{b}/MlpBlock_3/Dense_1/kernel"] = normal(mlp, width)
        w[f"{b}/MlpBlock_3/Dense_1/bias"] = normal(width)
    w["Transformer/encoder_norm/scale"] = 1 + normal(width)
    w["Transformer/encoder_norm/bias"] = normal(width)
    features = width
    if representation_size:
        w["pre_logits/kernel"] = normal(width, representation_size)
        w["pre_logits/bias"] = normal(representation_size)
        features = representation_size
    w["head/kernel"] = normal(features, classes)
    w["head/bias"] = normal(classes)
    return w


def _layer_norm(x, scale, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * scale + bias


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _reference_forward(w, images, pooling):
    """The original model's forward pass in float64 NumPy, read straight off the npz keys."""
    w = {k: v.astype("float64") for k, v in w.items()}
    kernel = w["embedding/kernel"]
    patch, width = kernel.shape[0], kernel.shape[-1]
    batch, height, wide, channels = images.shape
    gh, gw = height // patch, wide // patch
    patches = images.astype("float64").reshape(batch, gh, patch, gw, patch, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, gh * gw, -1)
    x = patches @ kernel.reshape(-1, width) + w["embedding/bias"]
    if pooling == "token":
        x = np.concatenate([np.broadcast_to(w["cls"], (batch, 1, width)), x], axis=1)
    x = x + w[POSEMB]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in w:
        b = f"Transformer/encoderblock_{i}"
        a = f"{b}/MultiHeadDotProductAttention_1"
        y = _layer_norm(x, w[f"{b}/LayerNorm_0/scale"], w[f"{b}/LayerNorm_0/bias"])
        q, k, v = (np.einsum("btd,dhk->bthk", y, w[f"{a}/{n}/kernel"]) + w[f"{a}/{n}/bias"]
                   for n in ("query", "key", "value"))
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        heads = np.einsum("bhqs,bshk->bqhk", probs, v)
        x = x + np.einsum("bqhk,hkd->bqd", heads, w[f"{a}/out/kernel"]) + w[f"{a}/out/bias"]
        y = _layer_norm(x, w[f"{b}/LayerNorm_2/scale"], w[f"{b}/LayerNorm_2/bias"])
        m = f"{b}/MlpBlock_3"
        hidden = _gelu_tanh(y @ w[f"{m}/Dense_0/kernel"] + w[f"{m}/Dense_0/bias"])
        x = x + hidden @ w[f"{m}/Dense_1/kernel"] + w[f"{m}/Dense_1/bias"]
        i += 1
    x = _layer_norm(x, w["Transformer/encoder_norm/scale"], w["Transformer/encoder_norm/bias"])
    x = x[:, 0] if pooling == "token" else x.mean(axis=1)
    if "pre_logits/kernel" in w:
        x = np.tanh(x @ w["pre_logits/kernel"] + w["pre_logits/bias"])
    return x @ w["head/kernel"] + w["head/bias"]


@pytest.mark.parametrize("pooling,representation_size", [("token", None), ("gap", 16)])
def test_matches_numpy_reference_forward(tmp_path, pooling, representation_size):
    w = _random_checkpoint(np.random.default_rng(3), pooling=pooling,
                           representation_size=representation_size)
    path = _save_dict(tmp_path / "ref.npz", w)
    model = keras_vit.ViT("pico/4", image_size=16, num_classes=10, pooling=pooling,
                          representation_size=representation_size, weights=path)
    images = _images()
    expected = _reference_forward(w, images, pooling)
    assert np.abs(expected).max() > 0.5  # Logits far from zero: the comparison means something.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), expected, atol=1e-4)


# ------------------------------------------------------------------ other layouts


def _linen_names(arrays):
    renames = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
               "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}
    out = {}
    for key, value in arrays.items():
        parts = key.split("/")
        if len(parts) > 2 and parts[1].startswith("encoderblock_"):
            parts[2] = renames.get(parts[2], parts[2])
        out["/".join(parts)] = value
    return out


def _scan(arrays):
    """big_vision's scan=True: the per-block trees stacked along a leading depth axis."""
    out, stacked = {}, {}
    for key, value in arrays.items():
        match = re.match(r"^(params/Transformer)/encoderblock_(\d+)/(.*)$", key)
        if match:
            stacked.setdefault(match.group(3), {})[int(match.group(2))] = value
        else:
            out[key] = value
    for rest, blocks in stacked.items():
        out[f"params/Transformer/encoderblock/{rest}"] = np.stack(
            [blocks[i] for i in range(len(blocks))])
    return out


def _write_layout(tmp_path, model, layout):
    original = dict(np.load(checkpoints.save_npz(model, tmp_path / "original.npz")))
    if layout == "opt_target":
        arrays = {f"opt/target/{k}": v for k, v in original.items()}
        # Optimizer state next to the target: not parameters, and not even float.
        arrays["opt/state/step"] = np.array(1000, "int64")
        arrays["opt/state/param_states/cls/grad_ema"] = np.zeros((1, 1, 32), "float32")
    elif layout == "linen":
        arrays = _linen_names(original)
    else:
        big = dict(np.load(checkpoints.save_npz(model, tmp_path / "bv.npz",
                                                layout="big_vision")))
        arrays = _scan(big) if layout == "big_vision_scanned" else big
    return _save_dict(tmp_path / f"{layout}.npz", arrays), arrays


_LAYOUTS = {
    "opt_target": "original ViT (prefix 'opt/target/')",
    "linen": "original ViT (Linen module names)",
    "big_vision": "big_vision (prefix 'params/', Linen module names, zero [class] row added "
                  "to pos_embedding)",
    "big_vision_scanned": "big_vision (prefix 'params/', 2 scanned blocks, Linen module "
                          "names, zero [class] row added to pos_embedding)",
}


@pytest.mark.parametrize("layout", sorted(_LAYOUTS))
def test_layouts_load_to_the_same_model(tmp_path, layout):
    source = _model()
    path, arrays = _write_layout(tmp_path, source, layout)
    target = keras_vit.ViT("pico/4", image_size=16, num_classes=10)
    summary = checkpoints.load_npz(target, path)
    assert summary.layout == _LAYOUTS[layout]
    assert summary.ignored == (["opt/state/param_states/cls/grad_ema", "opt/state/step"]
                               if layout == "opt_target" else [])
    images = _images()
    # Exact for big_vision too: its [class] token enters the encoder as (cls + posemb[0]) + 0.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(source(images)),
                                  keras.ops.convert_to_numpy(target(images)))
    if layout.startswith("big_vision"):
        assert arrays["params/pos_embedding"].shape == (1, 16, 32)
        posemb = keras.ops.convert_to_numpy(target.get_layer("position_embedding").embeddings)
        np.testing.assert_array_equal(posemb[0, 0], np.zeros(32))
    if layout == "big_vision_scanned":
        assert arrays["params/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"].shape == (
            2, 32, 64)


def test_big_vision_gap_checkpoint(tmp_path):
    source = _model(pooling="gap")
    path = checkpoints.save_npz(source, tmp_path / "bv.npz", layout="big_vision")
    arrays = np.load(path)
    assert "params/cls" not in arrays and arrays["params/pos_embedding"].shape == (1, 16, 32)
    target = keras_vit.ViT("pico/4", image_size=16, num_classes=10, pooling="gap")
    checkpoints.load_npz(target, path)
    for a, b in zip(_weights(source), _weights(target)):
        np.testing.assert_array_equal(a, b)


def test_gap_checkpoint_into_token_model_names_the_pooling(tmp_path):
    path = checkpoints.save_npz(_model(pooling="gap"), tmp_path / "gap.npz")
    model = keras_vit.ViT("pico/4", image_size=16, num_classes=10)
    with pytest.raises(ValueError, match=r"key 'cls' \(expected shape \(1, 1, 32\)\) is "
                       r"missing from the file\. The file looks like pico/4 .*pooling 'gap'"):
        checkpoints.load_npz(model, path)


def test_token_checkpoint_into_gap_model_names_the_pooling(tmp_path):
    path = checkpoints.save_npz(_model(), tmp_path / "token.npz")
    model = keras_vit.ViT("pico/4", image_size=16, num_classes=10, pooling="gap")
    with pytest.raises(ValueError, match=r"unexpected key 'cls' of shape \(1, 1, 32\): the "
                       r"model expects no such key\. The file looks like pico/4 .*pooling "
                       r"'token'.*the model 'vit_pico4' is pico/4 .*pooling 'gap'"):
        checkpoints.load_npz(model, path)


# ------------------------------------------------------------------ resolution and head


def test_load_at_higher_resolution_resizes_position_embeddings(tmp_path):
    source = _model()
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    target = keras_vit.ViT("pico/4", image_size=24, num_classes=10)
    summary = checkpoints.load_npz(target, path)
    assert summary.resized == [(POSEMB, (1, 17, 32), (1, 37, 32))]
    assert POSEMB not in summary.loaded and len(summary.loaded) == 39
    old = keras.ops.convert_to_numpy(source.get_layer("position_embedding").embeddings)
    new = keras.ops.convert_to_numpy(target.get_layer("position_embedding").embeddings)
    np.testing.assert_array_equal(new, finetune.resize_position_embeddings(old, (6, 6)))
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    # Everything else, the head included (same class count), loads unchanged.
    for a, b in zip(_weights(source), _weights(target)):
        if a.shape != old.shape:
            np.testing.assert_array_equal(a, b)
    assert target(_images(24)).shape == (2, 10)


def test_load_at_non_square_resolution(tmp_path):
    path = checkpoints.save_npz(_model(), tmp_path / "m.npz")
    target = keras_vit.ViT("pico/4", image_size=(24, 16), num_classes=10, weights=path)
    assert target.get_layer("position_embedding").embeddings.shape == (1, 25, 32)


def _head(model):
    head = model.get_layer("head")
    return keras.ops.convert_to_numpy(head.kernel), keras.ops.convert_to_numpy(head.bias)


def test_other_class_count_gets_a_zero_head(tmp_path):
    source = _model(num_classes=10)
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    target = _model(num_classes=5, seed=1)
    summary = checkpoints.load_npz(target, path)
    kernel, bias = _head(target)
    np.testing.assert_array_equal(kernel, np.zeros((32, 5)))
    np.testing.assert_array_equal(bias, np.zeros(5))
    assert summary.dropped == ["head/kernel", "head/bias"]
    assert summary.zero_initialized == ["head/kernel", "head/bias"]
    for a, b in zip(_weights(source)[:-2], _weights(target)[:-2]):
        np.testing.assert_array_equal(a, b)
    assert summary.lines()[-2:] == ["Dropped head/kernel, head/bias.",
                                    "Zero-initialized head/kernel, head/bias."]


def test_pre_logits_the_model_lacks_are_dropped_with_the_head(tmp_path):
    # The 21k checkpoints have pre-logits; the paper fine-tunes with a single linear head.
    # Same class count, and the head's input width happens to match too: still dropped,
    # as it was trained on the pre-logits' output.
    path = checkpoints.save_npz(_model(representation_size=32), tmp_path / "m.npz")
    target = _model(seed=1)
    summary = checkpoints.load_npz(target, path)
    assert summary.dropped == ["head/kernel", "head/bias", "pre_logits/kernel",
                               "pre_logits/bias"]
    np.testing.assert_array_equal(_head(target)[0], np.zeros((32, 10)))


def test_pre_logits_are_kept_when_the_model_has_them(tmp_path):
    source = _model(representation_size=16)
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    target = _model(num_classes=3, representation_size=16, seed=1)
    summary = checkpoints.load_npz(target, path)
    assert summary.dropped == ["head/kernel", "head/bias"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(target.get_layer("pre_logits").kernel),
        keras.ops.convert_to_numpy(source.get_layer("pre_logits").kernel))
    np.testing.assert_array_equal(_head(target)[0], np.zeros((16, 3)))


def test_model_pre_logits_missing_from_the_file(tmp_path):
    path = checkpoints.save_npz(_model(), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"key 'pre_logits/kernel' \(expected shape "
                       r"\(32, 16\)\) is missing from the file"):
        checkpoints.load_npz(_model(representation_size=16), path)


def test_headless_model_drops_the_head(tmp_path):
    source = _model()
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    target = keras_vit.ViT("pico/4", image_size=16, include_top=False)
    summary = checkpoints.load_npz(target, path)
    assert summary.dropped == ["head/kernel", "head/bias"] and summary.zero_initialized == []
    features = keras.Model(source.input, source.get_layer("pooling").output)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(features(_images())),
                                  keras.ops.convert_to_numpy(target(_images())))


def test_file_without_head_gives_a_zero_head(tmp_path):
    headless = keras_vit.ViT("pico/4", image_size=16, include_top=False)
    path = checkpoints.save_npz(_randomize(headless), tmp_path / "m.npz")
    target = _model(seed=1)
    summary = checkpoints.load_npz(target, path)
    assert summary.dropped == [] and summary.zero_initialized == ["head/kernel", "head/bias"]
    np.testing.assert_array_equal(_head(target)[1], np.zeros(10))


# ------------------------------------------------------------------ bad files


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"Checkpoint file '.*nothing\.npz' does not exist"):
        checkpoints.load_npz(_model(), tmp_path / "nothing.npz")


def test_not_a_zip_file(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"'.*text\.npz' is not an \.npz file: it is not a "
                       r"zip archive \(a truncated download, or another format\)"):
        checkpoints.load_npz(_model(), path)


def test_truncated_file(tmp_path):
    path = checkpoints.save_npz(_model(), tmp_path / "m.npz")
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is not an \.npz file: it is not a zip archive"):
        checkpoints.load_npz(_model(), path)


def test_damaged_array(tmp_path):
    path = checkpoints.save_npz(_model(), tmp_path / "m.npz")
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("embedding/kernel.npy")
    data = bytearray(pathlib.Path(path).read_bytes())
    # np.savez stores members uncompressed: flip bytes inside the array's data.
    offset = info.header_offset + 30 + len(info.filename) + 200
    data[offset: offset + 8] = bytes(255 - b for b in data[offset: offset + 8])
    pathlib.Path(path).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"array 'embedding/kernel' cannot be read, the file is "
                       r"damaged or truncated \(Bad CRC-32"):
        checkpoints.load_npz(_model(), path)


def test_npy_file_is_not_an_npz(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3, "float32"))
    with pytest.raises(ValueError, match=r"is not an \.npz file: it is not a zip archive"):
        checkpoints.load_npz(_model(), path)


class _Trap:
    """Unpickling this creates the file `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_objects_are_refused_not_run(tmp_path):
    marker = tmp_path / "executed"
    arrays = dict(np.load(checkpoints.save_npz(_model(), tmp_path / "m.npz")))
    trap = np.empty(1, dtype=object)
    trap[0] = _Trap(str(marker))
    arrays["cls"] = trap
    path = _save_dict(tmp_path / "evil.npz", arrays)
    model = _model(seed=1)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"array 'cls' holds pickled Python objects \(dtype "
                       r"object\); refusing to unpickle it"):
        checkpoints.load_npz(model, path)
    assert not marker.exists()
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    # The trap is real: unpickling it does create the marker.
    pickle.loads(pickle.dumps(trap[0]))
    assert marker.exists()


def test_integer_array_is_refused(tmp_path):
    arrays = dict(np.load(checkpoints.save_npz(_model(), tmp_path / "m.npz")))
    arrays["embedding/bias"] = np.zeros(32, "int32")
    path = _save_dict(tmp_path / "int.npz", arrays)
    with pytest.raises(ValueError, match=r"key 'embedding/bias' has dtype int32, expected "
                       r"floating-point weights"):
        checkpoints.load_npz(_model(), path)


def test_missing_key(tmp_path):
    arrays = dict(np.load(checkpoints.save_npz(_model(), tmp_path / "m.npz")))
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"]
    path = _save_dict(tmp_path / "missing.npz", arrays)
    with pytest.raises(ValueError, match=r"key 'Transformer/encoderblock_1/MlpBlock_3/Dense_1/"
                       r"bias' \(expected shape \(32,\)\) is missing from the file\. The file "
                       r"looks like pico/4 \(width 32, depth 2, 4 heads, MLP 64\), pooling "
                       r"'token', 16x16 images, 10 classes"):
        checkpoints.load_npz(_model(), path)


def test_missing_key_of_another_layout_names_the_original_key(tmp_path):
    _, arrays = _write_layout(tmp_path, _model(), "big_vision")
    del arrays["params/Transformer/encoderblock_1/MlpBlock_0/Dense_1/bias"]
    path = _save_dict(tmp_path / "missing.npz", arrays)
    with pytest.raises(ValueError, match=r"key 'Transformer/encoderblock_1/MlpBlock_3/Dense_1/"
                       r"bias' \(named as in the original layout\) \(expected shape \(32,\)\) "
                       r"is missing from the file"):
        checkpoints.load_npz(_model(), path)


def test_unexpected_key(tmp_path):
    arrays = dict(np.load(checkpoints.save_npz(_model(), tmp_path / "m.npz")))
    arrays["Transformer/encoderblock_0/extra/kernel"] = np.zeros(3, "float32")
    path = _save_dict(tmp_path / "extra.npz", arrays)
    with pytest.raises(ValueError, match=r"unexpected key 'Transformer/encoderblock_0/extra/"
                       r"kernel' of shape \(3,\): the model expects no such key"):
        checkpoints.load_npz(_model(), path)


def test_deeper_checkpoint_is_an_unexpected_block(tmp_path):
    path = checkpoints.save_npz(_model("pico/4"), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"unexpected key 'Transformer/encoderblock_1/"
                       r"LayerNorm_0/scale' of shape \(32,\).*looks like pico/4 \(width 32, "
                       r"depth 2, 4 heads, MLP 64\).*the model 'vit_mu4' is mu/4 \(width 32, "
                       r"depth 1, 2 heads, MLP 128\)"):
        checkpoints.load_npz(_model("mu/4"), path)


def test_shape_mismatch_names_key_shapes_and_variant(tmp_path):
    path = checkpoints.save_npz(_model("pico/8"), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"key 'embedding/kernel' has shape \(8, 8, 3, 32\), "
                       r"expected \(4, 4, 3, 32\)\. The file looks like pico/8 \(width 32, "
                       r"depth 2, 4 heads, MLP 64\), pooling 'token', 16x16 images, 10 classes; "
                       r"the model 'vit_pico4' is pico/4"):
        checkpoints.load_npz(_model("pico/4"), path)


def test_shape_mismatch_in_a_scanned_file_names_the_stacked_key(tmp_path):
    _, arrays = _write_layout(tmp_path, _model(), "big_vision_scanned")
    key = "params/Transformer/encoderblock/MlpBlock_0/Dense_0/bias"
    arrays[key] = np.zeros((2, 65), "float32")
    path = _save_dict(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match=re.escape(f"key '{key}[0]' has shape (65,), "
                                                   f"expected (64,)")):
        checkpoints.load_npz(_model(), path)


def test_looks_like_a_paper_variant(tmp_path):
    # Only the arrays the description needs, in float16 to keep the file small: the error
    # (the first missing key) must recognize B/16 from the shapes alone.
    arrays = {"embedding/kernel": np.zeros((16, 16, 3, 768), "float16"),
              "cls": np.zeros((1, 1, 768), "float16"),
              POSEMB: np.zeros((1, 577, 768), "float16"),
              f"{BLOCK0}/MultiHeadDotProductAttention_1/query/kernel":
                  np.zeros((768, 12, 64), "float16"),
              f"{BLOCK0}/MlpBlock_3/Dense_0/kernel": np.zeros((768, 3072), "float16"),
              "head/kernel": np.zeros((768, 21843), "float16")}
    for i in range(1, 12):
        arrays[f"Transformer/encoderblock_{i}/LayerNorm_0/scale"] = np.ones(768, "float16")
    path = _save_dict(tmp_path / "b16.npz", arrays)
    with pytest.raises(ValueError, match=r"key 'embedding/bias' \(expected shape \(32,\)\) is "
                       r"missing from the file\. The file looks like B/16 \(width 768, depth 12, "
                       r"12 heads, MLP 3072\), pooling 'token', 384x384 images, 21843 classes"):
        checkpoints.load_npz(_model("mu/4"), path)


def test_unresizable_position_embeddings(tmp_path):
    arrays = dict(np.load(checkpoints.save_npz(_model(), tmp_path / "m.npz")))
    arrays[POSEMB] = np.zeros((1, 1 + 12, 32), "float32")  # 12 patches: no square grid.
    path = _save_dict(tmp_path / "grid.npz", arrays)
    with pytest.raises(ValueError, match=re.escape(
            f"key '{POSEMB}' of shape (1, 13, 32) cannot be resized to the model's (4, 4) "
            f"grid: Position embeddings of length 13 with 1 prefix tokens hold 12 grid "
            f"positions, which is not a square grid")):
        checkpoints.load_npz(_model(), path)


def test_failed_load_leaves_the_model_untouched(tmp_path):
    # The last block's last array is bad: everything before it was computed, nothing assigned.
    arrays = dict(np.load(checkpoints.save_npz(_model(seed=0), tmp_path / "m.npz")))
    arrays["Transformer/encoder_norm/bias"] = np.zeros(31, "float32")
    path = _save_dict(tmp_path / "bad.npz", arrays)
    model = _model(seed=1)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"key 'Transformer/encoder_norm/bias' has shape "
                       r"\(31,\), expected \(32,\)"):
        checkpoints.load_npz(model, path)
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_failed_assignment_is_rolled_back(tmp_path, monkeypatch):
    path = checkpoints.save_npz(_model(seed=0), tmp_path / "m.npz")
    model = _model(seed=1)
    before = _weights(model)
    real_assign = keras.Variable.assign
    head_bias = model.get_layer("head").bias
    assigned = []

    def assign(variable, value):
        if variable is head_bias and variable.path not in assigned:
            assigned.append(variable.path)
            raise RuntimeError("device out of memory")
        assigned.append(variable.path)
        return real_assign(variable, value)

    monkeypatch.setattr(keras.Variable, "assign", assign)
    with pytest.raises(RuntimeError, match="device out of memory"):
        checkpoints.load_npz(model, path)
    monkeypatch.undo()
    # The head's bias comes last: the 31 weights before it were assigned, then restored.
    assert assigned.index(head_bias.path) == 31 and len(assigned) == 63
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ save_npz and misuse


def test_save_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown layout 'timm': expected one of \['vit', "
                       r"'big_vision'\]"):
        checkpoints.save_npz(_model(), tmp_path / "m.npz", layout="timm")


def test_save_is_atomic_and_keeps_the_name(tmp_path):
    path = checkpoints.save_npz(_model(), tmp_path / "weights.bin")
    assert path == str(tmp_path / "weights.bin")
    assert os.listdir(tmp_path) == ["weights.bin"]


def test_not_a_vit_model(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")])
    with pytest.raises(ValueError, match=r"Model 'sequential.*' is not a ViT built by "
                       r"keras_vit\.ViT: the \.npz layout has no key for its weights "
                       r"\['sequential.*/dense/kernel', 'sequential.*/dense/bias'\]"):
        checkpoints.save_npz(model, tmp_path / "m.npz")


def test_inspect_npz(tmp_path):
    _, arrays = _write_layout(tmp_path, _model(representation_size=8), "big_vision_scanned")
    path = _save_dict(tmp_path / "scanned.npz", arrays)
    info = checkpoints.inspect_npz(path)
    assert info == dict(
        layout=_LAYOUTS["big_vision_scanned"],
        description="pico/4 (width 32, depth 2, 4 heads, MLP 64), pooling 'token', 16x16 "
                    "images, representation_size 8, 10 classes",
        variant="pico/4", patch_size=4, hidden_dim=32, depth=2, mlp_dim=64, num_heads=4,
        pooling="token", image_size=16, representation_size=8, num_classes=10)
    gap = checkpoints.inspect_npz(checkpoints.save_npz(
        keras_vit.ViT("pico/8", image_size=(16, 24), include_top=False, pooling="gap"),
        tmp_path / "gap.npz"))
    # A 2x3 grid is not square: the image size cannot be told from the file.
    assert (gap["variant"], gap["pooling"], gap["image_size"], gap["num_classes"]) == (
        "pico/8", "gap", None, None)


def test_load_into_mixed_precision_model(tmp_path):
    source = _model()
    path = checkpoints.save_npz(source, tmp_path / "m.npz")
    keras.config.set_dtype_policy("mixed_bfloat16")
    target = keras_vit.ViT("pico/4", image_size=16, num_classes=10, weights=path)
    # Variables stay float32 under mixed precision: the load is still exact.
    for a, b in zip(_weights(source), _weights(target)):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ hybrid (ResNet + ViT) models


@pytest.fixture
def _r5(monkeypatch):
    # A one-unit-per-stage ResNet of the reference width 64, registered as "R5" so that
    # "R5+pico/16" parses and a file can name its variant: 32x32 images give a 2x2 grid.
    monkeypatch.setitem(variants.HYBRID_STAGES, ("R5", 16), (1, 1, 1))


def _hybrid(image_size=32, num_classes=10, seed=0, **kwargs):
    return _model("R5+pico/16", image_size=image_size, num_classes=num_classes, seed=seed,
                  **kwargs)


def test_hybrid_layout_keys_and_shapes(tmp_path, _r5):
    arrays = dict(np.load(checkpoints.save_npz(_hybrid(), tmp_path / "h.npz")))
    resnet = {k: v.shape for k, v in arrays.items()
              if k.startswith(("conv_root", "gn_root", "block"))}
    expected = {"conv_root/kernel": (7, 7, 3, 64), "gn_root/scale": (64,), "gn_root/bias": (64,)}
    for s, (width, inputs) in enumerate([(64, 64), (128, 256), (256, 512)], start=1):
        unit = f"block{s}/unit1"
        expected.update({
            f"{unit}/conv1/kernel": (1, 1, inputs, width),
            f"{unit}/conv2/kernel": (3, 3, width, width),
            f"{unit}/conv3/kernel": (1, 1, width, 4 * width),
            f"{unit}/conv_proj/kernel": (1, 1, inputs, 4 * width),
        })
        for norm, channels in (("gn1", width), ("gn2", width), ("gn3", 4 * width),
                               ("gn_proj", 4 * width)):
            expected[f"{unit}/{norm}/scale"] = expected[f"{unit}/{norm}/bias"] = (channels,)
    assert resnet == expected
    # The transformer embeds 1x1 "patches" of the 1024-channel stride-16 map.
    assert arrays["embedding/kernel"].shape == (1, 1, 1024, 32)
    assert arrays[POSEMB].shape == (1, 5, 32)


def test_hybrid_round_trip_is_exact(tmp_path, _r5):
    source = _hybrid()
    path = checkpoints.save_npz(source, tmp_path / "h.npz")
    target = keras_vit.ViT("R5+pico/16", image_size=32, num_classes=10, weights=path)
    for a, b in zip(_weights(source), _weights(target)):
        np.testing.assert_array_equal(a, b)
    images = _images(32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(source(images)),
                                  keras.ops.convert_to_numpy(target(images)))
    first = dict(np.load(path))
    again = dict(np.load(checkpoints.save_npz(target, tmp_path / "again.npz")))
    assert sorted(again) == sorted(first)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])


def test_hybrid_group_norms_stored_with_leading_ones(tmp_path, _r5):
    # The released hybrid files keep GroupNorm scales and biases as (1, 1, 1, C).
    source = _hybrid()
    arrays = dict(np.load(checkpoints.save_npz(source, tmp_path / "h.npz")))
    norms = [k for k in arrays if re.search(r"(^gn_root|/gn(\d|_proj))/(scale|bias)$", k)]
    assert len(norms) == 2 + 3 * 8
    for key in norms:
        arrays[key] = arrays[key].reshape(1, 1, 1, -1)
    target = _hybrid(seed=1)
    summary = checkpoints.load_npz(target, _save_dict(tmp_path / "released.npz", arrays))
    assert summary.layout == "original ViT (26 GroupNorm arrays of shape (1, 1, 1, C) read as (C,))"
    for a, b in zip(_weights(source), _weights(target)):
        np.testing.assert_array_equal(a, b)


def test_hybrid_at_higher_resolution(tmp_path, _r5):
    source = _hybrid()
    path = checkpoints.save_npz(source, tmp_path / "h.npz")
    target = keras_vit.ViT("R5+pico/16", image_size=64, num_classes=10)
    summary = checkpoints.load_npz(target, path)
    assert summary.resized == [(POSEMB, (1, 5, 32), (1, 17, 32))]
    posemb = keras.ops.convert_to_numpy(source.get_layer("position_embedding").embeddings)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(target.get_layer("position_embedding").embeddings),
        finetune.resize_position_embeddings(posemb, (4, 4)), atol=1e-6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(target.get_layer("block3_unit1").conv2.kernel),
        keras.ops.convert_to_numpy(source.get_layer("block3_unit1").conv2.kernel))


def test_hybrid_checkpoint_into_plain_model_names_both(tmp_path, _r5):
    path = checkpoints.save_npz(_hybrid(), tmp_path / "h.npz")
    with pytest.raises(ValueError, match=(
            r"unexpected key 'conv_root/kernel' of shape \(7, 7, 3, 64\): the model "
            r"expects no such key\. The file looks like R5\+pico/16 \(width 32, depth 2, 4 "
            r"heads, MLP 64, on a ResNet of units \[1, 1, 1\] and root width 64\), pooling "
            r"'token', 32x32 images, 10 classes; the model 'vit_pico16' is pico/16 \(width 32, "
            r"depth 2, 4 heads, MLP 64\), pooling")):
        checkpoints.load_npz(keras_vit.ViT("pico/16", image_size=32, num_classes=10), path)


def test_inspect_hybrid_npz(tmp_path, _r5):
    info = checkpoints.inspect_npz(checkpoints.save_npz(_hybrid(), tmp_path / "h.npz"))
    assert (info["variant"], info["patch_size"], info["image_size"], info["resnet_units"],
            info["resnet_width"]) == ("R5+pico/16", 1, 32, (1, 1, 1), 64)
    # A ResNet with no name in variants.HYBRID_STAGES: the arguments, but no variant string.
    custom = dataclasses.replace(variants.parse_variant("pico/1"), resnet_units=(1, 1),
                                 resnet_width=32)
    info = checkpoints.inspect_npz(checkpoints.save_npz(
        keras_vit.ViT(custom, image_size=48, num_classes=3), tmp_path / "custom.npz"))
    assert (info["variant"], info["image_size"], info["resnet_units"], info["resnet_width"],
            info["num_classes"]) == (None, 48, (1, 1), 32, 3)
