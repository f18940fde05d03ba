import os

import pytest

from keras_vit.files import atomic_write

# Files only: tests/all_backends.sh runs this file under one backend.
pytestmark = pytest.mark.backend_independent


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


def test_remove_stale_temporaries_keeps_live_writers_and_other_files(tmp_path):
    import subprocess
    import sys

    from keras_vit.files import remove_stale_temporaries

    # A process that has exited: its pid is free (and not reused within this test).
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    live = os.getppid()
    names = [f".model.{dead}.tmp.keras", f".saved_model.{dead}.tmp", f".metrics.{live}.tmp.json",
             "model.keras", ".model.keras", f".model.{dead}.keras"]
    for name in names:
        (tmp_path / name).write_text("x")
    os.makedirs(tmp_path / f".ckpt.{dead}.tmp" / "variables")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(os.path.basename(p) for p in removed) == sorted(
        [f".ckpt.{dead}.tmp", f".model.{dead}.tmp.keras", f".saved_model.{dead}.tmp"])
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f".metrics.{live}.tmp.json", "model.keras", ".model.keras", f".model.{dead}.keras"])
    assert remove_stale_temporaries(tmp_path / "missing") == []
    # older_than: a dead pid's temporary written just now is kept, an old one removed.
    (tmp_path / f".a.{dead}.tmp").write_text("x")
    (tmp_path / f".b.{dead}.tmp").write_text("x")
    os.utime(tmp_path / f".b.{dead}.tmp", (0, 0))
    assert [os.path.basename(p) for p in remove_stale_temporaries(
        tmp_path, older_than=3600)] == [f".b.{dead}.tmp"]
