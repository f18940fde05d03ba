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
    with pytest.raises(ValueError, match=r"num_prefix_tokens must be a non-negative integer"):
        finetune.resize_position_embeddings(_posemb(1, (4, 4)), 8, num_prefix_tokens=-1)
