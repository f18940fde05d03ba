"""int8 weights (`model.quantize("int8")`): every variant, dynamic image size, saving and reloading.

Keras quantizes the leaf layers that implement `quantize`: here the Dense layers (each block's
`qkv`, `attention_output`, `mlp_dense_1`, `mlp_dense_2`, the head, a pre-logits layer), to int8
kernels with one float scale per output channel; their inputs are quantized per token at each
call. Convolutions (the patch embedding, a hybrid's ResNet), LayerNorms and GroupNorms and the
embeddings stay float and are only warned about.
"""

import dataclasses
import gc
import warnings

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import model_layers, presets, variants
from keras_vit.layers import TransformerBlock

BLOCK_DENSES = ("qkv", "attention_output", "mlp_dense_1", "mlp_dense_2")


@pytest.fixture(autouse=True, scope="module")
def _frozen_heap():
    # Dense.quantize deletes its float kernel with a full gc.collect(), about 0.3 s each in a
    # test process that has imported a backend: freezing the objects that exist by now keeps
    # them out of those collections (the new ones are still collected).
    gc.freeze()
    yield
    gc.unfreeze()


def _variants():
    """Every released checkpoint's variant (a name, or a family's `VariantSpec`: DINOv2, CLIP,
    SigLIP), each other size at /16, each other hybrid stem; sorted, one of each spec."""
    found = [presets.get(name).variant for name in presets.names()]
    specs = [variants.parse_variant(variant) for variant in found]
    found += [f"{size}/16" for size in variants.SIZES if size not in {s.size for s in specs}]
    found += [
        f"{resnet}+Ti/{stride}"
        for (resnet, stride), units in variants.HYBRID_STAGES.items()
        if units not in {s.resnet_units for s in specs}
    ]
    unique = {}
    for variant in found:
        unique.setdefault(repr(variants.parse_variant(variant)), variant)
    return sorted(unique.values(), key=_variant_id)


def _variant_id(variant):
    """"B/16", or a family's spec by its name and options: "S/14-layer_scale-registers"."""
    if isinstance(variant, str):
        return variant
    options = [variant.activation if variant.activation != "gelu" else None,
               "layer_scale" if variant.layer_scale is not None else None,
               "registers" if variant.num_registers else None,
               "pre_norm" if variant.pre_norm else None]
    return "-".join([variant.name] + [o for o in options if o])


VARIANTS = _variants()


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _random_head(model, seed=0):
    """A non-zero head (the zero-initialized one makes all logits 0, quantized or not)."""
    head = model_layers.find_layer(model, "head")
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(head.kernel.shape[0])
    head.kernel.assign(rng.normal(scale=scale, size=head.kernel.shape).astype(head.kernel.dtype))
    head.bias.assign(rng.normal(scale=0.1, size=head.bias.shape).astype(head.bias.dtype))


def _quantize(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the float layers' "no quantize method" warnings
        model.quantize("int8")


def _kernels(model):
    """{path: dtype} of the model's kernels, e.g. 'encoder_block_0/qkv/kernel': 'int8'."""
    return {v.path: keras.backend.standardize_dtype(v.dtype) for v in model.weights
            if v.path.endswith("/kernel")}


def _assert_int8_denses(model, depth):
    kernels = _kernels(model)
    expected = {f"encoder_block_{i}/{name}/kernel"
                for i in range(depth) for name in BLOCK_DENSES} | {"head/kernel"}
    assert {path for path, dtype in kernels.items() if dtype == "int8"} == expected
    # Everything else (the patch embedding's and a ResNet's convolutions) stays float.
    assert {dtype for path, dtype in kernels.items() if path not in expected} == {"float32"}
    scales = [v.path for v in model.weights if v.path.endswith("/kernel_scale")]
    assert sorted(scales) == sorted(path + "_scale" for path in expected)


def _assert_close_to_float(quantized, reference):
    # int8 weights (per output channel) and activations (per token): each matmul is off by
    # about 1% of its output's scale. Relative to the largest logit, the measured error of these
    # one-block models is 1-4%.
    scale = np.abs(reference).max()
    assert scale > 0.1
    error = np.abs(quantized - reference).max()
    assert np.isfinite(quantized).all()
    assert 0 < error <= 0.1 * scale, (error, scale)


def test_the_variant_list_covers_every_size_and_hybrid_stem():
    specs = [variants.parse_variant(name) for name in VARIANTS]
    assert set(variants.SIZES) <= {s.size for s in specs}  # and the families' own (g, So400m)
    assert {s.resnet_units for s in specs if s.is_hybrid} == set(variants.HYBRID_STAGES.values())
    assert {"B/16", "L/16", "H/14", "R50+B/16", "R26+S/32"} <= set(map(_variant_id, VARIANTS))


def _cheap_spec(variant):
    """`variant` one block deep; a hybrid's ResNet one unit per stage and 32 filters wide.

    The quantized layers are each block's four Denses and the head, at the variant's real
    widths, heads and MLP width: more blocks are copies of the same shapes. A hybrid's ResNet
    stays float (`test_quantize_leaves_the_other_layers_float`) and keeps its stride here (as
    many stages); its real width and depth would only cost time (building R50's stem takes
    longer than all plain variants together on JAX).
    """
    spec = dataclasses.replace(variants.parse_variant(variant), depth=1)
    if spec.is_hybrid:
        spec = dataclasses.replace(spec, resnet_units=(1,) * len(spec.resnet_units),
                                   resnet_width=32)
    return spec


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_id)
def test_every_variant_quantizes_to_int8(variant):
    """At the smallest image the variant takes (one patch, or one stride of a hybrid)."""
    spec, real = _cheap_spec(variant), variants.parse_variant(variant)
    shapes = ("hidden_dim", "mlp_dim", "num_heads", "patch_size", "stride")
    assert [getattr(spec, a) for a in shapes] == [getattr(real, a) for a in shapes]
    model = keras_vit.ViT(spec, image_size=spec.stride, num_classes=10)
    _random_head(model)
    images = _images((2, spec.stride, spec.stride, 3))
    reference = _numpy(model(images))
    _quantize(model)
    _assert_int8_denses(model, depth=1)
    logits = _numpy(model(images))
    assert logits.shape == (2, 10)
    _assert_close_to_float(logits, reference)


