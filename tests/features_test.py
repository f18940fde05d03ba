"""Tests of keras_vit.dense_features: each family's tokens apart, the patch tokens on the grid."""

import dataclasses

import keras
import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from keras_vit import explain, model_layers, variants

# mu/4 with two blocks, so that a block that is not the last is checked too.
SPEC = dataclasses.replace(variants.parse_variant("mu/4"), depth=2)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _layer_norm(x, layer):
    """float64 NumPy LayerNorm with `layer`'s scale, offset and epsilon."""
    x = x.astype("float64")
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + layer.epsilon) * to_numpy(layer.gamma)
            + to_numpy(layer.beta))


def _randomize(layer, seed=0, scale=0.5):
    """Random weights for `layer`: zero or near-constant inits would hide a token mix-up."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype("float32"))


def _model(spec=SPEC, **kwargs):
    model = keras_vit.ViT(spec, image_size=16, num_classes=0, **kwargs)
    for seed, role in enumerate(
            ("register_tokens", "encoder_norm", "class_token", "distillation_token")):
        layer = model_layers.find_layer(model, role)
        if layer is not None:
            _randomize(layer, seed)
    return model


def test_gap_model_patch_maps_average_to_its_pooled_output():
    model = _model(pooling="gap")
    images = _images((3, 16, 16, 3))
    features = keras_vit.dense_features(model, images)
    assert features["blocks"] == [1]
    assert features["patch_tokens"][0].shape == (3, 4, 4, 32)  # (16 / 4)^2 patches of width 32
    assert features["class_token"] is None and features["distillation_token"] is None
    assert features["registers"] is None
    np.testing.assert_allclose(features["patch_tokens"][0].mean(axis=(1, 2)),
                               to_numpy(model(images)), rtol=1e-5, atol=1e-5)


def test_token_model_class_token_of_the_last_block_is_its_output():
    # The model's own last block computes the [class] token alone; dense_features asks it for
    # all tokens, and the [class] token must come out the same.
    model = _model()
    images = _images((2, 16, 16, 3))
    features = keras_vit.dense_features(model, images)
    np.testing.assert_allclose(features["class_token"][0], to_numpy(model(images)),
                               rtol=1e-5, atol=1e-5)


def test_patch_maps_and_prefix_tokens_are_the_rows_of_the_sequence():
    # [class, registers x4, 16 patches]: patch (i, j) of the 4x4 grid is token 5 + 4 i + j.
    model = _model(dataclasses.replace(SPEC, num_registers=4, layer_scale=1e-5))
    images = _images((2, 16, 16, 3))
    tokens = explain.intermediate_outputs(model, images, attention=False)["tokens"]
    raw = keras_vit.dense_features(model, images, blocks=[0, -1], norm=False)
    normed = keras_vit.dense_features(model, images, blocks=[0, -1])
    assert raw["blocks"] == normed["blocks"] == [0, 1]
    norm = model.get_layer("encoder_norm")
    for k, block_tokens in enumerate(tokens):
        assert raw["patch_tokens"][k].shape == (2, 4, 4, 32)
        for i, j in [(0, 0), (0, 3), (2, 1), (3, 3)]:
            np.testing.assert_array_equal(raw["patch_tokens"][k][:, i, j],
                                          block_tokens[:, 5 + 4 * i + j])
        np.testing.assert_array_equal(raw["class_token"][k], block_tokens[:, 0])
        np.testing.assert_array_equal(raw["registers"][k], block_tokens[:, 1:5])
        assert raw["distillation_token"] is None
        # norm=True: the model's encoder_norm on every token.
        expected = _layer_norm(block_tokens, norm)
        np.testing.assert_allclose(normed["class_token"][k], expected[:, 0], atol=1e-5)
        np.testing.assert_allclose(normed["registers"][k], expected[:, 1:5], atol=1e-5)
        np.testing.assert_allclose(normed["patch_tokens"][k],
                                   expected[:, 5:].reshape(2, 4, 4, 32), atol=1e-5)
    # The registers differ from one another (random tokens), so a shifted slice would show.
    assert np.abs(raw["registers"][0][:, 0] - raw["registers"][0][:, 1]).max() > 0.1
    np.testing.assert_allclose(normed["class_token"][1], to_numpy(model(images)),
                               rtol=1e-5, atol=1e-5)


def test_distilled_model_class_and_distillation_tokens_are_its_output():
    spec = dataclasses.replace(SPEC, distillation_token=True, num_registers=2)
    model = _model(spec, pooling="distilled")
    images = _images((2, 16, 16, 3))
    features = keras_vit.dense_features(model, images)
    pair = np.concatenate([features["class_token"][0], features["distillation_token"][0]], -1)
    np.testing.assert_allclose(pair, to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    # [class, distillation, registers x2, patches].
    tokens = explain.intermediate_outputs(model, images, blocks=-1, attention=False)["tokens"][0]
    raw = keras_vit.dense_features(model, images, norm=False)
    np.testing.assert_array_equal(raw["distillation_token"][0], tokens[:, 1])
    np.testing.assert_array_equal(raw["registers"][0], tokens[:, 2:4])
    np.testing.assert_array_equal(raw["patch_tokens"][0][:, 1, 2], tokens[:, 4 + 4 + 2])


def test_map_model_probe_over_registers_and_patches_is_its_output():
    # SigLIP-like: no [class] token; the MAP head reads every normed token.
    model = _model(dataclasses.replace(SPEC, num_registers=2), pooling="map")
    images = _images((2, 16, 16, 3))
    features = keras_vit.dense_features(model, images)
    assert features["class_token"] is None and features["registers"][0].shape == (2, 2, 32)
    sequence = np.concatenate(
        [features["registers"][0], features["patch_tokens"][0].reshape(2, 16, 32)], axis=1)
    pooled = to_numpy(model.get_layer("pooling")(sequence))
    np.testing.assert_allclose(pooled, to_numpy(model(images)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,grid", [((16, 16), (4, 4)), ((8, 24), (2, 6))])
def test_dynamic_size_model_reads_the_grid_from_the_images(size, grid):
    model = keras_vit.ViT(SPEC, image_size=16, num_classes=0, pooling="gap",
                          dynamic_image_size=True)
    images = _images((2, *size, 3))
    features = keras_vit.dense_features(model, images)
    assert features["patch_tokens"][0].shape == (2, *grid, 32)
    np.testing.assert_allclose(features["patch_tokens"][0].mean(axis=(1, 2)),
                               to_numpy(model(images)), rtol=1e-5, atol=1e-5)
    tokens = explain.intermediate_outputs(model, images, attention=False)["tokens"][-1]
    raw = keras_vit.dense_features(model, images, norm=False)
    np.testing.assert_array_equal(raw["patch_tokens"][0][:, grid[0] - 1, 1],
                                  tokens[:, (grid[0] - 1) * grid[1] + 1])


def test_hybrid_patch_maps_are_on_the_feature_grid():
    # A ResNet stem of stride 16: 32-pixel images give a 2x2 grid.
    spec = dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                               resnet_width=32)
    model = keras_vit.ViT(spec, image_size=32, num_classes=0)
    images = _images((2, 32, 32, 3))
    features = keras_vit.dense_features(model, images)
    assert features["patch_tokens"][0].shape == (2, 2, 2, 32)
    np.testing.assert_allclose(features["class_token"][0], to_numpy(model(images)),
                               rtol=1e-5, atol=1e-5)


def test_mixed_precision_features_are_float32_and_close_to_the_output():
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32
    model = _model()
    images = _images((2, 16, 16, 3))
    features = keras_vit.dense_features(model, images)
    assert features["patch_tokens"][0].dtype == features["class_token"][0].dtype == "float32"
    output = to_numpy(model(images)).astype("float32")
    np.testing.assert_allclose(features["class_token"][0], output, rtol=2e-2, atol=2e-2)


def test_bad_blocks_and_images_are_refused():
    model = _model()
    with pytest.raises(ValueError, match=r"Block index 2 is out of range: .* 2 "
                                         r"TransformerBlock\(s\), valid indices are 0..1"):
        keras_vit.dense_features(model, _images((1, 16, 16, 3)), blocks=2)
    with pytest.raises(ValueError, match=r"Images of shape \(1, 8, 8, 3\) do not fit model"):
        keras_vit.dense_features(model, _images((1, 8, 8, 3)))
    dynamic = keras_vit.ViT(SPEC, image_size=16, num_classes=0, dynamic_image_size=True)
    with pytest.raises(ValueError, match="Image height 10 .* is not divisible by patch_size 4"):
        keras_vit.dense_features(dynamic, _images((1, 10, 16, 3)))


def test_dense_features_is_exported():
    from keras_vit import features

    assert keras_vit.dense_features is features.dense_features
    assert "dense_features" in keras_vit.__all__ and features.__all__ == ["dense_features"]
