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


def test_distilled_standard_checks():
    run_layer_test(
        TokenPooling,
        dict(pooling="distilled", num_prefix_tokens=2),
        input_shape=(2, 18, 32),
        expected_output_shape=(2, 64),
        expected_num_trainable_weights=0,
    )


def test_distilled_concatenates_the_class_and_distillation_tokens():
    x = np.random.default_rng(1).standard_normal((2, 6, 3)).astype("float32")
    got = to_numpy(TokenPooling("distilled", num_prefix_tokens=2)(x))
    np.testing.assert_array_equal(got, np.concatenate([x[:, 0], x[:, 1]], axis=-1))
    # One head on the pair with kernel [W_c; W_d] / 2 is the mean of the two heads.
    rng = np.random.default_rng(2)
    w_c, w_d = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(got @ (np.concatenate([w_c, w_d]) / 2),
                               (x[:, 0] @ w_c + x[:, 1] @ w_d) / 2, rtol=1e-5, atol=1e-6)


def test_unknown_pooling():
    with pytest.raises(ValueError, match=r"Unknown pooling 'max'.*\['token', 'gap', "
                                         r"'distilled'\]"):
        TokenPooling("max")
