import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import TokenPooling


def test_standard_checks():
    run_layer_test(
        TokenPooling,
        dict(pooling="gap", num_prefix_tokens=1),
        input_shape=(2, 17, 32),
        expected_output_shape=(2, 32),
        expected_num_trainable_weights=0,
    )


def test_token_and_gap_values():
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(to_numpy(TokenPooling("token")(x)), x[:, 0])
    np.testing.assert_allclose(
        to_numpy(TokenPooling("gap", num_prefix_tokens=1)(x)),
        x[:, 1:].mean(axis=1),
        rtol=1e-6,
    )


def test_unknown_pooling():
    with pytest.raises(ValueError, match=r"Unknown pooling 'max'.*\['token', 'gap'\]"):
        TokenPooling("max")
