"""Training-state checkpoints: save, find and restore `model`, `optimizer`, `step` and `epoch`.

The state is a `tf.train.Checkpoint` of the Keras model and optimizer (Keras 3 models and
optimizers are trackable on the TensorFlow backend: every weight, the optimizer's moments and
iteration counter are saved and restored; `tests/training/resume_test.py` checks it number by
number) and two counters, written by a `tf.train.CheckpointManager` into `WORKDIR/checkpoints`.

Why a kill at any moment leaves a usable directory:
- A checkpoint's files (`ckpt-STEP.index`, `ckpt-STEP.data-*`) are written first; TensorFlow
  writes them under temporary names and renames them into place.
- Only then does the manager rewrite the small `checkpoint` state file that names the latest
  checkpoint, and it does so atomically (`atomic_write_string_to_file`: a temporary file, then a
  rename). Before that rename the state file still names the previous, complete checkpoint; a
  half-written `ckpt-STEP.*` is never named by it, and is overwritten by the next save of the same
  step.
- `latest_checkpoint` below also checks that the files the state file names exist, and otherwise
  falls back to the newest complete checkpoint on disk; a state file that cannot be read (empty,
  not text) is reported by name and skipped the same way.
- Files that are all there can still be damaged (a disk error, a copy cut short, bytes
  overwritten): `restore_latest` reports a checkpoint that cannot be read, by name and with the
  reason, and restores the newest one that can. Every tensor of a checkpoint carries a CRC32C,
  checked when it is read, so a damaged one fails to restore rather than restoring wrong numbers.

In a multi-worker cluster every worker must call `save` (saving distributed variables may need
collective operations), but only the chief writes to `WORKDIR`: the others save into a temporary
directory that is deleted at the end (the pattern of the TensorFlow multi-worker guide).
"""

import os
import re
import shutil
import tempfile

import tensorflow as tf
from absl import logging

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "ckpt"


def create_checkpoint(model, optimizer, step, epoch):
    """Returns the `tf.train.Checkpoint` of a run's state.

    Args:
        model: `keras.Model`.
        optimizer: `keras.optimizers.Optimizer`, already built for the model's variables, so that
            its slot variables exist and are restored directly rather than deferred.
        step: int64 `tf.Variable`, optimizer steps done.
        epoch: int64 `tf.Variable`, completed epochs.
    """
    return tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, epoch=epoch)


def latest_checkpoint(workdir):
    """Returns the path prefix of the newest complete checkpoint in `workdir`, or None."""
    candidates = complete_checkpoints(workdir)
    return candidates[0] if candidates else None


def complete_checkpoints(workdir):
    """The path prefixes of `workdir`'s complete checkpoints, newest first.

    The one the state file names comes first; then, newest first, every checkpoint whose index
    and data files are all there (the state file may be missing, unreadable, or name files that
    are gone: deleted by hand, or a directory copied mid-save).
    """
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not tf.io.gfile.isdir(directory):
        return []
    found = []
    named = _named_by_state_file(directory)
    if named is not None and _is_complete(named):
        found.append(named)
    steps = []
    for name in tf.io.gfile.listdir(directory):
        match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", name)
        if match:
            steps.append(int(match.group(1)))
    for step in sorted(steps, reverse=True):
        prefix = os.path.join(directory, f"{_PREFIX}-{step}")
        if prefix not in found and _is_complete(prefix):
            found.append(prefix)
    return found


def _named_by_state_file(directory):
    """The checkpoint the state file names, or None (a state file that cannot be read is logged
    by name: TensorFlow's own error names no file)."""
    path = os.path.join(directory, "checkpoint")
    try:
        return tf.train.latest_checkpoint(directory)
    except (tf.errors.OpError, UnicodeDecodeError, ValueError) as exc:
        # text_format.ParseError is a ValueError; non-UTF-8 bytes a UnicodeDecodeError.
        logging.warning("Checkpoint state file %s cannot be read (%s: %s); using the newest "
                        "complete checkpoint on disk instead", path, type(exc).__name__,
                        _first_line(exc))
        return None


