"""Tests of keras_vit.explain: intermediate outputs, rollout, Figure 7 analyses, plots.

And of the package's layout: every public name re-exported, the old `keras_vit.inspect` gone.
"""

import dataclasses
import math

import keras
import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from keras_vit import explain
from keras_vit import variants
from keras_vit.layers import (
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    TransformerBlock,
)


def _randomize_head(model, seed=0):
    # The head is zero-initialized; give it weights so that outputs differ per image.
    head = model.get_layer("head")
    rng = np.random.default_rng(seed)
    head.kernel.assign(rng.normal(size=head.kernel.shape).astype("float32"))
    head.bias.assign(rng.normal(size=head.bias.shape).astype("float32"))
    return model


def _branched_model():
    """A ViT behind a small stem (per-pixel Dense layers, a residual Add), 3 blocks, 12x12 images.

    Stands for models whose layers before the blocks are not a patch embedding alone (a
    hybrid ResNet stem): the walk must run them as the model does.
    """
    images = keras.Input((12, 12, 3), name="images")
    stem = keras.layers.Dense(8, activation="relu", name="stem_dense")(images)
    stem = keras.layers.Add(name="stem_add")(
        [stem, keras.layers.Dense(8, name="stem_skip")(images)])
    x = PatchEmbedding(2, 16, name="patch_embedding")(stem)
    x = ClassToken(name="class_token")(x)
    x = PositionEmbedding((6, 6), name="position_embedding")(x)
    for i in range(3):
        x = TransformerBlock(2, 32, name=f"encoder_block_{i}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")(x)
    x = TokenPooling("token", name="pooling")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return _randomize_head(keras.Model(images, outputs, name="branched"))


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _uniform_attention(model):
    """Zeroes every block's q/k/v projection: all attention logits 0, attention uniform."""
    for block in explain.transformer_blocks(model):
        block.qkv.kernel.assign(np.zeros(block.qkv.kernel.shape, "float32"))
        block.qkv.bias.assign(np.zeros(block.qkv.bias.shape, "float32"))
    return model


# -- intermediate_outputs ----------------------------------------------------------------


def test_intermediate_outputs_shapes_and_attention_rows_sum_to_one():
    # 16x24 images, 4x4 patches: 1 + 4 * 6 = 25 tokens; mu: width 32, 2 heads, 1 block.
    model = keras_vit.ViT("mu/4", image_size=(16, 24), num_classes=10)
    out = explain.intermediate_outputs(model, _images((3, 16, 24, 3)))
    assert out["blocks"] == [0]
    assert [t.shape for t in out["tokens"]] == [(3, 25, 32)]
    assert [a.shape for a in out["attention"]] == [(3, 2, 25, 25)]
    assert out["features"].shape == (3, 32)
    assert out["outputs"].shape == (3, 10)
    np.testing.assert_allclose(out["attention"][0].sum(axis=-1), 1.0, atol=1e-5)
    assert out["attention"][0].min() >= 0.0


