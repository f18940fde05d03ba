import numpy as np
import pytest

from keras_vit import finetune
from keras_vit.layers import PositionEmbedding
from layer_testing import to_numpy


def _posemb(prefix, grid, width=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(1, prefix + grid[0] * grid[1], width)).astype("float32")


def test_same_grid_returns_the_input_bit_for_bit():
    posemb = _posemb(1, (4, 5))
    out = finetune.resize_position_embeddings(posemb, (4, 5), old_grid=(4, 5))
    assert out.dtype == posemb.dtype
    assert out.tobytes() == posemb.tobytes()


@pytest.mark.parametrize("prefix", [0, 1, 2])
@pytest.mark.parametrize("old, new", [((4, 4), (6, 6)), ((3, 5), (6, 4)), ((6, 4), (3, 7)),
                                      ((7, 7), (3, 3))])
def test_shapes_and_prefix_rows_untouched(prefix, old, new):
    posemb = _posemb(prefix, old)
    out = finetune.resize_position_embeddings(posemb, new, num_prefix_tokens=prefix,
                                              old_grid=old)
    assert out.shape == (1, prefix + new[0] * new[1], 8)
    np.testing.assert_array_equal(out[:, :prefix], posemb[:, :prefix])


def test_two_dimensional_input_keeps_its_rank():
    posemb = _posemb(1, (4, 4))[0]
    out = finetune.resize_position_embeddings(posemb, 6)
    assert out.shape == (37, 8)


@pytest.mark.parametrize("method, tolerance", [("bilinear", 0.02), ("bicubic", 0.02)])
def test_smooth_function_is_reproduced_on_the_new_grid(method, tolerance):
    # Embedding d of cell (r, c) is a smooth function of its centre in the
    # image, (r + 0.5) / h and (c + 0.5) / w; resizing must give the same
    # function sampled at the new grid's centres (away from the border rows,
    # where half-pixel sampling extrapolates).
    def field(h, w):
        y = (np.arange(h) + 0.5) / h
        x = (np.arange(w) + 0.5) / w
        yy, xx = np.meshgrid(y, x, indexing="ij")
        channels = [np.sin(2 * yy), np.cos(1.5 * xx), yy * xx, 0.5 * yy - xx]
        return np.stack(channels, axis=-1).reshape(1, h * w, 4).astype("float32")

    old, new = (12, 10), (18, 15)
    posemb = np.concatenate([np.full((1, 1, 4), 7.0, "float32"), field(*old)], axis=1)
    out = finetune.resize_position_embeddings(posemb, new, old_grid=old, method=method)
    expected = field(*new).reshape(new[0], new[1], 4)[1:-1, 1:-1]
    got = out[0, 1:].reshape(new[0], new[1], 4)[1:-1, 1:-1]
    np.testing.assert_allclose(got, expected, atol=tolerance)
    np.testing.assert_array_equal(out[0, 0], 7.0)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_matches_the_dynamic_path_of_position_embedding(method):
    layer = PositionEmbedding((4, 6), interpolation=method)
    layer.build((None, 25, 8))
    tokens = np.zeros((1, 1 + 7 * 5, 8), "float32")
    dynamic = to_numpy(layer(tokens, grid_size=(7, 5)))
    utility = finetune.resize_position_embeddings(
        to_numpy(layer.embeddings), (7, 5), old_grid=(4, 6), method=method)
    np.testing.assert_array_equal(dynamic, utility)


def test_matches_a_numpy_reference():
    # The same numbers on every backend: the suite runs under each one, and
    # each is held to this float64 NumPy computation.
    from keras_vit.interpolation import resize_matrix

    posemb = _posemb(1, (5, 3))
    rows = resize_matrix(5, 8, "bicubic", True).astype(np.float64)
    cols = resize_matrix(3, 4, "bicubic", True).astype(np.float64)
    grid = posemb[0, 1:].reshape(5, 3, 8).astype(np.float64)
    expected = np.einsum("ih,hwd,jw->ijd", rows, grid, cols).reshape(32, 8)
    out = finetune.resize_position_embeddings(posemb, (8, 4), old_grid=(5, 3))
    np.testing.assert_allclose(out[0, 1:], expected, atol=1e-6)