def unreadable_reason(path):
    """Why the checkpoint at `path` cannot be read, or None when every tensor reads back.

    Reads each tensor once (TensorFlow checks its CRC32C), so it costs one pass over the
    checkpoint's data; `restore_latest` calls it only after a restore failed.
    """
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as exc:  # noqa: BLE001 (any failure to read is the answer asked for)
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def restore_latest(checkpoint, workdir):
    """Restores `checkpoint` from the newest readable checkpoint of `workdir`.

    A newer checkpoint that cannot be read (truncated or damaged data, an index that does not
    parse) is logged by name with the reason and skipped; it is left on disk (a later save of
    the same step replaces it).

    Returns:
        The path prefix restored, or None when `workdir` has no checkpoint.

    Raises:
        ValueError: a readable checkpoint holds another model or optimizer (`restore`), or no
            checkpoint of `workdir` can be read (the message names each, with its reason).
    """
    skipped = []
    for path in complete_checkpoints(workdir):
        try:
            restore(checkpoint, path)
        except UnreadableCheckpointError as exc:
            logging.warning("Checkpoint %s cannot be read (%s); trying the one before it", path,
                            exc.reason)
            skipped.append(f"{path} ({exc.reason})")
            continue
        if skipped:
            logging.warning("Resuming from %s, the newest readable checkpoint; skipped: %s",
                            path, "; ".join(skipped))
        return path
    if skipped:
        raise ValueError(
            f"no checkpoint of {os.path.join(workdir, CHECKPOINT_DIR)} can be read: "
            f"{'; '.join(skipped)}. Move the directory away to start over, or use a new "
            "--workdir")
    return None


def restore(checkpoint, path):
    """Restores `checkpoint` from `path`; raises ValueError if the run's state does not fit.

    Args:
        checkpoint: `tf.train.Checkpoint` from `create_checkpoint`.
        path: str. Checkpoint prefix, e.g. from `latest_checkpoint`.

    Raises:
        ValueError: the checkpoint holds another architecture or optimizer (a workdir reused
            with different --variant, --image_size, --optimizer, ...), or cannot be read (the
            message gives the reason).
    """
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, IndexError, tf.errors.OpError) as exc:
        reason = unreadable_reason(path)
        if reason is not None:
            raise UnreadableCheckpointError(path, reason) from None
        raise ValueError(
            f"checkpoint {path!r} does not match this run's model and optimizer ({exc}); the "
            "workdir belongs to a run with other settings: use a new --workdir, or the flags of "
            "that run") from None


class UnreadableCheckpointError(ValueError):
    """A checkpoint whose files are all there but cannot be read; `reason` says why."""

    def __init__(self, path, reason):
        super().__init__(f"checkpoint {path!r} cannot be read: {reason}")
        self.reason = reason


def _first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


class CheckpointSaver:
    """Saves checkpoints: into `WORKDIR/checkpoints` on the chief, a temporary directory elsewhere.

    Args:
        checkpoint: `tf.train.Checkpoint` from `create_checkpoint`.
        workdir: str. The run's directory.
        is_chief: bool. Whether this process writes the run's outputs.
        max_to_keep: int. Checkpoints kept; older ones are deleted.
        task: str. Name of this task, used in the temporary directory's name.
    """

    def __init__(self, checkpoint, workdir, *, is_chief, max_to_keep, task="local"):
        self._temporary = None
        if is_chief:
            directory = os.path.join(workdir, CHECKPOINT_DIR)
        else:
            self._temporary = tempfile.mkdtemp(prefix=f"keras_vit_{task}_checkpoints_")
            directory = self._temporary
        self.manager = tf.train.CheckpointManager(
            checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name=_PREFIX
        )
        self.last_saved_step = None

    def save(self, step):
        """Saves the state as checkpoint number `step` (a step already saved is skipped)."""
        if step == self.last_saved_step:
            return
        path = self.manager.save(checkpoint_number=step)
        self.last_saved_step = step
        # Verbose only (-v 1): small epochs save often.
        logging.vlog(1, "Saved checkpoint %s", path)

    def close(self):
        """Deletes the temporary directory of a non-chief worker."""
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


def _is_complete(prefix):
    if not tf.io.gfile.exists(prefix + ".index"):
        return False
    # Every data shard listed by the name pattern must be there.
    shards = tf.io.gfile.glob(prefix + ".data-*-of-*")
    if not shards:
        return False
    total = int(shards[0].rsplit("-of-", 1)[1])
    return len(shards) == total
