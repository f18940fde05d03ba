import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy
from resnet_reference import numpy_unit

from keras_vit.layers import BottleneckUnit
from keras_vit.layers.resnet import resnet_stem, stem_stride


def test_standard_checks_with_projection():
    # 16 -> 4*8 = 32 channels, stride 2 on a 9x6 map: (5, 3).
    # Params: conv1 16*8, conv2 9*8*8, conv3 8*32, proj 16*32 (= 1472)
    # + GroupNorm scale and bias: 2*(8 + 8 + 32 + 32) (= 160) -> 1632.
    run_layer_test(
        BottleneckUnit,
        dict(filters=8, strides=2, groups=4, epsilon=1e-5,
             kernel_initializer="he_normal"),
        input_shape=(2, 9, 6, 16),
        expected_output_shape=(2, 5, 3, 32),
        expected_num_trainable_weights=12,
        expected_num_params=1632,
    )


def test_standard_checks_identity_shortcut():
    # Input already 4 * filters channels, stride 1: no projection.
    # conv1 32*8 + conv2 9*8*8 + conv3 8*32 + GN 2*(8 + 8 + 32) = 1184.
    layer = run_layer_test(
        BottleneckUnit,
        dict(filters=8, groups=2),
        input_shape=(2, 5, 5, 32),
        expected_output_shape=(2, 5, 5, 32),
        expected_num_trainable_weights=9,
        expected_num_params=1184,
    )
    assert layer.conv_proj is None and layer.gn_proj is None


@pytest.mark.parametrize("strides,shape", [(2, (2, 7, 6, 16)), (1, (1, 4, 5, 32)),
                                           (1, (1, 4, 4, 8))])
def test_matches_numpy_reference_unit(strides, shape):
    rng = np.random.default_rng(0)
    unit = BottleneckUnit(8, strides=strides, groups=4)
    x = rng.standard_normal(shape).astype("float32")
    unit.build(x.shape)
    for w in unit.weights:  # GN3's zero scale would hide the residual branch
        w.assign(rng.normal(0.3, 1.0, w.shape).astype("float32"))
    expected = numpy_unit(unit, x.astype("float64"))
    out = to_numpy(unit(x))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_sublayer_names_and_initial_state():
    unit = BottleneckUnit(32)
    unit.build((None, 8, 8, 64))
    names = {w.path.split("/")[-2] + "/" + w.name for w in unit.weights}
    assert names == {f"{layer}/{var}" for layer in ("conv1", "conv2", "conv3", "conv_proj")
                     for var in ("kernel",)} | {
        f"{layer}/{var}" for layer in ("gn1", "gn2", "gn3", "gn_proj")
        for var in ("gamma", "beta")}
    assert tuple(unit.conv2.kernel.shape) == (3, 3, 32, 32)
    assert tuple(unit.conv_proj.kernel.shape) == (1, 1, 64, 128)
    # GN3's scale starts at zero (reference): the unit starts as ReLU(shortcut).
    np.testing.assert_array_equal(to_numpy(unit.gn3.gamma), 0.0)
    np.testing.assert_array_equal(to_numpy(unit.gn1.gamma), 1.0)
    assert unit.gn1.epsilon == 1e-6 and unit.gn1.groups == 32


def test_stem_layers_and_shapes():
    images = keras.Input((64, 48, 3))
    features = resnet_stem(images, units=(2, 1, 1), width=32)
    # 64x48 -> root conv /2 -> pool /2 -> stage 2 /2 -> stage 3 /2: 4x3.
    assert tuple(features.shape) == (None, 4, 3, 4 * 32 * 4)
    model = keras.Model(images, features)
    names = [layer.name for layer in model.layers[1:]]
    assert names == ["conv_root", "gn_root", "root_relu", "root_pool", "block1_unit1",
                     "block1_unit2", "block2_unit1", "block3_unit1"]
    strides = [model.get_layer(n).strides for n in names[4:]]
    assert strides == [1, 1, 2, 2]
    # Every stage's first unit projects (stage 1: 32 -> 128 channels), others do not.
    assert [model.get_layer(n).conv_proj is not None for n in names[4:]] == [True, False,
                                                                            True, True]
    assert tuple(model.get_layer("conv_root").kernel.shape) == (7, 7, 3, 32)
    assert stem_stride((2, 1, 1)) == 16 and stem_stride((3, 4, 6, 3)) == 32


def test_stem_max_pool_uses_same_padding():
    # 18 -> conv /2 -> 9 -> pool 3x3/2 "same" -> 5 (not 4, as "valid" would give).
    features = resnet_stem(keras.Input((18, 18, 3)), units=(1,), width=32)
    assert tuple(features.shape) == (None, 5, 5, 128)


@pytest.mark.parametrize("kwargs,match", [
    (dict(filters=8, groups=3), r"filters 8 is not divisible by groups 3"),
    (dict(filters=-1), r"filters must be a positive integer, received -1"),
    (dict(filters=32, strides=0), r"strides must be a positive integer, received 0"),
    (dict(filters=32, epsilon=-1e-6), r"epsilon must be a number in \(0, inf\), received -1e-06"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BottleneckUnit(**kwargs)


@pytest.mark.parametrize("units,width,match", [
    ((), 64, r"ResNet units must be a non-empty sequence of positive integers.*\(\)"),
    ((3, 0), 64, r"units per stage\), received \(3, 0\)"),
    ("349", 64, r"received '349'"),
    ((1,), 48, r"ResNet width must be a positive multiple of 32 \(the GroupNorm groups\), "
               r"received 48"),
])
def test_bad_stem_arguments(units, width, match):
    with pytest.raises(ValueError, match=match):
        resnet_stem(keras.Input((32, 32, 3)), units=units, width=width)
