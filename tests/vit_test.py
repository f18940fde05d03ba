import keras
import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from keras_vit import variants

# Parameter counts with 1000 classes, 3 channels, token pooling, no
# pre-logits layer: the paper's sizes and Ti/S equal the reference
# implementations' (vit_jax, timm) counts to the unit; mu and M, which have
# no published count, are pinned from `_formula`. Every size has one.
PINNED_PARAMS = {
    ("mu/16", 224): 76_712,
    ("Ti/16", 224): 5_717_416,
    ("S/16", 224): 22_050_664,
    ("M/16", 224): 38_837_736,
    ("B/16", 224): 86_567_656,
    ("B/32", 224): 88_224_232,
    ("L/16", 224): 304_326_632,
    ("H/14", 224): 632_045_800,
    ("B/16", 384): 86_859_496,
}


def _formula(spec, image_size, num_classes=1000, channels=3):
    """Counts the parameters of a ViT from the paper's description."""
    d, m, p = spec.hidden_dim, spec.mlp_dim, spec.patch_size
    tokens = (image_size // p) ** 2 + 1
    block = (2 * 2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    return (p * p * channels * d + d) + d + tokens * d + spec.depth * block + 2 * d + d * num_classes + num_classes


def test_every_size_has_a_pinned_count():
    pinned_sizes = {variants.parse_variant(v).size for v, _ in PINNED_PARAMS}
    assert pinned_sizes == set(variants.SIZES)


@pytest.mark.parametrize("variant,image_size", sorted(PINNED_PARAMS))
def test_parameter_counts(variant, image_size):
    # Counting needs the variables' shapes only: created uninitialized (a fraction of a second,
    # not seconds), then forgotten by clear_session, so that no later scope initializes them.
    with keras.StatelessScope(initialize_variables=False):
        model = keras_vit.ViT(variant, image_size=image_size)
    assert model.count_params() == PINNED_PARAMS[(variant, image_size)]
    assert model.count_params() == _formula(variants.parse_variant(variant), image_size)
    keras.backend.clear_session()


def test_token_pooling_shapes_and_layers():
    # 28x28 images with 4x4 patches: (28/4)^2 + 1 = 50 tokens.
    model = keras_vit.ViT("mu/4", image_size=28, num_classes=10)
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 50, 32)
    assert tuple(model.output.shape) == (None, 10)
    out = model(np.zeros((3, 28, 28, 3), "float32"))
    assert tuple(out.shape) == (3, 10)
    # Zero-initialized head, as in the reference implementation.
    np.testing.assert_array_equal(to_numpy(out), 0.0)


@pytest.mark.parametrize("pooling,tokens", [("token", 17), ("gap", 16)])
def test_last_block_computes_only_the_tokens_the_pooling_uses(pooling, tokens):
    # With [class]-token pooling the last block computes that token alone; the logits are those
    # of every block run on all tokens (non-zero weights, so that they can differ).
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=5, pooling=pooling)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3
                       + (1.0 if "gamma" in w.path else 0.0) for w in model.weights])
    blocks = [layer for layer in model.layers if isinstance(layer, keras_vit.layers.TransformerBlock)]
    assert [tuple(b.output.shape) for b in blocks[:-1]] == [(None, tokens, 32)] * (len(blocks) - 1)
    assert tuple(blocks[-1].output.shape) == (None, 1 if pooling == "token" else tokens, 32)
    images = rng.normal(size=(3, 16, 16, 3)).astype("float32")
    x = images
    for layer in model.layers[1:]:
        x = layer(x)
        if layer is blocks[-1]:
            assert tuple(x.shape) == (3, tokens, 32)
    logits = to_numpy(model(images))
    assert np.abs(logits).max() > 0.1
    np.testing.assert_allclose(logits, to_numpy(x), rtol=1e-5, atol=1e-5)


def test_non_square_images():
    model = keras_vit.ViT("mu/4", image_size=(16, 32), num_classes=5, num_channels=1)
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 1 + 4 * 8, 32)
    assert tuple(model(np.zeros((2, 16, 32, 1), "float32")).shape) == (2, 5)


def test_gap_pooling_has_no_class_token():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10, pooling="gap")
    names = [layer.name for layer in model.layers]
    assert "class_token" not in names
    assert tuple(model.get_layer("position_embedding").embeddings.shape) == (1, 16, 32)
    assert model.count_params() == keras_vit.ViT("mu/4", image_size=16, num_classes=10).count_params() - 2 * 32


def test_pre_logits_and_features():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=7, representation_size=24)
    pre_logits = model.get_layer("pre_logits")
    assert pre_logits.get_config()["activation"] == "tanh"
    assert tuple(pre_logits.kernel.shape) == (32, 24)
    assert tuple(model.get_layer("head").kernel.shape) == (24, 7)
    features = keras_vit.ViT("mu/4", image_size=16, include_top=False)
    assert tuple(features(np.ones((2, 16, 16, 3), "float32")).shape) == (2, 32)
    assert "head" not in [layer.name for layer in features.layers]


def test_drop_path_increases_linearly_with_depth():
    model = keras_vit.ViT("Ti/16", image_size=32, drop_path_rate=0.11)
    rates = [model.get_layer(f"encoder_block_{i}").drop_path_rate for i in range(12)]
    np.testing.assert_allclose(rates, np.linspace(0, 0.11, 12))


