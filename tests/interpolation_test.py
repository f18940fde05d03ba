import keras
import numpy as np
import pytest

from keras_vit import interpolation


@pytest.mark.parametrize("method", interpolation.METHODS)
@pytest.mark.parametrize("sizes", [(4, 7), (7, 4), (5, 5), (1, 3)])
def test_rows_sum_to_one(method, sizes):
    matrix = interpolation.resize_matrix(*sizes, method=method)
    assert matrix.shape == (sizes[1], sizes[0])
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=1e-6)


def test_same_size_is_identity():
    for method in interpolation.METHODS:
        np.testing.assert_allclose(
            interpolation.resize_matrix(6, 6, method), np.eye(6), atol=1e-7
        )


def test_bilinear_half_pixel_values():
    # 2 -> 4 samples, half-pixel centres: outputs sit at input coordinates
    # -0.25, 0.25, 0.75, 1.25; the outer two renormalize onto one sample.
    matrix = interpolation.resize_matrix(2, 4, "bilinear")
    np.testing.assert_allclose(
        matrix, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-7
    )


def test_unknown_method():
    with pytest.raises(ValueError, match=r"Unknown interpolation method 'area'"):
        interpolation.resize_matrix(2, 4, "area")


@pytest.mark.parametrize("in_size, out_size", [(37, 16), (8, 4), (4, 6), (5, 13), (16, 37)])
def test_pytorch_bicubic_is_pytorchs_plain_bicubic(in_size, out_size):
    # transformers' Dinov2Model resizes with F.interpolate(mode="bicubic", align_corners=False):
    # a = -0.75, taps clamped to the edge, no antialias. Both matrices (the cached one and the
    # one for a size known only at run time) give PyTorch's numbers.
    torch = pytest.importorskip("torch")
    grid = np.random.default_rng(0).normal(size=(1, 3, in_size, in_size))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(grid), size=(out_size, out_size), mode="bicubic",
        align_corners=False).numpy()
    for matrix in (interpolation.resize_matrix(in_size, out_size, "pytorch_bicubic"),
                   keras.ops.convert_to_numpy(interpolation.resize_matrix_tensor(
                       in_size, keras.ops.convert_to_tensor(out_size), "pytorch_bicubic"))):
        ours = np.einsum("ih,bchw,jw->bcij", matrix.astype("float64"), grid,
                         matrix.astype("float64"))
        # The matrices are float32: 1.2e-6 at most on these unit-scale grids.
        np.testing.assert_allclose(ours, expected, atol=1e-5)
    # Not the antialiased bicubic keras_vit uses by default: the comparison can fail.
    default = interpolation.resize_matrix(in_size, out_size)
    assert np.abs(default - interpolation.resize_matrix(in_size, out_size,
                                                        "pytorch_bicubic")).max() > 1e-2
