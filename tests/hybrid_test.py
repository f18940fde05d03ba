"""Hybrid ViTs: tokens from a ResNet feature map (`keras_vit.ViT("R50+B/16")`)."""

import dataclasses

import keras
import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from keras_vit import finetune, variants

# A narrow 3-stage hybrid (stride 16) for tests: root width 32, one unit per
# stage, on the mu transformer; 32x32 images give a 2x2 token grid.
TINY = dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                           resnet_width=32)
TINY32 = dataclasses.replace(TINY, resnet_units=(1, 1, 1, 1))  # stride 32

# Parameter counts with 1000 classes, 3 channels, token pooling, no
# pre-logits. R50+B/16 at 384 is the reference implementation's (vit_jax's
# R50+ViT-B_16 and timm's vit_base_r50_s16_384: 98,950,952); the others come
# from `_formula` below, which counts from the architecture's description
# (timm's vit_small_r26_s32_224, the same architecture, also lists 36.4M).
PINNED_PARAMS = {
    ("R50+B/16", 384): 98_950_952,
    ("R50+B/32", 224): 110_945_832,
    ("R26+S/32", 224): 36_431_912,
}


def _resnet_params(units, width, channels=3):
    total = 7 * 7 * channels * width + 2 * width  # conv_root, gn_root
    cin = width
    for stage, num_units in enumerate(units):
        f = width * 2 ** stage
        for unit in range(num_units):
            total += cin * f + 9 * f * f + f * 4 * f  # conv1, conv2, conv3
            total += 2 * (f + f + 4 * f)  # gn1, gn2, gn3
            if unit == 0:  # shape changes: conv_proj + gn_proj
                total += cin * 4 * f + 2 * 4 * f
            cin = 4 * f
    return total, cin


def _formula(spec, image_size, num_classes=1000):
    resnet, channels = _resnet_params(spec.resnet_units, spec.resnet_width)
    d, m = spec.hidden_dim, spec.mlp_dim
    tokens = (image_size // spec.stride) ** 2 + 1
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    return (resnet + channels * d + d + d + tokens * d + spec.depth * block + 2 * d
            + d * num_classes + num_classes)


def _randomize(model, scale=0.2, seed=1):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, scale, w.shape).astype("float32"))


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("variant,image_size", sorted(PINNED_PARAMS))
def test_parameter_counts(variant, image_size):
    # Built symbolically, never called: ~100M parameters, no forward pass.
    # Counting needs the variables' shapes only: created uninitialized (a fraction of a second,
    # not seconds), then forgotten by clear_session, so that no later scope initializes them.
    with keras.StatelessScope(initialize_variables=False):
        model = keras_vit.ViT(variant, image_size=image_size)
    assert model.count_params() == PINNED_PARAMS[(variant, image_size)]
    assert model.count_params() == _formula(variants.parse_variant(variant), image_size)
    keras.backend.clear_session()


def test_r50_b16_layout():
    # Names and shapes only: uninitialized variables (see test_parameter_counts).
    with keras.StatelessScope(initialize_variables=False):
        model = keras_vit.ViT("R50+B/16", image_size=64, num_classes=10)
    assert model.name == "vit_r50_b16"
    names = [layer.name for layer in model.layers]
    units = [n for n in names if n.startswith("block")]
    assert units == ([f"block1_unit{u}" for u in range(1, 4)]
                     + [f"block2_unit{u}" for u in range(1, 5)]
                     + [f"block3_unit{u}" for u in range(1, 10)])
    assert names[1:5] == ["conv_root", "gn_root", "root_relu", "root_pool"]
    assert names[5 + len(units)] == "patch_embedding"
    projecting = [n for n in units if model.get_layer(n).conv_proj is not None]
    assert projecting == ["block1_unit1", "block2_unit1", "block3_unit1"]
    assert tuple(model.get_layer("block3_unit9").output.shape) == (None, 4, 4, 1024)
    # Patch size 1 on the 1024-channel stride-16 map: a (1, 1, 1024, 768) kernel.
    assert tuple(model.get_layer("patch_embedding").projection.kernel.shape) == (1, 1, 1024, 768)
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 1 + 4 * 4, 768)
    assert tuple(model.get_layer("conv_root").kernel.shape) == (7, 7, 3, 64)
    assert tuple(model.get_layer("gn_root").gamma.shape) == (64,)
    keras.backend.clear_session()