def test_walk_reproduces_the_models_own_outputs_through_a_branched_stem():
    model = _branched_model()
    images = _images((2, 12, 12, 3))
    out = explain.intermediate_outputs(model, images)
    assert [t.shape for t in out["tokens"]] == [(2, 37, 16)] * 3
    assert [a.shape for a in out["attention"]] == [(2, 2, 37, 37)] * 3
    # Asking for attention switches the blocks to the explicit path; the results must equal
    # the model's normal (fused on JAX/PyTorch) forward pass.
    np.testing.assert_allclose(out["outputs"], to_numpy(model(images)), atol=1e-5)
    features = keras.Model(model.input, model.get_layer("head").input)
    np.testing.assert_allclose(out["features"], to_numpy(features(images)), atol=1e-5)
    # The last block's tokens lead to the features through the model's own final layers.
    pooled = model.get_layer("pooling")(model.get_layer("encoder_norm")(out["tokens"][-1]))
    np.testing.assert_allclose(to_numpy(pooled), out["features"], atol=1e-5)
    # Each block's tokens are the next block's input.
    block_2 = model.get_layer("encoder_block_2")
    np.testing.assert_allclose(to_numpy(block_2(out["tokens"][1])), out["tokens"][2], atol=1e-5)
    plain = explain.intermediate_outputs(model, images, attention=False)
    assert plain["attention"] is None
    for a, b in zip(plain["tokens"], out["tokens"]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_features_of_a_model_without_head_are_its_output():
    model = keras_vit.ViT("mu/4", image_size=16, pooling="gap", include_top=False)
    images = _images((2, 16, 16, 3))
    out = explain.intermediate_outputs(model, images, attention=False)
    np.testing.assert_allclose(out["features"], to_numpy(model(images)), atol=1e-5)
    assert out["tokens"][0].shape == (2, 16, 32)  # no class token with gap pooling


def test_selected_blocks_and_negative_indices():
    model = _branched_model()
    out = explain.intermediate_outputs(model, _images((1, 12, 12, 3)), blocks=[-1, 0])
    assert out["blocks"] == [2, 0]
    every = explain.intermediate_outputs(model, _images((1, 12, 12, 3)))
    np.testing.assert_allclose(out["tokens"][0], every["tokens"][2], atol=1e-6)
    np.testing.assert_allclose(out["attention"][1], every["attention"][0], atol=1e-6)


@pytest.mark.parametrize("index", [3, -4])
def test_block_index_out_of_range_names_the_index_and_range(index):
    model = _branched_model()
    with pytest.raises(ValueError, match=rf"Block index {index} is out of range: .* 3 "
                                         r"TransformerBlock\(s\), valid indices are 0\.\.2"):
        explain.intermediate_outputs(model, _images((1, 12, 12, 3)), blocks=[0, index])


@pytest.mark.parametrize("shape", [(2, 32, 32, 3), (2, 16, 16, 1), (16, 16, 3)])
def test_images_of_the_wrong_size_are_refused(shape):
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    with pytest.raises(ValueError, match=r"Images of shape .* do not fit model 'vit_mu4', "
                                         r"which takes \(None, 16, 16, 3\)"):
        explain.intermediate_outputs(model, np.zeros(shape, "float32"))
    with pytest.raises(ValueError, match="do not fit model"):
        explain.attention_rollout(model, np.zeros(shape, "float32"))


def test_later_calls_run_the_models_current_weights():
    # intermediate_outputs reuses the model's layers (no copy of a weight): a weight assigned
    # after a first call is the one the next call uses.
    model = _branched_model()
    images = _images((2, 12, 12, 3))
    first = explain.intermediate_outputs(model, images)
    _randomize_head(model, seed=1)
    second = explain.intermediate_outputs(model, images)
    np.testing.assert_allclose(second["outputs"], to_numpy(model(images)), atol=1e-5)
    assert np.abs(second["outputs"] - first["outputs"]).max() > 0.1
    np.testing.assert_allclose(second["tokens"][-1], first["tokens"][-1], atol=1e-6)


def test_a_compiled_model_gives_the_same_results():
    model = _branched_model()
    images = _images((2, 12, 12, 3))
    before = explain.intermediate_outputs(model, images, blocks=[1])
    model.compile(optimizer="adam", loss="mse")
    after = explain.intermediate_outputs(model, images, blocks=[1])
    for key in ("tokens", "attention"):
        np.testing.assert_allclose(after[key][0], before[key][0], atol=1e-6)
    np.testing.assert_allclose(after["outputs"], to_numpy(model(images)), atol=1e-5)


def test_models_without_blocks_are_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="dense_only")
    with pytest.raises(ValueError, match="Model 'dense_only' has no TransformerBlock layer"):
        explain.intermediate_outputs(model, np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="Expected a Functional keras.Model"):
        explain.transformer_blocks(keras.layers.Dense(2))
    sequential = keras.Sequential([keras.Input((4, 32)), TransformerBlock(2, 64)])
    with pytest.raises(ValueError, match="Expected a Functional keras.Model .* received "
                                         "Sequential"):
        explain.transformer_blocks(sequential)


# -- Attention rollout -------------------------------------------------------------------


def _one_hot_attention(rows, length):
    """(1, 1, T, T) attention where query i attends only to rows[i] (identity elsewhere)."""
    weights = np.eye(length)
    for query, key in rows.items():
        weights[query] = np.eye(length)[key]
    return weights[None, None]


def test_rollout_of_a_hand_built_case():
    # 1 class token + 4 patches. Block 1: patch token 1 (index 2) attends only to patch token
    # 3 (index 4). Block 2: the class token attends only to patch token 1. With the identity
    # added and rows renormalized, A1[2] = (e2 + e4) / 2 and A2[0] = (e0 + e2) / 2, so
    # (A2 @ A1)[0] = e0 / 2 + e2 / 4 + e4 / 4: half the class token's information comes
    # from patch 1, which got half of its own from patch 3.
    first = _one_hot_attention({2: 4}, 5)
    second = _one_hot_attention({0: 2}, 5)
    rollout = explain.rollout_from_weights([first, second])
    np.testing.assert_allclose(rollout[0, 0], [0.5, 0.0, 0.25, 0.0, 0.25], atol=1e-12)
    # Rows of a rollout are distributions.
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-12)
    # The order matters: the other product would lose the second hop.
    reverse = explain.rollout_from_weights([second, first])
    np.testing.assert_allclose(reverse[0, 0], [0.5, 0.0, 0.5, 0.0, 0.0], atol=1e-12)


