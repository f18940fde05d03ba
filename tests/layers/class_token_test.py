import numpy as np
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import ClassToken


def test_standard_checks():
    run_layer_test(
        ClassToken,
        dict(initializer="ones"),
        input_shape=(2, 16, 32),
        expected_output_shape=(2, 17, 32),
        expected_num_trainable_weights=1,
        expected_num_params=32,
    )


def test_prepends_the_token_and_keeps_the_sequence():
    tokens = np.random.default_rng(0).standard_normal((3, 5, 4)).astype("float32")
    layer = ClassToken(initializer="random_normal")
    out = to_numpy(layer(tokens))
    token = to_numpy(layer.token)[0, 0]
    np.testing.assert_array_equal(out[:, 1:], tokens)
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(token, (3, 4)))


def test_default_initializer_is_zeros():
    layer = ClassToken()
    layer.build((None, 4, 8))
    np.testing.assert_array_equal(to_numpy(layer.token), np.zeros((1, 1, 8)))