def test_r50_32_has_four_stages():
    model = keras_vit.ViT("R50+Ti/32", image_size=64, include_top=False)
    units = [layer.name for layer in model.layers if layer.name.startswith("block")]
    assert [sum(u.startswith(f"block{s}_") for u in units) for s in (1, 2, 3, 4)] == [3, 4, 6, 3]
    assert tuple(model.get_layer("block4_unit3").output.shape) == (None, 2, 2, 2048)
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 5, 192)


@pytest.mark.parametrize("spec,image_size,grid", [
    (TINY, (32, 48), (2, 3)),
    (TINY, (48, 16), (3, 1)),
    (TINY32, (64, 96), (2, 3)),
])
def test_non_square_shapes(spec, image_size, grid):
    model = keras_vit.ViT(spec, image_size=image_size, num_classes=5)
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (
        1, 1 + grid[0] * grid[1], 32)
    _randomize(model)
    out = to_numpy(model(_images((2,) + image_size + (3,))))
    assert out.shape == (2, 5) and np.all(np.isfinite(out))
    assert model.count_params() == _formula(spec, image_size[0], num_classes=5) - (
        image_size[0] // spec.stride) ** 2 * 32 + grid[0] * grid[1] * 32


def test_custom_spec_name_and_counts():
    assert TINY.name == "R[1, 1, 1]w32+mu/16" and TINY.stride == 16
    model = keras_vit.ViT(TINY, image_size=32, num_classes=10)
    assert model.name == "vit_r111w32_mu16"
    assert model.count_params() == _formula(TINY, 32, num_classes=10)


def test_gap_pooling_and_features():
    model = keras_vit.ViT(TINY, image_size=32, num_classes=3, pooling="gap")
    assert "class_token" not in [layer.name for layer in model.layers]
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 4, 32)
    features = keras_vit.ViT(TINY, image_size=32, include_top=False)
    assert tuple(features(np.zeros((2, 32, 32, 3), "float32")).shape) == (2, 32)


