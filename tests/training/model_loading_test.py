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


def test_refuses_a_truncated_a_foreign_and_an_incomplete_file_naming_it(tmp_path):
    import zipfile

    model = keras_vit.ViT("mu/4", image_size=8, num_classes=3, num_channels=1)
    saved = tmp_path / "model.keras"
    model.save(str(saved))
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    foreign = tmp_path / "foreign.keras"
    foreign.write_bytes(b"<html>not found</html>")
    for path in (truncated, foreign):
        with pytest.raises(ValueError) as error:
            load_model(path)
        assert str(error.value) == (f"model file {str(path)!r} is not a .keras archive: it is "
                                    "not a zip file (truncated, or another format)")
    # A zip archive without the model's config.
    incomplete = tmp_path / "incomplete.keras"
    with zipfile.ZipFile(incomplete, "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(ValueError, match=rf"model file {str(incomplete)!r} is damaged: KeyError: "):
        load_model(incomplete)
