"""Tests of training.model_loading: the binaries' loader of `--model=FILE.keras`."""

import keras
import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from training.model_loading import load_model


def test_loads_a_saved_vit_uncompiled_with_the_same_outputs(tmp_path):
    model = keras_vit.ViT("mu/4", image_size=8, num_classes=3, num_channels=1)
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "model.keras"
    model.save(str(path))
    loaded = load_model(path)
    assert isinstance(loaded, keras.Model) and not loaded.compiled
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded(images)), to_numpy(model(images)), atol=1e-6)


def test_refuses_a_path_that_is_not_a_keras_file(tmp_path):
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model '.*model\.h5' is not a \.keras file"):
        load_model(tmp_path / "model.h5")


def test_refuses_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"model file '.*missing\.keras' does not exist"):
        load_model(str(tmp_path / "missing.keras"))
