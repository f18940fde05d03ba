"""What a training run writes into its workdir, opened only once every check has passed.

    config.json            when the run starts: the settings (`RunOutputs(...)`)
    logs/train, logs/eval  TensorBoard scalars, as the run goes (`scalars`)
    checkpoints/           the training state, as the run goes (`save_checkpoint`)
    model.keras            the trained model          } at the end, in this order
    lora_weights.npz       with --lora_rank           } (LoRA merged into model.keras)
    saved_model/           with --export              } (`write_final`); metrics.json last, so
    metrics.json           the results                } its presence means the run completed

A run removes the metrics.json of the run before when it starts writing (so a failed rerun
never leaves old metrics beside its new model.keras), and the temporaries that killed processes
left (`.NAME.PID.tmp*`, `keras_vit.files.remove_stale_temporaries`).

Only the chief writes; other workers of a cluster get no-op writers and save their (required)
checkpoints into a temporary directory (`training.checkpointing.CheckpointSaver`). Every file is
written atomically (`keras_vit.files.atomic_write`).
"""

import json
import os
import time

import tensorflow as tf
from absl import logging

from keras_vit import lora
from keras_vit.files import atomic_write, remove_stale_temporaries
from training import checkpointing, export

# With --lora_rank: what LoRA trained (`keras_vit.finetune.save_lora_weights`).
LORA_WEIGHTS = "lora_weights.npz"


class RunOutputs:
    """The workdir's writers of one run; a context manager that closes them.

    Creating one creates the workdir and writes config.json (on the chief).
    """

    def __init__(self, config, workdir, checkpoint, *, is_chief, task):
        self.config = config
        self.workdir = workdir
        self.is_chief = is_chief
        if is_chief:
            os.makedirs(workdir, exist_ok=True)
            # A rerun writes new outputs: the metrics of the run before would sit beside a new
            # model.keras (and an old SavedModel) until the new metrics.json replaced them, and
            # for good if this run fails. Temporaries of killed processes go too.
            remove_stale_outputs(workdir)
            write_text(os.path.join(workdir, "config.json"), config.to_json() + "\n")
            self._writers = {
                name: tf.summary.create_file_writer(os.path.join(workdir, "logs", name))
                for name in ("train", "eval")
            }
        else:
            self._writers = {name: tf.summary.create_noop_writer() for name in ("train", "eval")}
        self._saver = checkpointing.CheckpointSaver(
            checkpoint, workdir, is_chief=is_chief, max_to_keep=config.keep_checkpoints,
            task=task)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def writer(self, which):
        """The TensorBoard writer of "train" or "eval" (the few-shot evaluation logs to eval)."""
        return self._writers[which]

    def scalars(self, which, step, values):
        """Writes `values` ({name: float}) as TensorBoard scalars of `which` at `step`."""
        writer = self._writers[which]
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def save_checkpoint(self, step):
        """Saves the training state as checkpoint `step` (skipped if that step is saved)."""
        self._saver.save(step)

    def last_checkpoint_note(self):
        """A sentence naming the checkpoint a failed run leaves to resume from."""
        last = checkpointing.latest_checkpoint(self.workdir) if self.is_chief else None
        if last is None:
            return "No checkpoint was saved"
        return f"The last good checkpoint, {last}, is kept"

    def write_final(self, model, metrics, *, wall_start):
        """Writes model.keras, the SavedModel (with `config.export`), then metrics.json.

        metrics.json's `wall_seconds` is set last, from `wall_start` (a `time.time()`), so that
        it includes the writing of the model and its export.
        """
        if not self.is_chief:
            return
        model_path = os.path.join(self.workdir, "model.keras")
        with atomic_write(model_path) as temporary:
            # A LoRA model is saved merged: Keras adds each adapter to its kernel when it
            # saves a Dense layer, and the file's blocks have plain Dense layers.
            model.save(temporary)
        if lora.lora_layers(model):
            lora.save_lora_weights(model, os.path.join(self.workdir, LORA_WEIGHTS))
        if self.config.export:
            # From the saved file, outside the strategy: the export is what
            # `python -m training.export` makes of model.keras.
            export.export_saved_model(model_path, os.path.join(self.workdir, "saved_model"))
        metrics["wall_seconds"] = time.time() - wall_start
        write_text(os.path.join(self.workdir, "metrics.json"),
                   json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    def close(self):
        self._saver.close()
        for writer in self._writers.values():
            writer.close()


def remove_stale_outputs(workdir):
    """Removes `workdir`'s metrics.json and the `atomic_write` temporaries of dead processes.

    Called when a run starts writing (under the workdir's lock, `training/workdir_lock.py`): from
    then until its own metrics.json, the workdir holds no metrics.json, so one is only ever
    present beside the outputs it describes.
    """
    for path in remove_stale_temporaries(workdir):
        logging.info("Removed %s, left by a process that was killed while writing it", path)
    metrics = os.path.join(workdir, "metrics.json")
    if os.path.exists(metrics):
        os.remove(metrics)
        logging.info("Removed the previous run's %s: this run writes new outputs", metrics)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with atomic_write(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)
