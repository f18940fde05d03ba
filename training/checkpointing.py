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
  falls back to the newest complete checkpoint on disk.

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
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not tf.io.gfile.isdir(directory):
        return None
    latest = tf.train.latest_checkpoint(directory)
    if latest is not None and _is_complete(latest):
        return latest
    # The state file is missing or names files that are gone (deleted by hand, or a directory
    # copied mid-save): take the newest checkpoint whose index and data are all there.
    steps = []
    for name in tf.io.gfile.listdir(directory):
        match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", name)
        if match:
            steps.append(int(match.group(1)))
    for step in sorted(steps, reverse=True):
        prefix = os.path.join(directory, f"{_PREFIX}-{step}")
        if _is_complete(prefix):
            return prefix
    return None


def restore(checkpoint, path):
    """Restores `checkpoint` from `path`; raises ValueError if the run's state does not fit.

    Args:
        checkpoint: `tf.train.Checkpoint` from `create_checkpoint`.
        path: str. Checkpoint prefix, e.g. from `latest_checkpoint`.

    Raises:
        ValueError: the checkpoint holds another architecture or optimizer (a workdir reused
            with different --variant, --image_size, --optimizer, ...).
    """
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise ValueError(
            f"checkpoint {path!r} does not match this run's model and optimizer ({exc}); the "
            "workdir belongs to a run with other settings: use a new --workdir, or the flags of "
            "that run"
        ) from None


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
