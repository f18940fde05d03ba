import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy
from resnet_reference import numpy_conv_same, numpy_standardize

from keras_vit.layers import StdConv2D


def test_standard_checks():
    # 3x3 kernel, 4 -> 6 channels, no bias: 3*3*4*6 = 216 parameters; the
    # 9x7 input with stride 2 and "same" padding gives a 5x4 output.
    run_layer_test(
        StdConv2D,
        dict(filters=6, kernel_size=3, strides=2, padding="same", epsilon=1e-4,
             kernel_initializer="he_uniform"),
        input_shape=(2, 9, 7, 4),
        expected_output_shape=(2, 5, 4, 6),
        expected_num_trainable_weights=1,
        expected_num_params=216,
    )


@pytest.mark.parametrize("kernel_size,stride,shape", [
    (7, 2, (2, 11, 8, 3)),  # the root conv, odd size: asymmetric padding
    (3, 1, (1, 5, 6, 4)),
    (1, 2, (2, 6, 5, 8)),  # a projection shortcut
])
def test_matches_numpy_standardization_and_conv(kernel_size, stride, shape):
    rng = np.random.default_rng(0)
    layer = StdConv2D(5, kernel_size, strides=stride)
    x = rng.standard_normal(shape).astype("float32")
    layer.build(x.shape)
    # A kernel far from standardized (offset, scale 3) so that both steps matter.
    raw = (3.0 * rng.standard_normal(layer.kernel.shape) + 0.7).astype("float32")
    layer.kernel.assign(raw)
    expected = numpy_conv_same(x.astype("float64"), numpy_standardize(raw.astype("float64"), 1e-5),
                               stride)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, rtol=1e-4, atol=1e-4)
    standardized = to_numpy(layer.standardized_kernel())
    np.testing.assert_allclose(standardized.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    # std(w) / (std(w) + eps): just under 1.
    stds = raw.std(axis=(0, 1, 2))
    np.testing.assert_allclose(standardized.std(axis=(0, 1, 2)), stds / (stds + 1e-5),
                               rtol=1e-5)
    # The stored kernel stays raw, as in the reference checkpoints.
    np.testing.assert_array_equal(to_numpy(layer.kernel), raw)


def test_epsilon_is_added_to_the_standard_deviation():
    # A kernel with std 1e-3 per channel: eps on the std gives 1e-3 / (1e-3 + 1e-2)
    # = 0.0909..., eps on the variance would give 1e-3 / sqrt(1e-6 + 1e-2) = 0.00999.
    layer = StdConv2D(1, 1, epsilon=1e-2)
    layer.build((1, 1, 1, 2))
    layer.kernel.assign(np.array([[[[1e-3], [-1e-3]]]], "float32"))
    np.testing.assert_allclose(to_numpy(layer.standardized_kernel()).ravel(),
                               [1e-3 / 1.1e-2, -1e-3 / 1.1e-2], rtol=1e-5)


def test_valid_padding_shapes():
    layer = StdConv2D(4, 3, strides=2, padding="valid")
    assert tuple(layer(np.zeros((1, 9, 8, 2), "float32")).shape) == (1, 4, 3, 4)
    assert layer.compute_output_shape((None, 9, 8, 2)) == (None, 4, 3, 4)


def test_mixed_bfloat16_standardizes_in_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 8, 4)).astype("float32")
    ref = StdConv2D(8, 3)
    ref.build(x.shape)
    raw = (rng.standard_normal(ref.kernel.shape) * 0.01 + 5.0).astype("float32")
    ref.kernel.assign(raw)
    mixed = StdConv2D(8, 3, dtype="mixed_bfloat16")
    mixed.build(x.shape)
    mixed.kernel.assign(raw)
    out = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(mixed.kernel.dtype) == "float32"
    # The kernel is 5 +- 0.01: in bfloat16 (8 bits of mantissa, steps of
    # 0.03 near 5) the deviations would vanish before standardization.
    np.testing.assert_allclose(to_numpy(keras.ops.cast(out, "float32")), to_numpy(ref(x)),
                               rtol=0.05, atol=0.15)


@pytest.mark.parametrize("kwargs,match", [
    (dict(filters=0, kernel_size=3), r"filters must be a positive integer, received 0"),
    (dict(filters=4, kernel_size=3, strides=1.5), r"strides must be a positive integer, received 1.5"),
    (dict(filters=4, kernel_size=3, padding="causal"), r"Unknown padding 'causal': expected one of same, valid"),
    (dict(filters=4, kernel_size=3, epsilon=0), r"epsilon must be a number in \(0, inf\), received 0"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StdConv2D(**kwargs)


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\).*\(2, 8, 3\)"):
        StdConv2D(4, 3)(np.zeros((2, 8, 3), "float32"))
