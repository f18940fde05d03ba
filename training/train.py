"""Trains and evaluates a ViT, then exports it: the project's training binary.

    python -m training.train --workdir=DIR [flags]

With no other flag it is the project's main job: a small ViT trained on the embedded `digits`
dataset, evaluated and exported in a few CPU minutes. `--dataset=cifar10_jpeg --data_dir=...`,
`--strategy=mirrored|multi_worker|tpu` and the other flags (`training/flags.py`) scale it up.

DIR receives:
    checkpoints/    model, optimizer, step and epoch; re-running the same command resumes
    logs/train, logs/eval   TensorBoard scalars (loss, accuracy, learning rate, images/sec)
    config.json     the settings of the last run
    model.keras     the trained model
    saved_model/    with --export: a SavedModel serving raw uint8 images (training/export.py)
    metrics.json    eval_accuracy, eval_loss, global_step, resumed_from_step,
                    train_images_per_sec and more; written last, when the run is complete
                    (and removed when a rerun starts writing)
    .lock           held by the run (its pid, host, start time): one run per workdir

Exit codes: 0 complete; 1 bad settings or data, a NaN loss; 75 stopped by SIGTERM or SIGINT at
any moment before the run completed, after saving the step in flight (rerun to resume from it),
or the workdir in use by another run; 69 a worker of the cluster disappeared (rerun the
cluster). `training/preemption.py` says how.

`train_and_evaluate` reads top to bottom as the run goes, each part in a module of its own:
settings (`training/config.py`, validated once) -> strategy (`training/distribute.py`) -> data
(`RunData` below: `training/input_pipeline.py`, each pipeline built once) -> state (model,
optimizer, counters: `training/state.py`) -> steps (`training/steps.py`) -> loop and evaluation
(`training/loop.py`) -> outputs (`training/outputs.py`).

One training loop serves every strategy: a step is `strategy.run` of a per-replica function
inside a `tf.function`, and metrics are per-replica sums combined with `strategy.reduce`.
`model.fit` would be shorter but fails under `MultiWorkerMirroredStrategy` in Keras 3
(keras-team/keras#20585), and one loop means one behaviour to test under every strategy.
"""

import os
import signal
import sys

if __name__ == "__main__":
    # Until `main` installs its own handlers (the imports below take seconds), a SIGTERM or
    # SIGINT finds nothing written: the run stops with the preemption code, rerun to start it,
    # never with 143, which a scheduler reads as a permanent failure.
    def _stop_before_start(signum, frame):
        del frame
        os.write(2, f"training.train: stopped by {signal.Signals(signum).name} before the run "
                    "started; nothing was written, rerun the same command\n".encode())
        os._exit(75)  # preemption.EXIT_PREEMPTED, not imported yet

    for _signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_signum, _stop_before_start)

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from keras_vit import lora  # noqa: E402
from training import augmentation, checkpointing, data_source, distribute, fewshot  # noqa: E402
from training import input_pipeline, loop  # noqa: E402
from training import config as config_lib  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import outputs as outputs_lib  # noqa: E402
from training import preemption  # noqa: E402
from training import state as state_lib  # noqa: E402
from training import steps as steps_lib  # noqa: E402
from training import workdir_lock  # noqa: E402
from training.loop import NonFiniteLossError  # noqa: E402  (raised by train_and_evaluate)
from training.preemption import Preempted, WorkerLostError  # noqa: E402  (likewise)
from training.workdir_lock import WorkdirBusyError  # noqa: E402  (likewise)