def test_float16_input_is_computed_in_float32_and_returned_as_float16():
    posemb = _posemb(1, (4, 4))
    out16 = finetune.resize_position_embeddings(posemb.astype("float16"), (6, 6))
    out32 = finetune.resize_position_embeddings(posemb, (6, 6))
    assert out16.dtype == np.float16
    np.testing.assert_allclose(out16, out32, atol=2e-3)


def test_non_square_length_without_old_grid():
    with pytest.raises(ValueError, match=r"length 21 with 1 prefix tokens hold 20 grid "
                                         r"positions, which is not a square grid"):
        finetune.resize_position_embeddings(_posemb(1, (4, 5)), (8, 8))


def test_old_grid_that_does_not_match_the_length():
    with pytest.raises(ValueError, match=r"length 17 with 1 prefix tokens hold 16 grid "
                                         r"positions, but old_grid \(3, 5\) has 15"):
        finetune.resize_position_embeddings(_posemb(1, (4, 4)), 8, old_grid=(3, 5))


def test_bad_shapes_and_arguments():
    with pytest.raises(ValueError, match=r"received shape \(2, 17, 8\)"):
        finetune.resize_position_embeddings(np.zeros((2, 17, 8)), 4)
    with pytest.raises(ValueError, match=r"received shape \(17,\)"):
        finetune.resize_position_embeddings(np.zeros((17,)), 4)
    with pytest.raises(ValueError, match=r"Unknown interpolation method 'nearest'"):
        finetune.resize_position_embeddings(_posemb(1, (4, 4)), 8, method="nearest")
    with pytest.raises(ValueError, match=r"new_grid must hold positive integers"):
        finetune.resize_position_embeddings(_posemb(1, (4, 4)), (0, 3))
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be an integer >= 0, received "):
        finetune.resize_position_embeddings(_posemb(1, (4, 4)), 8, num_prefix_tokens=-1)


# -- adapt ------------------------------------------------------------------------------------

import keras  # noqa: E402

import keras_vit  # noqa: E402


