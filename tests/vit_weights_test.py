"""Tests of `keras_vit.ViT`'s `weights=` by URL and by preset name, and of raw-image input."""

import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints, downloads


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(downloads.MIRROR_ENV, raising=False)
    return home


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A mu/4 model at 16x16 with 3 classes, random non-zero weights, and its .npz bytes."""
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=3)
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path_factory.mktemp("npz") / "mu4_16.npz"
    checkpoints.save_npz(model, str(path))
    return model, path.read_bytes()


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
    assert (keras_home / "keras_vit" / "mu4_16.npz").read_bytes() == data


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
    np.testing.assert_allclose(np.asarray(raw.predict_on_batch(pixels)), expected, atol=1e-5)
    # The comparison can fail: unscaled pixels give other logits.
    assert not np.allclose(np.asarray(model.predict_on_batch(pixels.astype("float32"))),
                           expected, atol=1e-2)