_DTYPE_POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    # TensorFlow logs INFO lines for every checkpoint it writes (some through absl), which
    # drown the binary's own at one checkpoint per epoch.
    tf.get_logger().setLevel("WARNING")
    logging.get_absl_logger().addFilter(
        lambda record: not record.getMessage().startswith("Sharding callback duration"))
    try:
        config = training_flags.config_from_flags()
        # First, before TensorFlow runs anything: multi-worker and TPU strategies configure the
        # runtime when they are created.
        strategy = distribute.get_strategy(config.strategy, tpu=config.tpu)
        # Caught until the process ends, not only while training: a second SIGTERM after the
        # save must not turn the exit code 75 into a death by signal. (Before this, while the
        # strategy is created and a multi-worker cluster forms, nothing is written: the
        # handler installed at import exits 75 at once.)
        with preemption.StopRequest(restore=False) as stop_request:
            train_and_evaluate(config, training_flags.FLAGS.workdir, strategy=strategy,
                               stop_request=stop_request)
    except Preempted as exc:
        # Not an error: the scheduler is told to rerun (training/preemption.py, exit codes).
        logging.warning("%s", exc)
        print(f"training.train: preempted: {exc}", file=sys.stderr, flush=True)
        preemption.exit_now(preemption.EXIT_PREEMPTED)
    except WorkerLostError as exc:
        logging.error("%s", exc)
        print(f"training.train: error: {exc}", file=sys.stderr, flush=True)
        preemption.exit_now(preemption.EXIT_WORKER_LOST)
    except WorkdirBusyError as exc:
        # Temporary: a preempted run's replacement may start while the old one still saves.
        logging.error("%s", exc)
        print(f"training.train: error: {exc}", file=sys.stderr, flush=True)
        preemption.exit_now(preemption.EXIT_PREEMPTED)
    except (ValueError, NonFiniteLossError) as exc:
        logging.error("%s", exc)
        raise SystemExit(f"training.train: error: {exc}") from None
    # Complete: metrics.json is written. Leave now, immune to signals: a SIGTERM from here on
    # (the interpreter's teardown restores the default handlers and takes a second or more)
    # must not turn the completed run's 0 into 143.
    preemption.exit_now(0)


