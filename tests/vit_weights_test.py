"""Tests of `keras_vit.ViT`'s `weights=` by URL and by preset name, and of raw-image input."""

import hashlib
import os

import numpy as np
import pytest

import keras_vit
from keras_vit import downloads

# Every test downloads into an empty Keras cache of its own (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("keras_home")


@pytest.fixture
def source(mu4_checkpoint):
    """(model, .npz bytes) of a mu/4 with random non-zero weights (tests/conftest.py)."""
    return mu4_checkpoint


def _images(n=2, size=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, size, size, 3)).astype("float32")


def test_weights_by_url_download_once_and_load_exactly(server, source, keras_home):
    model, data = source
    server.files["/ckpt/mu4_16.npz"] = data
    url = server.url("/ckpt/mu4_16.npz")
    loaded = keras_vit.ViT("mu/4", image_size=16, num_classes=3, weights=url)
    images = _images()
    np.testing.assert_allclose(
        np.asarray(loaded.predict_on_batch(images)), np.asarray(model.predict_on_batch(images)),
        atol=1e-5)
    keras_vit.ViT("mu/4", image_size=16, num_classes=3, weights=url)
    assert server.hits == {"/ckpt/mu4_16.npz": 1}
    cached = downloads.cache_path(url)  # keyed by the whole URL, under $KERAS_HOME/keras_vit
    assert cached.startswith(str(keras_home / "keras_vit") + os.sep)
    assert open(cached, "rb").read() == data


def test_weights_by_url_adapt_like_a_path(server, source):
    _, data = source
    server.files["/mu4_16.npz"] = data
    adapted = keras_vit.ViT("mu/4", image_size=24, num_classes=5,
                            weights=server.url("/mu4_16.npz"))
    assert adapted.get_layer("position_embedding").embeddings.shape == (1, 1 + 36, 32)
    head = adapted.get_layer("head")
    assert head.kernel.shape == (32, 5)
    assert not np.any(np.asarray(head.kernel)) and not np.any(np.asarray(head.bias))


def test_include_preprocessing_takes_raw_pixels(source):
    model, _ = source
    raw = keras_vit.ViT("mu/4", image_size=16, num_classes=3, include_preprocessing=True)
    raw.set_weights(model.get_weights())
    assert raw.layers[1].name == "preprocessing"
    pixels = np.random.default_rng(3).integers(0, 256, size=(2, 16, 16, 3)).astype("uint8")
    expected = np.asarray(model.predict_on_batch(pixels.astype("float32") / 127.5 - 1.0))
    # float32 logits of magnitude ~10: the Rescaling layer and NumPy round the inputs apart.
    np.testing.assert_allclose(np.asarray(raw.predict_on_batch(pixels)), expected,
                               rtol=1e-5, atol=1e-5)
    # The comparison can fail: unscaled pixels give other logits.
    assert not np.allclose(np.asarray(model.predict_on_batch(pixels.astype("float32"))),
                           expected, atol=1e-2)


@pytest.fixture
def mu_preset(server, source, monkeypatch):
    """A test-registered preset whose file is served by the loopback server."""
    from keras_vit import presets

    _, data = source
    server.files["/presets/mu4_16.npz"] = data
    preset = presets.Preset(
        name="test_mu4_16", variant="mu/4", image_size=16, num_classes=3, labels="test3",
        url=server.url("/presets/mu4_16.npz"), sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data))
    monkeypatch.setitem(presets.PRESETS, preset.name, preset)
    return preset


def test_a_preset_name_alone_builds_and_loads_its_architecture(mu_preset, source, server):
    model, _ = source
    loaded = keras_vit.ViT(weights="test_mu4_16")
    assert loaded.input_shape == (None, 16, 16, 3) and loaded.output_shape == (None, 3)
    images = _images(seed=1)
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(images)),
                               np.asarray(model.predict_on_batch(images)), atol=1e-5)
    # Adapted like any checkpoint: another resolution and head, from the cached file.
    adapted = keras_vit.ViT("mu/4", weights="test_mu4_16", image_size=32, num_classes=7,
                            include_preprocessing=True)
    assert adapted.output_shape == (None, 7) and adapted.input_shape == (None, 32, 32, 3)
    assert not np.any(np.asarray(adapted.get_layer("head").kernel))
    assert server.hits == {"/presets/mu4_16.npz": 1}


def test_a_variant_that_contradicts_the_preset_is_refused(mu_preset):
    with pytest.raises(ValueError) as error:
        keras_vit.ViT("Ti/16", weights="test_mu4_16")
    assert str(error.value) == (
        "variant 'Ti/16' contradicts weights 'test_mu4_16', a 'mu/4' checkpoint; leave variant "
        "unset or pass 'mu/4'")


def test_an_unknown_preset_name_lists_the_closest():
    with pytest.raises(ValueError, match=r"Unknown preset 'augreg_b16_i21k_i1k_22'; the closest "
                                         r"names are 'augreg_b16_i21k_i1k_224'"):
        keras_vit.ViT(weights="augreg_b16_i21k_i1k_22")
