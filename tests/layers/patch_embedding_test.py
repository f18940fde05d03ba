import keras
import numpy as np
import pytest
from layer_testing import run_layer_test, to_numpy

from keras_vit.layers import PatchEmbedding


def test_standard_checks_non_square():
    # 16x24 image, 4x4 patches: a 4x6 grid of 24 patches; weights are the
    # (4, 4, 3, 32) kernel and the bias: 4*4*3*32 + 32 = 1568 parameters.
    run_layer_test(
        PatchEmbedding,
        dict(patch_size=4, hidden_dim=32, kernel_initializer="he_uniform",
             bias_initializer="ones"),
        input_shape=(2, 16, 24, 3),
        expected_output_shape=(2, 24, 32),
        expected_num_trainable_weights=2,
        expected_num_params=1568,
    )


def test_is_a_linear_projection_of_row_major_patches():
    rng = np.random.default_rng(0)
    patch, dim = 4, 8
    images = rng.standard_normal((2, 8, 12, 3)).astype("float32")
    layer = PatchEmbedding(patch, dim, bias_initializer="random_normal")
    out = to_numpy(layer(images))
    kernel = to_numpy(layer.projection.kernel).reshape(patch * patch * 3, dim)
    bias = to_numpy(layer.projection.bias)
    # (B, gh, P, gw, P, C) -> (B, gh, gw, P, P, C) -> (B, N, P*P*C)
    patches = images.reshape(2, 2, patch, 3, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    expected = patches.reshape(2, 6, patch * patch * 3) @ kernel + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_size_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match=r"Image width 18 .* not divisible by patch_size 4"):
        PatchEmbedding(4, 8)(np.zeros((1, 16, 18, 3), "float32"))


def test_wrong_channel_count_after_build():
    layer = PatchEmbedding(4, 8)
    layer(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match=r"built for images with 3 channels.*\(1, 8, 8, 1\)"):
        layer(np.zeros((1, 8, 8, 1), "float32"))


@pytest.mark.parametrize("bad", [0, -4, 2.5, "4"])
def test_bad_patch_size(bad):
    with pytest.raises(ValueError, match="patch_size must be a positive integer"):
        PatchEmbedding(bad, 8)


def test_rejects_non_image_input():
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\)"):
        PatchEmbedding(4, 8)(np.zeros((2, 16, 3), "float32"))
    assert keras.ops.shape(PatchEmbedding(4, 8)(np.zeros((1, 4, 4, 1))))[1] == 1


def test_without_bias():
    # CLIP's patch embedding: the (4, 4, 3, 32) kernel alone, 1536 parameters.
    run_layer_test(
        PatchEmbedding,
        dict(patch_size=4, hidden_dim=32, use_bias=False),
        input_shape=(2, 16, 24, 3),
        expected_output_shape=(2, 24, 32),
        expected_num_trainable_weights=1,
        expected_num_params=1536,
    )
