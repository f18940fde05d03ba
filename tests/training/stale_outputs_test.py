"""metrics.json is only ever beside the outputs it describes; killed writers' temporaries go."""

import json
import os

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training binary needs the TensorFlow backend")


def test_a_rerun_that_fails_while_exporting_leaves_no_old_metrics(
        tmp_path, tfds_data_dir, tiny_config, monkeypatch):
    from training import export, train

    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config(tfds_data_dir, export=True), str(workdir))
    assert json.loads((workdir / "metrics.json").read_text())["global_step"] == 6
    # What SIGKILLs in the middle of writing left (atomic_write's names, dead pids).
    (workdir / ".model.999999999.tmp.keras").write_bytes(b"half")
    (workdir / ".saved_model.999999998.tmp" / "variables").mkdir(parents=True)

    # A longer rerun that dies exporting (the disk full, or a kill, mid-SavedModel).
    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "export_saved_model", fail)
    with pytest.raises(OSError, match="No space left on device"):
        train.train_and_evaluate(tiny_config(tfds_data_dir, export=True, train_steps=9),
                                 str(workdir))
    # model.keras is the new run's (step 9), saved_model/ the old one's: no metrics.json claims
    # either is complete; the temporaries of the dead processes are gone.
    assert sorted(os.listdir(workdir)) == [
        ".lock", "checkpoints", "config.json", "logs", "model.keras", "saved_model"]

    monkeypatch.undo()
    _, metrics = train.train_and_evaluate(
        tiny_config(tfds_data_dir, export=True, train_steps=9), str(workdir))
    assert metrics["global_step"] == 9 and metrics["resumed_from_step"] == 9
    assert json.loads((workdir / "metrics.json").read_text())["global_step"] == 9