def _trained_like(model, seed=1):
    """Gives every weight distinct non-zero values, as after training."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in model.weights])
    return model


def _images(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, *size, 3)).astype("float32")


def _by_name(model):
    return {w.path: to_numpy(w) for w in model.weights}


def test_adapt_new_resolution_and_head():
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=10,
                                        representation_size=8))
    tuned = finetune.adapt(model, image_size=(24, 32), num_classes=3)
    assert tuned.input_shape == (None, 24, 32, 3) and tuned.output_shape == (None, 3)
    assert tuned.name == model.name
    names = [layer.name for layer in tuned.layers]
    assert "pre_logits" not in names and names[-1] == "head"
    np.testing.assert_array_equal(to_numpy(tuned.get_layer("head").kernel), np.zeros((32, 3)))
    np.testing.assert_array_equal(to_numpy(tuned.get_layer("head").bias), np.zeros(3))
    expected = finetune.resize_position_embeddings(
        model.get_layer("position_embedding").embeddings, (6, 8), old_grid=(4, 4))
    np.testing.assert_array_equal(
        to_numpy(tuned.get_layer("position_embedding").embeddings), expected)
    before, after = _by_name(model), _by_name(tuned)
    copied = [path for path in after
              if not path.startswith(("head/", "position_embedding/"))]
    assert len(copied) == len(model.weights) - 5  # posemb, pre_logits and head kernels/biases
    for path in copied:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    # The original is untouched.
    assert model.input_shape == (None, 16, 16, 3)
    assert model.get_layer("position_embedding").embeddings.shape == (1, 17, 32)


def test_adapt_resolution_only_keeps_the_head():
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=10,
                                        representation_size=8))
    tuned = finetune.adapt(model, image_size=20)
    before, after = _by_name(model), _by_name(tuned)
    assert sorted(before) == sorted(after)
    for path in after:
        if not path.startswith("position_embedding/"):
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert tuned.get_layer("position_embedding").embeddings.shape == (1, 26, 32)


@pytest.mark.parametrize("pooling", ["token", "gap"])
@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_adapted_model_computes_what_the_dynamic_path_computes(pooling, method):
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=5, pooling=pooling))
    model.get_layer("position_embedding").interpolation = method
    tuned = finetune.adapt(model, image_size=(28, 20))
    images = _images((28, 20))
    # The original's layers on the larger images: PositionEmbedding resizes on the fly.
    x = images
    for layer in model.layers[1:]:
        x = layer(x, grid_size=(7, 5)) if layer.name == "position_embedding" else layer(x)
    np.testing.assert_allclose(to_numpy(tuned(images)), to_numpy(x), atol=1e-5)


def test_same_size_adapt_reproduces_the_model():
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=4))
    tuned = finetune.adapt(model)
    images = _images((16, 16))
    np.testing.assert_array_equal(to_numpy(tuned(images)), to_numpy(model(images)))


def test_reinitialized_position_embeddings():
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=4))
    keras.utils.set_random_seed(3)
    tuned = finetune.adapt(model, image_size=24, position_embeddings="reinitialize")
    posemb = to_numpy(tuned.get_layer("position_embedding").embeddings)
    assert posemb.shape == (1, 37, 32)
    # Fresh draws from N(0, 0.02), nothing like the trained N(0, 0.1) values.
    assert 0.015 < posemb.std() < 0.025
    np.testing.assert_array_equal(to_numpy(tuned.get_layer("head").kernel),
                                  to_numpy(model.get_layer("head").kernel))


def test_adapt_without_top_attaches_a_zero_head():
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, include_top=False))
    tuned = finetune.adapt(model, num_classes=7)
    assert tuned.output_shape == (None, 7)
    np.testing.assert_array_equal(to_numpy(tuned(_images((16, 16)))), np.zeros((2, 7)))


def test_adapted_model_saves_and_loads(tmp_path):
    model = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=10))
    tuned = finetune.adapt(model, image_size=24, num_classes=3)
    _trained_like(tuned, seed=5)
    path = str(tmp_path / "tuned.keras")
    tuned.save(path)
    loaded = keras.saving.load_model(path)
    images = _images((24, 24))
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(tuned(images)), atol=1e-6)


def test_vit_weights_from_a_model_of_another_size_and_head(tmp_path):
    source = _trained_like(keras_vit.ViT("mu/4", image_size=16, num_classes=10,
                                         representation_size=8))
    path = str(tmp_path / "pretrained.keras")
    source.save(path)
    model = keras_vit.ViT("mu/4", image_size=(24, 20), num_classes=3, weights=path)
    expected = finetune.adapt(source, image_size=(24, 20), num_classes=3)
    assert len(model.weights) == len(expected.weights)
    for got, want in zip(model.weights, expected.weights):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want), err_msg=got.path)


def test_vit_weights_of_another_architecture_is_refused(tmp_path):
    path = str(tmp_path / "other.keras")
    keras_vit.ViT("mu/8", image_size=16, num_classes=10).save(path)
    with pytest.raises(ValueError, match=r"holds a model of another architecture than "
                                         r"vit_mu4.*\(8, 8, 3, 32\) found, \(4, 4, 3, 32\) "
                                         r"expected"):
        keras_vit.ViT("mu/4", image_size=16, num_classes=10, weights=path)


def test_adapt_bad_input():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    with pytest.raises(ValueError, match=r"image_size 18: height 18 is not a multiple of 4, "
                                         r"the patch stride of 'vit_mu4'"):
        finetune.adapt(model, image_size=18)
    with pytest.raises(ValueError, match=r"image_size \(16, 30\): width 30 is not a multiple"):
        finetune.adapt(model, image_size=(16, 30))
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer, "
                                         r"received 0"):
        finetune.adapt(model, num_classes=0)
    with pytest.raises(ValueError, match=r"Unknown position_embeddings 'random': expected "
                                         r"one of interpolate, reinitialize"):
        finetune.adapt(model, position_embeddings="random")
    with pytest.raises(ValueError, match=r"Unknown interpolation method 'area'"):
        finetune.adapt(model, image_size=24, method="area")
    cnn = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3)], name="cnn")
    with pytest.raises(ValueError, match=r"Model 'cnn' is not a keras_vit ViT"):
        finetune.adapt(cnn, image_size=24)
    with pytest.raises(ValueError, match=r"Expected a keras_vit ViT .*received ndarray"):
        finetune.adapt(np.zeros(3), image_size=24)