def test_dynamic_image_size_model_quantizes_and_runs_at_any_size():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=5, dynamic_image_size=True)
    _random_head(model)
    shapes = [(16, 16), (24, 40)]
    references = [_numpy(model(_images((2,) + shape + (3,)))) for shape in shapes]
    _quantize(model)
    _assert_int8_denses(model, depth=1)
    for shape, reference in zip(shapes, references):
        logits = _numpy(model.predict(_images((2,) + shape + (3,)), verbose=0))
        _assert_close_to_float(logits, reference)


TINY_HYBRID = dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                                  resnet_width=32)


@pytest.mark.parametrize("kwargs,policy", [
    (dict(variant="mu/4", image_size=16, representation_size=8), "float32"),
    (dict(variant="mu/4", image_size=16), "mixed_bfloat16"),
    (dict(variant=TINY_HYBRID, image_size=32), "float32"),
    (dict(variant="mu/4", image_size=16, dynamic_image_size=True), "float32"),
], ids=["pre_logits", "mixed_bfloat16", "hybrid", "dynamic_image_size"])
def test_saved_quantized_model_reloads_with_equal_outputs(tmp_path, kwargs, policy):
    keras.config.set_dtype_policy(policy)
    model = keras_vit.ViT(num_classes=5, **kwargs)
    keras.config.set_dtype_policy("float32")
    _random_head(model)
    _quantize(model)
    path = str(tmp_path / "int8.keras")
    model.save(path)

    reloaded = keras.saving.load_model(path)
    assert _kernels(reloaded) == _kernels(model)
    assert "int8" in _kernels(reloaded).values()
    for block in model_layers.transformer_blocks(reloaded):
        for name in BLOCK_DENSES:
            assert getattr(block, name).quantization_mode == "int8"
            compute = "bfloat16" if policy == "mixed_bfloat16" else "float32"
            assert getattr(block, name).compute_dtype == compute
        assert block.attention_norm.quantization_mode is None
    for original, loaded in zip(model.weights, reloaded.weights):
        assert original.path == loaded.path
        np.testing.assert_array_equal(_numpy(loaded), _numpy(original), err_msg=original.path)
    images = _images((3, 16, 16, 3) if kwargs["image_size"] == 16 else (3, 32, 32, 3))
    np.testing.assert_allclose(_numpy(reloaded(images)).astype("float32"),
                               _numpy(model(images)).astype("float32"), rtol=0, atol=1e-6)
    # A reloaded model saves again as it was loaded.
    again = str(tmp_path / "again.keras")
    reloaded.save(again)
    assert _kernels(keras.saving.load_model(again)) == _kernels(model)


def test_block_config_records_its_quantized_sublayers():
    block = TransformerBlock(num_heads=2, mlp_dim=16, name="block")
    tokens = _images((2, 5, 8))
    block(tokens)
    float_config = block.get_config()
    for name in ("qkv", "mlp_dense_2"):
        getattr(block, name).quantize("int8")
    config = block.get_config()
    # Only the dtype changes: the quantized sublayers' policies, by name; the rest as before.
    assert {k: v for k, v in config.items() if k != "dtype"} == {
        k: v for k, v in float_config.items() if k != "dtype"}
    policy = keras.dtype_policies.deserialize(config["dtype"])
    assert isinstance(policy, keras.dtype_policies.DTypePolicyMap)
    assert policy.default_policy.name == "float32"
    assert {name: policy[name].name for name in policy} == {
        "qkv": "int8_from_float32", "mlp_dense_2": "int8_from_float32"}

    # Under another name, and so another path, the copy builds the same sublayers.
    copy = TransformerBlock.from_config({**config, "name": "renamed"})
    copy.build((None, 5, 8))
    assert [(v.path.split("/", 1)[1], v.dtype) for v in copy.weights] == [
        (v.path.split("/", 1)[1], v.dtype) for v in block.weights]
    assert copy.compute_dtype == "float32"
    copy.set_weights(block.get_weights())
    np.testing.assert_array_equal(_numpy(copy(tokens)), _numpy(block(tokens)))
    assert copy.get_config()["dtype"] == config["dtype"]


def test_quantize_leaves_the_other_layers_float():
    """What `model.quantize("int8")` leaves float, as Keras reports it; a Dense-only filter
    quantizes the same layers without the warnings."""
    model = keras_vit.ViT(TINY_HYBRID, image_size=32, num_classes=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.quantize("int8")
    skipped = {str(w.message).split()[1] for w in caught
               if "does not have a `quantize` method" in str(w.message)}
    assert skipped == {
        "InputLayer", "StdConv2D", "GroupNormalization", "ReLU", "MaxPooling2D", "Conv2D",
        "ClassToken", "PositionEmbedding", "Dropout", "LayerNormalization", "TokenPooling",
    }
    quiet = keras_vit.ViT(TINY_HYBRID, image_size=32, num_classes=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quantize("int8", filters=lambda layer: isinstance(layer, keras.layers.Dense))
    assert [str(w.message) for w in caught if "quantize" in str(w.message)] == []
    assert _kernels(quiet) == _kernels(model)
