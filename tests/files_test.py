import os

import pytest

from keras_vit.files import atomic_write


def test_atomic_write_replaces_only_a_complete_file(tmp_path):
    path = tmp_path / "sub" / "model.weights.h5"
    with atomic_write(path) as temporary:
        assert temporary.endswith(".weights.h5") and not os.path.exists(path)
        with open(temporary, "w") as f:
            f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with atomic_write(path) as temporary:
            with open(temporary, "w") as f:
                f.write("half")
            raise RuntimeError("killed mid-write")
    # The old file is kept, and no temporary is left beside it.
    assert path.read_text() == "first"
    assert os.listdir(path.parent) == ["model.weights.h5"]


def test_atomic_write_directory(tmp_path):
    path = tmp_path / "saved_model"
    for version in ("1", "2"):
        with atomic_write(path, directory=True) as temporary:
            os.makedirs(temporary)
            (open(os.path.join(temporary, "v"), "w")).write(version)
    assert (path / "v").read_text() == "2"
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
    with pytest.raises(OSError):
        with atomic_write(path, directory=True) as temporary:
            os.makedirs(temporary)
            raise OSError("disk full")
    assert (path / "v").read_text() == "2"
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