def train_and_evaluate(config, workdir, *, strategy=None, stop_request=None):
    """Trains, evaluates and exports a ViT as `config` says, resuming from `workdir`.

    Everything that can be checked (the flags, the strategy, the dataset and its features, the
    batch size against the replicas, the model's shape, an existing checkpoint's compatibility)
    is checked before anything is written into `workdir` (but its lock file,
    `training/workdir_lock.py`, taken first so that no other run reads or writes it meanwhile).

    Args:
        config: `training.config.Config`.
        workdir: str. The run's directory; created if needed. If it holds checkpoints of an
            earlier run with the same settings, training continues from the latest.
        strategy: `tf.distribute.Strategy` or None. None builds `config.strategy`.
        stop_request: `training.preemption.StopRequest` or None, already entered by the
            caller. None: SIGTERM and SIGINT are caught for the duration of the call.

    Returns:
        (model, metrics): the trained `keras.Model` (its variables are the strategy's) and the
        dict that `metrics.json` holds.

    Raises:
        ValueError: invalid settings or data (the message names the value and what was
            expected); nothing has been written then.
        NonFiniteLossError: the loss became NaN or infinite; the message names the step, and the
            last checkpoint before it is kept.
        Preempted: a SIGTERM or SIGINT (here, or on another worker of the cluster) stopped the
            run after the step in flight; the checkpoint of that step is saved, and calling
            again with the same arguments resumes from it. `training/preemption.py`.
        WorkerLostError: a worker of the cluster disappeared; the message names it and the
            step a rerun of the cluster resumes from.
        WorkdirBusyError: another run holds `workdir` (`training/workdir_lock.py`); raised
            before anything is read or written.
    """
    wall_start = time.time()
    # Settings.
    config = dataclasses.replace(config).validate()
    workdir = os.path.abspath(os.fspath(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} exists and is not a directory")
    # Strategy.
    if strategy is None:
        strategy = distribute.get_strategy(config.strategy, tpu=config.tpu)
    _check_strategy(config, strategy)
    task = distribute.task_name(strategy)
    with contextlib.ExitStack() as stack:
        # One run per workdir, from before its checkpoint is read to the last write; the chief
        # is the only task that writes it.
        if distribute.is_chief(strategy):
            stack.enter_context(workdir_lock.WorkdirLock(workdir))
        # From here on a SIGTERM or SIGINT is a request to stop at the next safe point.
        if stop_request is None:
            stop_request = stack.enter_context(preemption.StopRequest())
        stopper = preemption.StopAgreement(stop_request, strategy)
        stack.enter_context(preemption.explain_lost_workers(
            strategy, task=task, resume_step=lambda: _resume_step(workdir)))
        stack.enter_context(_dtype_policy(_DTYPE_POLICIES[config.mixed_precision]))
        model, metrics = _run(config, workdir, strategy, task, stopper, wall_start)
    logging.info(
        "Done: eval_accuracy %.4f, eval_loss %.4f at step %d (%.1f s)",
        metrics["eval_accuracy"], metrics["eval_loss"], metrics["global_step"],
        metrics["wall_seconds"])
    return model, metrics


def _run(config, workdir, strategy, task, stopper, wall_start):
    """`train_and_evaluate` once the settings and the strategy are checked."""
    # Data: described now, each pipeline built once.
    pretrained = state_lib.load_pretrained(config)
    if pretrained is not None:
        # The run trains init_from's architecture; config.json and metrics.json say which.
        variant = state_lib.variant_of(pretrained)
        if variant != config.variant:
            logging.warning("variant %s is not used: init_from %s is a %s model, which is "
                            "trained and recorded", config.variant, config.init_from, variant)
            config = dataclasses.replace(config, variant=variant)
    data = RunData(config, strategy, pretrained=pretrained)
    length = loop.RunLength.create(config, data.info)
    # State: model, optimizer and counters, restored from the last checkpoint if any.
    state = state_lib.create_state(config, data.info, total_steps=length.total_steps,
                                   strategy=strategy, pretrained=pretrained)
    start = state_lib.restore(state, workdir)
    is_chief = distribute.is_chief(strategy)
    _log_run(config, data.info, length, state.model, strategy, start, task, is_chief)
    periodic_fewshot = fewshot.PeriodicFewshot.from_config(
        config, state.model, strategy=strategy, is_chief=is_chief)
    # Everything checked: from here on the workdir is written.
    with outputs_lib.RunOutputs(config, workdir, state.checkpoint, is_chief=is_chief,
                                task=task) as outputs:
        steps = steps_lib.create_step_functions(config, state, strategy)

        def evaluate():
            return loop.evaluate(steps, data.eval, num_examples=data.info.num_eval_examples)

        # Loop, then the final evaluation.
        with data_source.explain_data_errors():
            progress = loop.train(
                config, length, state, steps, lambda: iter(data.train(start)), start=start,
                outputs=outputs, fewshot=periodic_fewshot, evaluate_fn=evaluate,
                show_progress=config.progress and is_chief, stopper=stopper)
            if progress.stopped_by is None and stopper.at_boundary():
                # Training is complete and saved; the evaluation and export are left to
                # the rerun, which resumes at the last step.
                progress.stopped_by = stopper.reason
            if progress.stopped_by is not None:
                raise Preempted(
                    f"stopped by {progress.stopped_by} at step {progress.global_step} "
                    f"of {length.total_steps}; checkpoint {progress.global_step} saved in "
                    f"{os.path.join(workdir, 'checkpoints')}. Rerun the same command to "
                    f"resume from step {progress.global_step}",
                    step=progress.global_step, signal_name=progress.stopped_by)
            evaluation = evaluate()
            if stopper.at_boundary():
                # Asked to stop during the evaluation: its result is dropped, and the rerun
                # (resuming at the last step, which is saved) evaluates and writes the outputs.
                raise Preempted(
                    f"stopped by {stopper.reason} during the final evaluation at step "
                    f"{progress.global_step}; checkpoint {progress.global_step} saved in "
                    f"{os.path.join(workdir, 'checkpoints')}. Rerun the same command to "
                    "evaluate and write the outputs", step=progress.global_step,
                    signal_name=stopper.reason)
        # From here the outputs are written to the end: a signal now is logged, and the run
        # completes (exit 0).
        stopper.stop.finishing()
        outputs.scalars("eval", progress.global_step, {
            "loss": evaluation["loss"], "accuracy": evaluation["accuracy"]})
        # Outputs: model.keras, the SavedModel, metrics.json.
        metrics = _metrics(config, data.info, length, state.model, strategy, start,
                           progress, evaluation, wall_start)
        outputs.write_final(state.model, metrics, wall_start=wall_start)
    return state.model, metrics


def _resume_step(workdir):
    """The step a rerun resumes from: that of `workdir`'s newest complete checkpoint, 0 if it has
    none, None if this task cannot see `workdir` (a worker whose disk lacks the chief's)."""
    if not tf.io.gfile.exists(workdir):
        return None
    latest = checkpointing.latest_checkpoint(workdir)
    return int(latest.rsplit("-", 1)[1]) if latest else 0


class RunData:
    """The data of a run: its `DatasetInfo`, and its distributed datasets, each built once.

    Creating it checks the dataset (and the batch against the replicas and the micro-batches)
    without building a pipeline; `eval` is built on first use and then iterated once per
    evaluation; `train(start)` builds the training pipeline for a run resuming at step `start`.
    """

    def __init__(self, config, strategy, *, pretrained=None):
        self.config = config
        self.strategy = strategy
        augment = augmentation.AugmentConfig(
            inception_crop=config.random_crop,
            crop_area_range=(config.min_crop_area, 1.0),
            flip=config.flip,
            rand_augment=config.randaugment,
            rand_augment_magnitude=config.randaugment_magnitude,
            mixup_alpha=config.mixup,
            cutmix_alpha=config.cutmix,
        )
        common = dict(data_dir=config.data_dir, image_size=config.image_size)
        if pretrained is not None:
            # The data takes the pre-trained model's channels: grayscale datasets are
            # replicated to RGB for an RGB model (and RGB ones averaged for a grayscale model).
            common["channels"] = pretrained.input_shape[-1]
        self._train_kwargs = dict(
            common, train_split=config.train_split, shuffle_buffer=config.shuffle_buffer,
            augment=augment, global_batch_size=config.global_batch_size)
        self._eval_kwargs = dict(
            common, eval_split=config.eval_split, global_batch_size=config.global_batch_size)
        self.info = input_pipeline.dataset_info(
            config.dataset, train_split=config.train_split, eval_split=config.eval_split,
            **common)
        # The batch against the replicas and the micro-batches, now rather than when the
        # pipelines are built.
        input_pipeline.check_global_batch_size(
            config.global_batch_size, strategy.num_replicas_in_sync)
        config_lib.check_micro_batches(config.global_batch_size, config.accumulation_steps,
                                       strategy.num_replicas_in_sync)
        self._eval = None

    def train(self, start):
        """The distributed training batches of a run resuming at step `start`."""
        config, info = self.config, self.info

        def dataset_fn(input_context):
            # A new shuffle stream when resuming: replaying the run's first batches would show
            # the model the same examples twice.
            train = input_pipeline.train_dataset(
                config.dataset, seed=config.seed + start, input_context=input_context,
                **self._train_kwargs)
            # Static shapes for the model (its patch embedding needs the channels) and for XLA
            # and TPUs (the batch dimension): training batches are always full.
            shape = (input_context.get_per_replica_batch_size(config.global_batch_size),
                     *info.image_shape)
            return train.map(lambda images, labels: (tf.ensure_shape(images, shape), labels))

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    @property
    def eval(self):
        """The distributed evaluation batches; iterate once per evaluation."""
        if self._eval is None:
            self._eval = self.strategy.distribute_datasets_from_function(
                lambda input_context: input_pipeline.eval_dataset(
                    self.config.dataset, input_context=input_context, **self._eval_kwargs))
        return self._eval


def _check_strategy(config, strategy):
    if not config.jit_compile or strategy.num_replicas_in_sync == 1:
        return
    devices = strategy.extended.worker_devices
    if len(devices) > 1 and all("CPU" in device.upper() for device in devices):
        # XLA cannot compile one replica's step while another CPU device holds the variables
        # ("Trying to access resource ... located in device CPU:1 from CPU:0").
        raise ValueError(
            f"jit_compile=True is not supported with {len(devices)} replicas on the CPU "
            f"devices {list(devices)}; use --nojit_compile, or GPUs/TPUs")


@contextlib.contextmanager
def _dtype_policy(policy):
    # The policy is global in Keras; restore it so that a caller's later models are unaffected.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _log_run(config, info, length, model, strategy, start, task, is_chief):
    replicas = strategy.num_replicas_in_sync
    logging.info(
        "Dataset %s: %d train (%s), %d eval (%s) examples, %d classes, images %s",
        info.name, info.num_train_examples, info.train_split, info.num_eval_examples,
        info.eval_split, info.num_classes, "x".join(map(str, info.image_shape)))
    logging.info(
        "Model %s (%s, %d parameters); strategy %s: %d replica(s), this task %s%s",
        config.variant, model.name, model.count_params(), config.strategy, replicas,
        task, " (chief)" if is_chief else "")
    per_replica = config.global_batch_size // replicas
    accumulation = (f", {config.accumulation_steps} micro-batches of "
                    f"{per_replica // config.accumulation_steps} per update"
                    if config.accumulation_steps > 1 else "")
    logging.info(
        "Global batch %d (%d per replica%s); %d steps/epoch; %d steps = %.2f epochs; "
        "resuming at step %d", config.global_batch_size, per_replica, accumulation,
        length.steps_per_epoch, length.total_steps, length.total_steps / length.steps_per_epoch,
        start)


def _metrics(config, info, length, model, strategy, start, progress, evaluation, wall_start):
    return {
        "eval_accuracy": evaluation["accuracy"],
        "eval_loss": evaluation["loss"],
        "eval_examples": evaluation["count"],
        "global_step": progress.global_step,
        "resumed_from_step": start,
        "train_images_per_sec": progress.images_per_sec,
        "train_loss": progress.last_epoch.get("loss"),
        "train_accuracy": progress.last_epoch.get("accuracy"),
        "epochs": progress.global_step / length.steps_per_epoch,
        "steps_per_epoch": length.steps_per_epoch,
        "global_batch_size": config.global_batch_size,
        "num_replicas": strategy.num_replicas_in_sync,
        "strategy": config.strategy,
        "dataset": info.name,
        "num_train_examples": info.num_train_examples,
        "num_eval_examples": info.num_eval_examples,
        "num_classes": info.num_classes,
        "image_shape": list(info.image_shape),
        "variant": config.variant,
        "num_parameters": int(model.count_params()),
        "num_trainable_parameters": lora.count_parameters(model)[0],
        "train_seconds": progress.train_seconds,
        "wall_seconds": time.time() - wall_start,
    }


def evaluate_accuracy(model, dataset, *, data_dir, image_size, batch_size=500):
    """Top-1 accuracy of `model` on `dataset`'s evaluation split, through the evaluation pipeline.

    One replica, `predict_on_batch`, any model that maps images to logits: for comparing saved
    or adapted models outside a training run (benchmarks, tests).
    """
    eval_ds = input_pipeline.eval_dataset(
        dataset, data_dir=data_dir, image_size=image_size, global_batch_size=batch_size)
    correct = total = 0
    for images, labels in eval_ds:
        predicted = np.argmax(model.predict_on_batch(images), -1)
        correct += int(np.sum(predicted == np.argmax(labels.numpy(), -1)))
        total += int(labels.shape[0])
    return correct / total


if __name__ == "__main__":
    training_flags.define_training_flags()
    # --helpshort lists the flags of the defining module too.
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