def test_rollout_head_fusion_and_discard():
    # Head 1 attends from token 0 to token 1, head 2 to token 2.
    heads = np.stack([_one_hot_attention({0: 1}, 3)[0, 0], _one_hot_attention({0: 2}, 3)[0, 0]])
    weights = heads[None]
    mean = explain.rollout_from_weights([weights], head_fusion="mean")
    np.testing.assert_allclose(mean[0, 0], [0.5, 0.25, 0.25], atol=1e-12)
    maximum = explain.rollout_from_weights([weights], head_fusion="max")
    np.testing.assert_allclose(maximum[0, 0], [1 / 3, 1 / 3, 1 / 3], atol=1e-12)
    # The fused matrix has five 0s, two 0.5s (row 0) and two 1s; discarding int(0.78 * 9) = 7
    # entries removes the 0s and the 0.5s, so row 0 keeps only the identity.
    dropped = explain.rollout_from_weights([weights], discard_ratio=0.78)
    np.testing.assert_allclose(dropped[0, 0], [1.0, 0.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="Unknown head_fusion 'median'"):
        explain.rollout_from_weights([weights], head_fusion="median")
    with pytest.raises(ValueError, match=r"discard_ratio must be in \[0, 1\), received 1.0"):
        explain.rollout_from_weights([weights], discard_ratio=1.0)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_attention_rollout_maps_have_image_size_and_unit_range(pooling):
    model = keras_vit.ViT("mu/4", image_size=(16, 24), num_classes=10, pooling=pooling)
    maps = explain.attention_rollout(model, _images((3, 16, 24, 3)), batch_size=2)
    assert maps.shape == (3, 16, 24)
    np.testing.assert_allclose(maps.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_uniform_attention_gives_a_constant_map():
    # Uniform attention spreads every token evenly: nothing stands out, the map is all ones.
    model = _uniform_attention(keras_vit.ViT("mu/4", image_size=16, num_classes=10))
    maps = explain.attention_rollout(model, _images((2, 16, 16, 3)))
    np.testing.assert_allclose(maps, 1.0)


# -- Figure 7 analyses --------------------------------------------------------------------


def test_position_embedding_similarity_shape_diagonal_and_symmetry():
    model = keras_vit.ViT("mu/4", image_size=(12, 16), num_classes=10)
    similarity = explain.position_embedding_similarity(model)
    assert similarity.shape == (3, 4, 3, 4)
    flat = similarity.reshape(12, 12)
    np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-6)
    np.testing.assert_allclose(flat, flat.T, atol=1e-6)
    # Compared with a direct computation over the embedding rows after the class token.
    rows = to_numpy(model.get_layer("position_embedding").embeddings)[0, 1:]
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    np.testing.assert_allclose(flat, rows @ rows.T, atol=1e-6)


def test_similarity_by_relation_on_a_hand_built_grid():
    # 2x3 grid; similarity 0.9 within rows, 0.5 within columns, -0.2 otherwise.
    grid = np.empty((2, 3, 2, 3))
    for r, c, i, j in np.ndindex(grid.shape):
        grid[r, c, i, j] = 1.0 if (r, c) == (i, j) else (
            0.9 if r == i else 0.5 if c == j else -0.2)
    assert explain.similarity_by_relation(grid) == pytest.approx(
        {"same_row": 0.9, "same_column": 0.5, "neither": -0.2})


def test_patch_embedding_components_are_the_pca_of_the_filters():
    from sklearn.decomposition import PCA

    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    components, variance = explain.patch_embedding_components(
        model, n=6, return_variance=True)
    assert components.shape == (6, 4, 4, 3)
    kernel = to_numpy(model.get_layer("patch_embedding").projection.kernel)
    filters = kernel.reshape(-1, kernel.shape[-1]).T  # (32 filters, 48 pixels)
    reference = PCA(n_components=6, svd_solver="full").fit(filters)
    flat = components.reshape(6, -1)
    # Up to the sign of each component.
    np.testing.assert_allclose(np.abs(np.sum(flat * reference.components_, axis=1)), 1.0,
                               atol=1e-4)
    np.testing.assert_allclose(variance, reference.explained_variance_ratio_, rtol=1e-4)
    assert np.all(np.diff(variance) <= 0)
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 32\] .* received 33"):
        explain.patch_embedding_components(model, n=33)


