import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import PositionEmbedding


def test_standard_checks():
    # 1 prefix + 4*6 grid rows of width 32.
    run_layer_test(
        PositionEmbedding,
        dict(grid_size=[4, 6], num_prefix_tokens=1, initializer="ones",
             interpolation="bilinear", antialias=False),
        input_shape=(2, 25, 32),
        expected_output_shape=(2, 25, 32),
        expected_num_trainable_weights=1,
        expected_num_params=25 * 32,
    )


def test_adds_the_embeddings_and_initializes_with_std_002():
    layer = PositionEmbedding(grid_size=16)
    tokens = np.random.default_rng(0).standard_normal((2, 257, 64)).astype("float32")
    out = to_numpy(layer(tokens))
    embeddings = to_numpy(layer.embeddings)
    assert embeddings.shape == (1, 257, 64)
    np.testing.assert_allclose(out, tokens + embeddings, rtol=1e-6)
    assert abs(embeddings.std() - 0.02) < 0.002
    assert abs(embeddings.mean()) < 0.002


def test_same_grid_is_bit_exact():
    layer = PositionEmbedding(grid_size=(3, 5), num_prefix_tokens=1)
    layer.build((None, 16, 8))
    assert layer.embeddings_for_grid((3, 5)) is layer.embeddings


def test_resizes_on_the_fly_and_keeps_prefix_rows():
    layer = PositionEmbedding(grid_size=(4, 4), num_prefix_tokens=1)
    layer(np.zeros((1, 17, 8), "float32"))
    out = to_numpy(layer(np.zeros((2, 37, 8), "float32")))  # inferred 6x6
    assert out.shape == (2, 37, 8)
    np.testing.assert_array_equal(out[0, 0], to_numpy(layer.embeddings)[0, 0])
    # Non-square target grids need the grid named.
    out = to_numpy(layer(np.zeros((1, 1 + 3 * 7, 8), "float32"), grid_size=(3, 7)))
    assert out.shape == (1, 22, 8)
    # The stored weights keep their built shape.
    assert tuple(layer.embeddings.shape) == (1, 17, 8)


def test_resize_keeps_constant_and_linear_ramps():
    # Rows of the interpolation matrices sum to one: a constant grid stays
    # constant; bilinear upsampling reproduces a linear ramp away from edges.
    layer = PositionEmbedding(grid_size=(4, 4), num_prefix_tokens=0,
                              initializer="ones")
    layer.build((None, 16, 3))
    resized = to_numpy(layer.embeddings_for_grid((7, 9)))
    np.testing.assert_allclose(resized, np.ones((1, 63, 3)), rtol=1e-6)


@pytest.mark.parametrize("method,jax_method", [("bicubic", "cubic"), ("bilinear", "linear")])
@pytest.mark.parametrize("new_grid", [(6, 6), (3, 5), (4, 4), (2, 2)])
def test_resize_matches_jax_image_resize(method, jax_method, new_grid):
    """Same numbers as jax.image.resize (half-pixel, antialiased), on every backend."""
    jax = pytest.importorskip("jax")
    layer = PositionEmbedding(grid_size=(4, 4), num_prefix_tokens=1,
                              interpolation=method)
    layer.build((None, 17, 5))
    embeddings = to_numpy(layer.embeddings)
    resized = to_numpy(layer.embeddings_for_grid(new_grid))
    grid = embeddings[0, 1:].reshape(4, 4, 5)
    expected = np.asarray(
        jax.image.resize(grid, new_grid + (5,), method=jax_method, antialias=True)
    )
    assert resized.dtype == np.float32
    np.testing.assert_array_equal(resized[0, 0], embeddings[0, 0])
    np.testing.assert_allclose(
        resized[0, 1:].reshape(new_grid + (5,)), expected, rtol=1e-5, atol=1e-6
    )


def test_resize_in_float32_under_mixed_precision():
    layer = PositionEmbedding(grid_size=(2, 2), dtype="mixed_bfloat16")
    layer.build((None, 5, 4))
    resized = layer.embeddings_for_grid((3, 3))
    assert keras.backend.standardize_dtype(resized.dtype) == "float32"
    out = layer(np.zeros((1, 10, 4), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"


def test_errors():
    layer = PositionEmbedding(grid_size=(4, 4))
    layer.build((None, 17, 8))
    with pytest.raises(ValueError, match=r"cannot infer the patch grid of a sequence of 23 tokens"):
        layer(np.zeros((1, 23, 8), "float32"))
    with pytest.raises(ValueError, match=r"a \(3, 3\) grid with 1 prefix tokens needs 10 tokens"):
        layer(np.zeros((1, 17, 8), "float32"), grid_size=(3, 3))
    with pytest.raises(ValueError, match=r"grid_size must hold positive integers, received \(0, 4\)"):
        PositionEmbedding(grid_size=(0, 4))
    with pytest.raises(ValueError, match=r"grid_size must be an int or a pair"):
        PositionEmbedding(grid_size="4x4")
    with pytest.raises(ValueError, match=r"Unknown interpolation method 'nearest'"):
        PositionEmbedding(grid_size=4, interpolation="nearest")
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be an integer >= 0, received -1"):
        PositionEmbedding(grid_size=4, num_prefix_tokens=-1)
