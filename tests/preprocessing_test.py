"""Tests of keras_vit/preprocessing.py: resize, center crop and scale, on every backend."""

import numpy as np
import pytest
from keras import ops

from keras_vit.preprocessing import preprocess_images


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def _framed(size=64, border=16):
    """A white square on a black frame `border` pixels wide."""
    image = np.zeros((size, size, 3), "uint8")
    image[border:size - border, border:size - border] = 255
    return image


def test_center_crop_keeps_the_middle_and_scales_to_minus_one_one():
    # Shorter side 64 = 32 / 0.5: no resize, the central 32x32 is exactly the white square.
    out = _numpy(preprocess_images(_framed(), image_size=32, crop_fraction=0.5))
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.ones_like(out))
    # Without a crop the black frame is in the picture: its corners are -1.
    whole = _numpy(preprocess_images(_framed(), image_size=32))
    assert whole[0, 0, 0, 0] == -1.0 and whole[0, 16, 16, 0] == 1.0


def test_aspect_ratio_kept_when_cropping():
    # 40x80, crop 0.5 at 16: shorter side -> 32, so 32x64, then the central 16x16. The right
    # half of the image is white: the crop straddles the middle, half black, half white.
    image = np.zeros((40, 80, 3), "uint8")
    image[:, 40:] = 255
    out = _numpy(preprocess_images(image, image_size=16, crop_fraction=0.5, rescale=False))
    assert out.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(out[0, :, :7], 0.0, atol=1e-3)
    np.testing.assert_allclose(out[0, :, 9:], 255.0, atol=1e-3)


def test_a_list_of_sizes_becomes_one_batch_in_range():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3)).astype("uint8") for h, w in ((30, 50), (224, 100))]
    out = _numpy(preprocess_images(images, image_size=(24, 20)))
    assert out.shape == (2, 24, 20, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0
    # A float batch at the target size passes through unresized: only scaled.
    batch = rng.uniform(0, 255, (2, 24, 20, 3)).astype("float32")
    np.testing.assert_allclose(_numpy(preprocess_images(batch, image_size=(24, 20))),
                               batch / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=16, crop_fraction=0.0), r"crop_fraction must be a number in \(0, 1\], "
     r"received 0.0"),
    (dict(), "image_size is unset: pass image_size or a preset"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        preprocess_images(np.zeros((8, 8, 3)), **kwargs)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"images of shape \(8, 8\): expected"):
        preprocess_images(np.zeros((8, 8)), image_size=4)