@pytest.mark.parametrize(
    "image_size,pooling,expected",
    [
        # 8x8 images, 4x4 patches: a 2x2 grid with centres 4 pixels apart. From any patch the
        # four patches are 0, 4, 4 and 4 * sqrt(2) away: mean 2 + sqrt(2).
        (8, "token", 2 + math.sqrt(2)),
        # 4x16 images: a 1x4 row. Sum over ordered pairs of |i - j| is 20, over 16 pairs,
        # times 4 pixels: 5.
        ((4, 16), "gap", 5.0),
    ],
)
def test_mean_attention_distance_of_uniform_attention(image_size, pooling, expected):
    model = _uniform_attention(
        keras_vit.ViT("mu/4", image_size=image_size, num_classes=10, pooling=pooling))
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    distances = explain.mean_attention_distance(
        model, _images((3, height, width, 3)), batch_size=2)
    assert distances.shape == (1, 2)  # (depth, heads) of mu
    np.testing.assert_allclose(distances, expected, rtol=1e-5)


def test_mean_attention_distance_is_zero_when_each_patch_attends_to_itself():
    # A hand-built layer-level check of the weighting: queries attending only to themselves
    # (and partly to the class token, which has no location) are at distance 0.
    weights = np.zeros((1, 1, 5, 5))
    weights[0, 0, :, 0] = 0.5
    weights[0, 0, np.arange(1, 5), np.arange(1, 5)] = 0.5
    weights[0, 0, 0, 0] = 1.0
    patches = weights[:, :, 1:, 1:] / weights[:, :, 1:, 1:].sum(-1, keepdims=True)
    distances = explain.patch_distances((2, 2), (8, 8))
    assert np.einsum("bhqk,qk->", patches, distances) == 0.0
    np.testing.assert_allclose(distances[0], [0, 4, 4, 4 * math.sqrt(2)])


# -- Plots --------------------------------------------------------------------------------


def _png_size(path):
    import matplotlib.image

    assert path.stat().st_size > 1000
    height, width = matplotlib.image.imread(str(path)).shape[:2]
    return width, height


def test_plots_are_written_with_their_documented_pixel_sizes(tmp_path):
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10, num_channels=1)
    images = _images((2, 16, 16, 1))
    maps = explain.attention_rollout(model, images)
    explain.plot_attention_rollout(images, maps, tmp_path / "rollout.png", titles=["a", "b"])
    assert _png_size(tmp_path / "rollout.png") == (600, 400)  # 3 x 2 panels of 2 in at 100 dpi
    components = explain.patch_embedding_components(model, n=10)
    explain.plot_patch_embedding_filters(components, tmp_path / "filters.png", columns=5)
    assert _png_size(tmp_path / "filters.png") == (500, 200)
    similarity = explain.position_embedding_similarity(model)
    explain.plot_position_embedding_similarity(similarity, tmp_path / "similarity.png")
    assert _png_size(tmp_path / "similarity.png") == (400, 300)  # (4 * 0.5 + 2, 4 * 0.5 + 1)
    distances = explain.mean_attention_distance(model, images)
    explain.plot_mean_attention_distance(distances, tmp_path / "d" / "distance.png",
                                             image_size=16, dpi=50)
    assert _png_size(tmp_path / "d" / "distance.png") == (250, 200)