def test_save_and_load_keras_file_gives_identical_outputs(tmp_path):
    model = keras_vit.ViT(TINY, image_size=(32, 48), num_classes=3, representation_size=8)
    _randomize(model)
    images = _images((2, 32, 48, 3))
    expected = to_numpy(model(images))
    path = str(tmp_path / "hybrid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(images)), expected)
    assert type(loaded.get_layer("block2_unit1")).__name__ == "BottleneckUnit"
    assert type(loaded.get_layer("conv_root")).__name__ == "StdConv2D"

    weights_path = str(tmp_path / "hybrid.weights.h5")
    model.save_weights(weights_path)
    rebuilt = keras_vit.ViT(TINY, image_size=(32, 48), num_classes=3, representation_size=8,
                            weights=weights_path)
    np.testing.assert_array_equal(to_numpy(rebuilt(images)), expected)


def test_fit_trains_every_part():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (32, 32, 32, 3)).astype("float32")
    labels = (images[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    model = keras_vit.ViT(TINY, image_size=32, num_classes=2)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  # "auto": JAX compiles the step (op by op it took 76 s in CI); Keras
                  # leaves TensorFlow on the CPU and PyTorch uncompiled.
                  jit_compile="auto")
    watched = {name: to_numpy(model.get_layer(name).weights[0]).copy()
               for name in ("conv_root", "block1_unit1", "block3_unit1", "patch_embedding")}
    history = model.fit(images, labels, batch_size=8, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    for name, before in watched.items():
        assert not np.array_equal(before, to_numpy(model.get_layer(name).weights[0])), name


def test_mixed_bfloat16_stays_finite_with_float32_logits():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = keras_vit.ViT(TINY, image_size=32, num_classes=4)
    _randomize(model, scale=0.1)
    # Compiled, not eager: op-by-op bfloat16 on JAX's CPU backend takes
    # seconds per call.
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    out = model.predict_on_batch(_images((2, 32, 32, 3)))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.backend.standardize_dtype(
        model.get_layer("block1_unit1").compute_dtype) == "bfloat16"
    assert np.all(np.isfinite(out)) and np.abs(out).max() > 1e-3
    assert np.isfinite(model.train_on_batch(_images((2, 32, 32, 3)), np.array([0, 1])))


def _run_layers(model, images):
    """Runs a ViT's layers (a chain) on images of another size."""
    x = images
    for layer in model.layers[1:]:
        x = layer(x)
    return x


def test_dynamic_resolution_matches_resized_position_embeddings():
    """Built at 64x64 (4x4 grid), run on 96x96 (6x6 grid, the feature-map grid)."""
    model = keras_vit.ViT(TINY, image_size=64, num_classes=10)
    _randomize(model, scale=0.1)
    images = _images((2, 96, 96, 3))
    features = model.get_layer("block3_unit1")(
        model.get_layer("block2_unit1")(model.get_layer("block1_unit1")(
            model.get_layer("root_pool")(model.get_layer("root_relu")(
                model.get_layer("gn_root")(model.get_layer("conv_root")(images)))))))
    assert tuple(features.shape) == (2, 6, 6, 512)
    dynamic = to_numpy(_run_layers(model, images))
    assert dynamic.shape == (2, 10) and np.all(np.isfinite(dynamic))
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 17, 32)

    # The same weights in a model built at 96x96, its position embeddings
    # resized from the 4x4 to the 6x6 feature-map grid by the fine-tune tool.
    tuned = keras_vit.ViT(TINY, image_size=96, num_classes=10)
    for old, new in zip(model.layers, tuned.layers):
        if old.name == "position_embedding":
            resized = finetune.resize_position_embeddings(old.embeddings, (6, 6))
            assert resized.shape == (1, 37, 32)
            new.embeddings.assign(resized)
        else:
            new.set_weights(old.get_weights())
    np.testing.assert_allclose(to_numpy(tuned(images)), dynamic, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(variant="R50+B/16", image_size=100),
     r"image_size 100: height 100 is not divisible by 16, the feature-map stride of hybrid "
     r"variant 'R50\+B/16'"),
    (dict(variant="R50+B/32", image_size=(224, 208)),
     r"width 208 is not divisible by 32, the feature-map stride of hybrid variant 'R50\+B/32'"),
    (dict(variant="R26+B/16"), r"Unknown variant 'R26\+B/16': no stage configuration of R26 "
                               r"gives stride 16; known hybrids: R50\+SIZE/16, R50\+SIZE/32, "
                               r"R26\+SIZE/32"),
    (dict(variant="R50+B/8"), r"the patch size of a hybrid is the stride of its ResNet "
                              r"feature map and must be one of \[16, 32\], received 8"),
    (dict(variant="R101+B/16"), r"ResNet 'R101' is not one of \['R26', 'R50'\]"),
    (dict(variant="R50+Q/16"), r"size 'Q' is not one of"),
    (dict(variant="R50+B16"), r"Unknown variant 'R50\+B16'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_vit.ViT(**kwargs)


@pytest.mark.parametrize("changes,match", [
    (dict(resnet_width=48), r"ResNet width must be a positive multiple of 32 \(the GroupNorm "
                            r"groups\), received 48"),
    (dict(resnet_units=(2, 0)), r"ResNet units must be a non-empty sequence of positive "
                                r"integers \(units per stage\), received \(2, 0\)"),
])
def test_bad_custom_specs(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **changes)


def test_plain_variants_are_unchanged():
    spec = variants.parse_variant("B/16")
    assert not spec.is_hybrid and spec.stride == 16 and spec.resnet_units == ()
    assert keras_vit.ViT("mu/4", image_size=16).name == "vit_mu4"
    names = [layer.name for layer in keras_vit.ViT("mu/4", image_size=16).layers]
    assert names[:2] == ["images", "patch_embedding"]
