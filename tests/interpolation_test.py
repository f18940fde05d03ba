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