def test_plots_refuse_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"received \(2, 8, 8, 3\) and \(2, 4, 4\)"):
        explain.plot_attention_rollout(np.zeros((2, 8, 8, 3)), np.zeros((2, 4, 4)),
                                           tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"C 1 or 3 to draw as images, received shape"):
        explain.plot_patch_embedding_filters(np.zeros((4, 2, 2, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"similarity must have shape \(gh, gw, gh, gw\)"):
        explain.plot_position_embedding_similarity(np.zeros((4, 4)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_failed_plot_leaves_the_previous_png_and_no_partial_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "distance.png"
    explain.plot_mean_attention_distance(np.ones((2, 3)), path)
    previous = path.read_bytes()

    def savefig_that_fails_halfway(figure, target, **kwargs):
        with open(target, "wb") as f:
            f.write(previous[:100])  # a truncated PNG, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", savefig_that_fails_halfway)
    with pytest.raises(OSError, match="disk full"):
        explain.plot_mean_attention_distance(np.zeros((4, 3)), path)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distance.png"]  # no temporary
    with pytest.raises(OSError, match="disk full"):
        explain.plot_mean_attention_distance(np.zeros((4, 3)), tmp_path / "new.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distance.png"]


# -- A trained model ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="the 280 training steps take ~90 s on PyTorch's eager CPU backend (13-15 s on "
    "TensorFlow and JAX); the analysis functions themselves are tested on PyTorch above",
)
def test_trained_position_embeddings_encode_rows_and_columns():
    """The paper's Figure 7 (centre) observation, measured: after training, embeddings of
    positions in the same row or column are more similar than those sharing neither.

    A ViT-mu/2 with a class token on the 1,797 scikit-learn digits upscaled to 16x16 (an 8x8
    grid of patches, one original pixel each), 10 epochs of AdamW (about 10 s on 2 CPU
    cores). Measured margins over 4 seeds and settings: same row - neither 0.04 to 0.12, same
    column - neither 0.14 to 0.25; at initialization both are 0 +- 0.013 (random 32-d
    embeddings). The test asks for 0.02 and 0.05.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[..., None] / 8.0 - 1.0
    images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2).astype("float32")
    model = keras_vit.ViT("mu/2", image_size=16, num_classes=10, num_channels=1)
    model.compile(
        optimizer=keras.optimizers.AdamW(3e-3, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(images, digits.target, batch_size=64, epochs=10, verbose=0)
    assert history.history["accuracy"][-1] > 0.4  # it did learn
    after = explain.similarity_by_relation(explain.position_embedding_similarity(model))
    assert after["same_row"] - after["neither"] > 0.02, after
    assert after["same_column"] - after["neither"] > 0.05, after


def test_hybrid_model_intermediates_and_distances_use_the_feature_grid():
    # A real hybrid: its ResNet stem runs as in `model(images)`, and its tokens stand for
    # 16x16-pixel cells of the image.
    spec = dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                               resnet_width=32)
    model = _randomize_head(keras_vit.ViT(spec, image_size=32, num_classes=10))
    images = _images((2, 32, 32, 3))
    out = explain.intermediate_outputs(model, images)
    assert [t.shape for t in out["tokens"]] == [(2, 5, 32)]
    assert [a.shape for a in out["attention"]] == [(2, 2, 5, 5)]
    np.testing.assert_allclose(out["outputs"], to_numpy(model(images)), atol=1e-5)
    assert explain.attention_rollout(model, images).shape == (2, 32, 32)
    # Uniform attention on the 2x2 grid of 16-pixel cells: 4 * (2 + sqrt(2)) pixels.
    distances = explain.mean_attention_distance(_uniform_attention(model), images)
    np.testing.assert_allclose(distances, 4 * (2 + math.sqrt(2)), rtol=1e-5)


# -- Tokens before the patches: distillation, registers, no [class] token ------------------


def _family_model(pooling="token", num_registers=0, distillation_token=False, **kwargs):
    spec = dataclasses.replace(variants.parse_variant("mu/4"), num_registers=num_registers,
                               distillation_token=distillation_token)
    model = keras_vit.ViT(spec, image_size=16, num_classes=0, pooling=pooling, **kwargs)
    if num_registers:
        # DINOv2's init (1e-6) makes the registers all but equal; random ones show a mix-up.
        layer = model.get_layer("register_tokens")
        layer.tokens.assign(_images(layer.tokens.shape, seed=3))
    return model


@pytest.mark.parametrize(
    "pooling,registers,distillation,expected",
    [
        ("token", 4, False, 5),  # [class, registers x4]
        ("distilled", 2, True, 4),  # [class, distillation, registers x2]
        ("map", 3, False, 3),  # SigLIP-like with registers: no [class] token
        ("map", 0, False, 0),
    ],
)
def test_token_layout_counts_distillation_and_register_tokens(
        pooling, registers, distillation, expected):
    model = _family_model(pooling, registers, distillation)
    assert explain.token_layout(model) == (expected, (4, 4))
    tokens = explain.intermediate_outputs(model, _images((1, 16, 16, 3)), attention=False)
    assert tokens["tokens"][0].shape == (1, expected + 16, 32)


def _expected_rollout_map(model, images, rows, num_prefix):
    """The rollout rows `rows` over the patch columns, averaged, upsampled and scaled."""
    from keras_vit import interpolation

    out = explain.intermediate_outputs(model, images)
    rollout = explain.rollout_from_weights(out["attention"])
    grid = rollout[:, rows, num_prefix:].mean(axis=1).reshape(-1, 4, 4)
    up = interpolation.resize_matrix(4, 16, "bilinear", antialias=False)
    maps = np.einsum("ih,bhw,jw->bij", up, grid, up)
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low)


@pytest.mark.parametrize(
    "pooling,registers,distillation,rows",
    [
        # The [class] token's row; registers take no place on the map.
        ("token", 4, False, slice(0, 1)),
        # DeiT's representation is the [class] and distillation pair: both rows.
        ("distilled", 2, True, slice(0, 2)),
        # A DeiT model pooling its [class] token alone: that row.
        ("token", 0, True, slice(0, 1)),
        # No [class] token: the mean of the patch tokens' rows (after the 3 registers).
        ("map", 3, False, slice(3, None)),
    ],
)
def test_rollout_reads_the_represented_rows_over_the_patches_only(
        pooling, registers, distillation, rows):
    model = _family_model(pooling, registers, distillation)
    images = _images((2, 16, 16, 3))
    maps = explain.attention_rollout(model, images)
    assert maps.shape == (2, 16, 16)
    num_prefix = explain.token_layout(model)[0]
    np.testing.assert_allclose(
        maps, _expected_rollout_map(model, images, rows, num_prefix), atol=1e-5)


@pytest.mark.parametrize("pooling,registers", [("token", 4), ("map", 2), ("map", 0)])
def test_rollout_of_uniform_attention_is_constant_with_registers_and_map(pooling, registers):
    model = _uniform_attention(_family_model(pooling, registers))
    np.testing.assert_allclose(explain.attention_rollout(model, _images((2, 16, 16, 3))), 1.0)


@pytest.mark.parametrize("pooling,registers,distillation", [
    ("token", 4, False), ("distilled", 2, True), ("map", 3, False)])
def test_mean_attention_distance_leaves_out_prefix_and_register_tokens(
        pooling, registers, distillation):
    # Uniform attention over a 4x4 grid of 4-pixel patches, renormalized over the patches: the
    # distance of a model without any prefix token.
    plain = _uniform_attention(keras_vit.ViT("mu/4", image_size=16, num_classes=0,
                                             pooling="gap"))
    model = _uniform_attention(_family_model(pooling, registers, distillation))
    images = _images((2, 16, 16, 3))
    np.testing.assert_allclose(explain.mean_attention_distance(model, images),
                               explain.mean_attention_distance(plain, images), rtol=1e-6)


def test_dynamic_size_model_is_explained_on_the_grid_of_its_images():
    model = _uniform_attention(_family_model("token", 2, dynamic_image_size=True))
    images = _images((2, 4, 16, 3))
    assert explain.token_layout(model, (4, 16)) == (3, (1, 4))
    assert explain.attention_rollout(model, images).shape == (2, 4, 16)
    # A 1x4 row of 4-pixel patches, as in test_mean_attention_distance_of_uniform_attention.
    np.testing.assert_allclose(explain.mean_attention_distance(model, images), 5.0, rtol=1e-5)


# -- The package ------------------------------------------------------------------------


def test_every_public_name_is_reexported_from_the_module_that_defines_it():
    from keras_vit.explain import analyses, plots, probe

    assert len(explain.__all__) == 15
    modules = (probe, analyses, plots)
    assert sorted(explain.__all__) == sorted(name for m in modules for name in m.__all__)
    for module in modules:
        for name in module.__all__:
            assert getattr(explain, name) is getattr(module, name), name
    assert keras_vit.explain.intermediate_outputs is probe.intermediate_outputs


def test_the_old_module_path_is_gone():
    # keras_vit.inspect, explain's old name (it shadowed the standard library's inspect), was
    # removed before the first release rather than kept as a deprecated alias.
    import importlib.machinery

    # Looked up in the package's own directory: an editable install of another checkout
    # (a meta-path finder) could otherwise answer for it.
    find_spec = importlib.machinery.PathFinder.find_spec
    assert find_spec("keras_vit.inspect", keras_vit.__path__) is None
    assert find_spec("keras_vit.explain", keras_vit.__path__) is not None
    with pytest.raises(AttributeError, match="inspect"):
        keras_vit.inspect  # noqa: B018
    assert "explain" in keras_vit.__all__ and "inspect" not in keras_vit.__all__