def test_save_and_load_keras_file_gives_identical_outputs(tmp_path):
    model = keras_vit.ViT("mu/4", image_size=(16, 24), num_classes=3,
                          representation_size=8, dropout=0.1, drop_path_rate=0.1,
                          approximate_gelu=False)
    _randomize(model)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(images)), to_numpy(model(images)))
    assert loaded.get_layer("encoder_block_0").approximate_gelu is False

    weights_path = str(tmp_path / "model.weights.h5")
    model.save_weights(weights_path)
    for source in (weights_path, path):
        rebuilt = keras_vit.ViT("mu/4", image_size=(16, 24), num_classes=3,
                                representation_size=8, approximate_gelu=False,
                                weights=source)
        np.testing.assert_array_equal(to_numpy(rebuilt(images)), to_numpy(model(images)))


def test_num_classes_zero_is_a_backbone():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=0, representation_size=8)
    names = [layer.name for layer in model.layers]
    assert "head" not in names and names[-1] == "pre_logits"
    assert model.output_shape == (None, 8)
    assert keras_vit.ViT("mu/4", image_size=16, num_classes=0).output_shape == (None, 32)


def test_weights_errors(tmp_path):
    with pytest.raises(ValueError, match=r"weights file '.*missing.weights.h5' does not exist"):
        keras_vit.ViT("mu/4", image_size=16, weights=str(tmp_path / "missing.weights.h5"))
    other = tmp_path / "model.h5x"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"Unsupported weights file .*model.h5x.*'.weights.h5' or '.keras'"):
        keras_vit.ViT("mu/4", image_size=16, weights=str(other))
    pickled = tmp_path / "model.bin"
    pickled.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"model.bin is a pickled checkpoint. keras_vit never "
                                         r"unpickles weights"):
        keras_vit.ViT("mu/4", image_size=16, weights=str(pickled))
    path = str(tmp_path / "gap.keras")
    keras_vit.ViT("mu/4", image_size=16, num_classes=10, pooling="gap").save(path)
    # Another class count or size is adapted (tests/finetune_test.py); another pooling is not.
    with pytest.raises(ValueError, match=r"another architecture than vit_mu4: after adapting "
                                         r"it to the input size and classes, it has 19 weights "
                                         r"and vit_mu4 20; the first difference is weight 2: "
                                         r"\(1, 16, 32\) found, \(1, 1, 32\) expected"):
        keras_vit.ViT("mu/4", image_size=16, num_classes=5, weights=path)


def test_fit_trains():
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (32, 16, 16, 3)).astype("float32")
    labels = (images[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=2)
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(images, labels, batch_size=8, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]


def test_mixed_bfloat16_model_stays_finite_with_float32_logits():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=4)
    _randomize(model)
    out = model(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.backend.standardize_dtype(
        model.get_layer("encoder_block_0").compute_dtype) == "bfloat16"
    assert np.all(np.isfinite(to_numpy(out)))
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = model.train_on_batch(np.zeros((2, 16, 16, 3), "float32"), np.array([0, 1]))
    assert np.isfinite(loss)


def test_dynamic_resolution_through_position_embedding():
    """A model built at 32x32 runs its own layers on 48x48 images."""
    model = keras_vit.ViT("mu/4", image_size=32, num_classes=10)
    _randomize(model)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 48, 48, 3)).astype("float32")
    x = model.get_layer("patch_embedding")(images)
    assert tuple(x.shape) == (2, 144, 32)  # (48/4)^2 patches
    x = model.get_layer("class_token")(x)
    position = model.get_layer("position_embedding")
    x = position(x)  # a 12x12 grid, resized from the built 8x8
    assert tuple(x.shape) == (2, 145, 32)
    assert tuple(position.embeddings.shape) == (1, 65, 32)
    x = model.get_layer("encoder_block_0")(x)
    x = model.get_layer("encoder_norm")(x)
    logits = model.get_layer("head")(model.get_layer("pooling")(x))
    assert tuple(logits.shape) == (2, 10)
    assert np.all(np.isfinite(to_numpy(logits)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(variant="B/16", image_size=100), r"image_size 100: height 100 is not divisible by patch_size 16"),
    (dict(variant="B/16", image_size=(224, 200)), r"width 200 is not divisible by patch_size 16"),
    (dict(variant="Q/16"), r"Unknown variant 'Q/16'"),
    (dict(variant="B-16"), r"Unknown variant 'B-16'"),
    (dict(variant="B/16", pooling="max"), r"Unknown pooling 'max'"),
    (dict(variant="B/16", num_classes=-1),
     r"num_classes must be an integer >= 0, received -1"),
    (dict(variant="B/16", image_size=(224,)), r"image_size must be an int or a pair"),
    (dict(variant="B/16", dropout=1.5), r"dropout must be a number in \[0, 1\), received 1.5"),
    (dict(variant="B/16", representation_size=-3), r"representation_size must be a positive integer or None, received -3"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_vit.ViT(**kwargs)


def test_wrong_number_of_channels():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=2)
    with pytest.raises(ValueError, match=r"(expected shape=\(None, 16, 16, 3\)|3 channels).*1\)"):
        model(np.zeros((2, 16, 16, 1), "float32"))


def _randomize(model):
    rng = np.random.default_rng(1)
    for w in model.weights:
        w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))
