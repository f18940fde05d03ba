import keras
import numpy as np
import pytest
from layer_testing import to_numpy

from keras_vit.layers import quick_gelu
from keras_vit.layers.activations import quick_gelu as defined_here


def test_matches_the_equation():
    x = np.linspace(-6, 6, 101)
    expected = x / (1 + np.exp(-1.702 * x))  # x * sigmoid(1.702 x), float64
    out = to_numpy(quick_gelu(x.astype("float32")))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # The comparison can fail: plain SiLU (slope 1) is not it.
    assert not np.allclose(out, x / (1 + np.exp(-x)), atol=1e-3)
    assert quick_gelu is defined_here


def test_keeps_bfloat16():
    out = quick_gelu(keras.ops.cast(np.array([1.0, -2.0]), "bfloat16"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"


def test_dense_activation_round_trips_through_get_config():
    layer = keras.layers.Dense(4, activation=quick_gelu)
    config = layer.get_config()
    assert "keras_vit>quick_gelu" in str(config["activation"])
    rebuilt = keras.layers.Dense.from_config(config)
    assert rebuilt.activation is quick_gelu
    assert keras.activations.get(config["activation"]) is quick_gelu


def test_dense_activation_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(4, activation=quick_gelu)(inputs))
    path = str(tmp_path / "quick_gelu.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.layers[-1].activation is quick_gelu
    x = np.random.default_rng(0).standard_normal((2, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6)


@pytest.mark.parametrize("name", ["quick_gelu"])
def test_is_exported(name):
    import keras_vit.layers

    assert name in keras_vit.layers.__all__
