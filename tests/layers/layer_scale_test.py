import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import LayerScale


def test_standard_checks():
    run_layer_test(
        LayerScale,
        dict(init_value=0.1),
        input_shape=(2, 17, 32),
        expected_output_shape=(2, 17, 32),
        expected_num_trainable_weights=1,
        expected_num_params=32,
    )


def test_scales_each_channel_by_its_gamma():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 8))
    layer = LayerScale()
    layer.build(x.shape)
    gamma = rng.standard_normal(8)
    layer.gamma.assign(gamma)
    expected = x * gamma  # float64 reference of gamma * x, per channel
    out = to_numpy(layer(x.astype("float32")))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # The comparison can fail: the transposed order of channels is not it.
    assert not np.allclose(out, x * gamma[::-1], atol=1e-3)
    assert layer.gamma.path.endswith("gamma")


def test_initial_value():
    layer = LayerScale(init_value=0.25)
    layer.build((None, 4, 6))
    np.testing.assert_array_equal(to_numpy(layer.gamma), np.full((6,), 0.25))
    np.testing.assert_allclose(to_numpy(LayerScale()(np.ones((1, 2), "float32"))), 1e-5)


@pytest.mark.parametrize("value", ["0.1", None, True, float("nan")])
def test_rejects_an_init_value_that_is_not_a_number(value):
    with pytest.raises(ValueError) as info:
        LayerScale(init_value=value)
    assert str(info.value) == f"init_value must be a number in [-inf, inf), received {value!r}"


def test_needs_a_known_width():
    with pytest.raises(ValueError, match=r"width\) dimension of the inputs must be known"):
        LayerScale().build((None, 4, None))
