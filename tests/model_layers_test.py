import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import finetune, model_layers
from keras_vit.layers import ClassToken, PatchEmbedding, PositionEmbedding, TransformerBlock


def test_roles_and_head():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=7, representation_size=5)
    assert model_layers.find_layer(model, "head").units == 7
    assert model_layers.num_classes(model) == 7
    assert model_layers.representation_size(model) == 5
    assert model_layers.find_layer(model, "conv_root") is None
    assert [b.name for b in model_layers.transformer_blocks(model)] == ["encoder_block_0"]
    with pytest.raises(ValueError, match="Unknown role 'logits': expected one of"):
        model_layers.find_layer(model, "logits")
    headless = keras_vit.ViT("mu/4", image_size=16, include_top=False)
    assert model_layers.num_classes(headless) is None


def test_head_layer_is_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        head = model_layers.head_layer(3)
    finally:
        keras.config.set_dtype_policy(previous)
    assert head.dtype_policy.compute_dtype == "float32"
    assert model_layers.head_layer(3).dtype_policy.name == previous.name


def test_chain_rejects_a_layer_called_twice():
    images = keras.Input((8, 8, 3), name="images")
    x = PatchEmbedding(4, 8, name="patch_embedding")(images)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding((2, 2), name="position_embedding")(x)
    block = TransformerBlock(2, 16, name="encoder_block_0")
    x = block(x)
    x = keras.layers.Identity(name="between")(x)
    x = block(x)  # shared weights: not the chain keras_vit.ViT builds
    x = keras.layers.LayerNormalization(name="encoder_norm")(x)
    model = keras.Model(images, x, name="reused")
    with pytest.raises(ValueError, match=r"Model 'reused' is not a keras_vit ViT: layer "
                                         r"'encoder_norm' does not take the output of 'between'"):
        model_layers.layer_chain(model)
    chain = model_layers.layer_chain(keras_vit.ViT("mu/4", image_size=16, num_classes=2))
    assert [l.name for l in chain][:4] == ["images", "patch_embedding", "class_token",
                                           "position_embedding"]


@pytest.mark.parametrize("kwargs, plan", [
    (dict(source_classes=10, target_classes=10), "keep"),
    (dict(source_classes=10, target_classes=10, source_pre_logits=8, target_pre_logits=8), "keep"),
    (dict(source_classes=10, target_classes=10, source_pre_logits=8), "zero_init"),
    (dict(source_classes=21843, target_classes=10), "zero_init"),
    (dict(source_classes=None, target_classes=10), "zero_init"),
    (dict(source_classes=10, target_classes=None), "none"),
])
def test_head_plan(kwargs, plan):
    assert finetune.head_plan(**kwargs) == plan


def test_model_head_plan_decides_what_weights_loads(tmp_path):
    source = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    rng = np.random.default_rng(0)
    source.set_weights([rng.normal(size=w.shape).astype("float32") for w in source.weights])
    path = str(tmp_path / "source.keras")
    source.save(path)
    same = keras_vit.ViT("mu/4", image_size=16, num_classes=10, weights=path)
    assert finetune.model_head_plan(source, same) == "keep"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(same.get_layer("head").kernel),
                                  keras.ops.convert_to_numpy(source.get_layer("head").kernel))
    other = keras_vit.ViT("mu/4", image_size=16, num_classes=3, weights=path)
    assert finetune.model_head_plan(source, other) == "zero_init"
    assert float(np.abs(keras.ops.convert_to_numpy(other.get_layer("head").kernel)).max()) == 0.0


def test_call_layer_calls_the_chain_as_vit_does():
    # The two calls with more than the previous output: a dynamic-size PositionEmbedding takes
    # the images, the last block of a "token"-pooling model computes the [class] token alone.
    images = keras.Input((None, None, 3))
    tokens = keras.Input((None, 32))
    dynamic = PositionEmbedding((2, 2), stride=4)
    out = model_layers.call_layer(dynamic, tokens, images)
    assert dynamic.input[1] is images and tuple(out.shape) == (None, None, 32)
    fixed = keras.Input((5, 32))
    block = TransformerBlock(2, 64)
    assert tuple(model_layers.call_layer(block, fixed, images, first_token_only=True).shape) == (
        None, 1, 32)
    assert tuple(model_layers.call_layer(TransformerBlock(2, 64), fixed, images).shape) == (
        None, 5, 32)
    assert [model_layers.computes_class_token_only(p, i, 3)
            for p in ("token", "gap") for i in range(3)] == [False, False, True] + [False] * 3
    assert model_layers.block_name(3) == "encoder_block_3"


@pytest.mark.parametrize("pooling,options,expected,registers", [
    ("token", {}, (True, False, 0), slice(1, 1)),
    ("gap", dict(num_registers=2), (False, False, 2), slice(0, 2)),
    ("distilled", dict(distillation_token=True, num_registers=3), (True, True, 3), slice(2, 5)),
    ("map", dict(num_registers=1), (False, False, 1), slice(0, 1)),
])
def test_token_prefix_of_each_family(pooling, options, expected, registers):
    import dataclasses

    spec = dataclasses.replace(keras_vit.variants.parse_variant("mu/4"), **options)
    model = keras_vit.ViT(spec, image_size=8, num_classes=0, pooling=pooling)
    prefix = model_layers.token_prefix(model)
    assert (prefix.class_token, prefix.distillation_token, prefix.num_registers) == expected
    assert prefix.registers == registers
    # The patch tokens start after the prefix: a 2x2 grid of 8-pixel images.
    tokens = model.get_layer("encoder_block_0").input
    assert tokens.shape[1] == prefix.num_tokens + 4


def test_token_prefix_needs_a_position_embedding():
    images = keras.Input((8, 8, 3))
    model = keras.Model(images, PatchEmbedding(4, 8)(images), name="bare")
    with pytest.raises(ValueError, match="Model 'bare' has no PositionEmbedding layer"):
        model_layers.token_prefix(model)
