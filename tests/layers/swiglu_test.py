import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import SwiGLU


def test_standard_checks():
    # fc1 (32*48 + 48) + fc2 (24*16 + 16) = 1,984 parameters in 4 weights.
    run_layer_test(
        SwiGLU,
        dict(hidden_dim=24, output_dim=16),
        input_shape=(2, 5, 32),
        expected_output_shape=(2, 5, 16),
        expected_num_trainable_weights=4,
        expected_num_params=1984,
    )


def _silu(x):
    return x / (1 + np.exp(-x))


def test_matches_the_gated_mlp_equation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 16))
    layer = SwiGLU(hidden_dim=12)
    layer.build(x.shape)
    w = {}
    for v in layer.weights:
        w[v.path.split("/", 1)[1]] = rng.standard_normal(v.shape) * 0.5
        v.assign(w[v.path.split("/", 1)[1]])
    # Packed fc1: the first H columns are the gate, the next H the value.
    w1, b1 = w["fc1/kernel"], w["fc1/bias"]
    gate = x @ w1[:, :12] + b1[:12]
    value = x @ w1[:, 12:] + b1[12:]
    expected = (_silu(gate) * value) @ w["fc2/kernel"] + w["fc2/bias"]
    out = to_numpy(layer(x.astype("float32")))
    assert out.shape == (3, 7, 16)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # The comparison can fail: the halves swapped (value gated) are not it.
    swapped = (_silu(value) * gate) @ w["fc2/kernel"] + w["fc2/bias"]
    assert not np.allclose(out, swapped, atol=1e-2)


def test_weight_names_and_shapes():
    layer = SwiGLU(hidden_dim=4096)
    layer.build((None, 257, 1536))  # DINOv2-g
    shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in layer.weights}
    assert shapes == {
        "fc1/kernel": (1536, 8192), "fc1/bias": (8192,),
        "fc2/kernel": (4096, 1536), "fc2/bias": (1536,),
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_dim=0), "hidden_dim must be a positive integer, received 0"),
        (dict(hidden_dim=8.0), "hidden_dim must be a positive integer, received 8.0"),
        (dict(hidden_dim=8, output_dim=-1),
         "output_dim must be a positive integer or None, received -1"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as info:
        SwiGLU(**kwargs)
    assert str(info.value) == message
