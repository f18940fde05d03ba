"""A damaged newest checkpoint: reported by name with the reason, the run resumes from the one
before it; "does not match this run's model" only for a checkpoint of another model."""

import logging
import os
import re

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="the training binary needs the TensorFlow backend")

_DATA = "ckpt-{}.data-00000-of-00001"


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_truncated_then_zeroed_newest_checkpoint_falls_back_to_the_one_before(
        tmp_path, tfds_data_dir, tiny_config, caplog):
    from training import checkpointing, train

    workdir = tmp_path / "run"
    directory = workdir / "checkpoints"
    train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=9), str(workdir))

    # A copy cut short: half of ckpt-9's data file.
    data = directory / _DATA.format(9)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, metrics = train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=12),
                                              str(workdir))
    assert metrics["resumed_from_step"] == 6 and metrics["global_step"] == 12
    prefix = str(directory / "ckpt-9")
    assert (f"Checkpoint {prefix} cannot be read (IndexError: Read less bytes than requested); "
            "trying the one before it") in _warnings(caplog)
    assert (f"Resuming from {directory / 'ckpt-6'}, the newest readable checkpoint; skipped: "
            f"{prefix} (IndexError: Read less bytes than requested)") in _warnings(caplog)
    # The rerun saved ckpt-9 again, readable.
    assert checkpointing.unreadable_reason(prefix) is None

    # A disk error: ckpt-12's data zeroed, same length.
    data = directory / _DATA.format(12)
    data.write_bytes(bytes(data.stat().st_size))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, metrics = train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=15),
                                              str(workdir))
    assert metrics["resumed_from_step"] == 9 and metrics["global_step"] == 15
    prefix = re.escape(str(directory / "ckpt-12"))
    assert any(re.fullmatch(
        rf"Checkpoint {prefix} cannot be read \(OpError: TensorBundle at {prefix} shard 0 "
        r"\(\d+ bytes\): Checksum does not match: stored \d+ vs\. calculated on the restored "
        r"bytes \d+\); trying the one before it", message) for message in _warnings(caplog)), (
        _warnings(caplog))


def test_no_readable_checkpoint_and_an_unreadable_state_file(tmp_path, tfds_data_dir,
                                                             tiny_config, caplog):
    from training import checkpointing, train

    workdir = tmp_path / "run"
    directory = workdir / "checkpoints"
    train.train_and_evaluate(tiny_config(tfds_data_dir), str(workdir))
    # The state file empty, then not text: named in the warning, the newest complete checkpoint
    # on disk is used.
    for content in (b"", b"\xff\xfe\x00garbage"):
        (directory / "checkpoint").write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert checkpointing.latest_checkpoint(str(workdir)) == str(directory / "ckpt-6")
        assert any(m.startswith(f"Checkpoint state file {directory / 'checkpoint'} cannot be "
                                "read (") for m in _warnings(caplog)), _warnings(caplog)
    # Every checkpoint damaged: an error naming each, nothing restored, nothing written.
    for step in (3, 6):
        (directory / _DATA.format(step)).write_bytes(b"")
    with pytest.raises(ValueError) as error:
        train.train_and_evaluate(tiny_config(tfds_data_dir, train_steps=9), str(workdir))
    assert str(error.value) == (
        f"no checkpoint of {directory} can be read: {directory / 'ckpt-6'} (IndexError: Read "
        f"less bytes than requested); {directory / 'ckpt-3'} (IndexError: Read less bytes than "
        "requested). Move the directory away to start over, or use a new --workdir")
