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

One training loop serves every strategy: a step is `strategy.run` of a per-replica function
inside a `tf.function`, and metrics are per-replica sums combined with `strategy.reduce`.
`model.fit` would be shorter but fails under `MultiWorkerMirroredStrategy` in Keras 3
(keras-team/keras#20585), and one loop means one behaviour to test under every strategy.
"""

import dataclasses
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit import finetune, model_layers  # noqa: E402
from keras_vit.files import atomic_write  # noqa: E402
from training import checkpointing, distribute, export, fewshot, input_pipeline, optim  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training.config import Config  # noqa: E402

_DTYPE_POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN or infinite; the message names the step."""


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
        train_and_evaluate(config, training_flags.FLAGS.workdir, strategy=strategy)
    except (ValueError, NonFiniteLossError) as exc:
        logging.error("%s", exc)
        raise SystemExit(f"training.train: error: {exc}") from None


def train_and_evaluate(config, workdir, *, strategy=None):
    """Trains, evaluates and exports a ViT as `config` says, resuming from `workdir`.

    Everything that can be checked (the flags, the strategy, the dataset and its features, the
    batch size against the replicas, the model's shape, an existing checkpoint's compatibility)
    is checked before anything is written into `workdir`.

    Args:
        config: `training.config.Config`.
        workdir: str. The run's directory; created if needed. If it holds checkpoints of an
            earlier run with the same settings, training continues from the latest.
        strategy: `tf.distribute.Strategy` or None. None builds `config.strategy`.

    Returns:
        (model, metrics): the trained `keras.Model` (its variables are the strategy's) and the
        dict that `metrics.json` holds.

    Raises:
        ValueError: invalid settings or data (the message names the value and what was
            expected); nothing has been written then.
        NonFiniteLossError: the loss became NaN or infinite; the message names the step, and the
            last checkpoint before it is kept.
    """
    config = dataclasses.replace(config).validate()
    workdir = os.path.abspath(os.fspath(workdir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} exists and is not a directory")
    if strategy is None:
        strategy = distribute.get_strategy(config.strategy, tpu=config.tpu)
    previous_policy = keras.config.dtype_policy()
    # The policy is global in Keras; restore it so that a caller's later models are unaffected.
    keras.config.set_dtype_policy(_DTYPE_POLICIES[config.mixed_precision])
    try:
        return _Run(config, workdir, strategy).run()
    finally:
        keras.config.set_dtype_policy(previous_policy)


class _Run:
    """The state of one `train_and_evaluate` call; `run()` does the work."""

    def __init__(self, config, workdir, strategy):
        self.config = config
        self.workdir = workdir
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        self.is_chief = distribute.is_chief(strategy)
        self.task = distribute.task_name(strategy)
        self.wall_start = time.time()

    # -- Setup, read-only ---------------------------------------------------------------------

    def _resolve_data(self):
        """Loads the dataset's description; raises ValueError for any problem with the data."""
        config = self.config
        augment = input_pipeline.AugmentConfig(
            inception_crop=config.random_crop,
            crop_area_range=(config.min_crop_area, 1.0),
            flip=config.flip,
            rand_augment=config.randaugment,
            rand_augment_magnitude=config.randaugment_magnitude,
            mixup_alpha=config.mixup,
            cutmix_alpha=config.cutmix,
        )
        self.data_kwargs = dict(
            data_dir=config.data_dir,
            image_size=config.image_size,
            global_batch_size=config.global_batch_size,
            train_split=config.train_split,
            eval_split=config.eval_split,
            shuffle_buffer=config.shuffle_buffer,
            augment=augment,
        )
        self.pretrained = None
        if config.init_from is not None and config.init_from.endswith(".keras"):
            self.pretrained = keras.saving.load_model(config.init_from, compile=False)
            # The data takes the pre-trained model's channels: grayscale datasets are
            # replicated to RGB for an RGB model (and RGB ones averaged for a grayscale model).
            self.data_kwargs["channels"] = self.pretrained.input_shape[-1]
        # The input context of one pipeline feeding every replica: enough for the pipeline to
        # check the batch against the replicas before anything is written.
        context = tf.distribute.InputContext(
            num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=self.replicas
        )
        _, _, info = input_pipeline.load_datasets(
            config.dataset, seed=config.seed, input_context=context, **self.data_kwargs
        )
        self.info = info
        self.steps_per_epoch = info.num_train_examples // config.global_batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"global_batch_size {config.global_batch_size} is larger than the "
                f"{info.num_train_examples} training examples of {info.name!r} "
                f"({info.train_split}); use at most {info.num_train_examples}"
            )
        self.total_steps = config.train_steps or config.epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)

    def _check_strategy(self):
        if not self.config.jit_compile or self.replicas == 1:
            return
        devices = self.strategy.extended.worker_devices
        if (len(devices) > 1
                and all("CPU" in device.upper() for device in devices)):
            # XLA cannot compile one replica's step while another CPU device holds the
            # variables ("Trying to access resource ... located in device CPU:1 from CPU:0").
            raise ValueError(
                f"jit_compile=True is not supported with {len(devices)} replicas on the CPU "
                f"devices {list(devices)}; use --nojit_compile, or GPUs/TPUs")

    def _build_state(self):
        """Model, optimizer and counters in the strategy's scope; ValueError if they cannot be."""
        config, info = self.config, self.info
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = self._create_model()
            self.schedule = optim.create_learning_rate_schedule(
                config.schedule,
                learning_rate=config.learning_rate,
                total_steps=self.total_steps,
                warmup_steps=config.warmup_steps,
            )
            self.optimizer = optim.create_optimizer(
                config.optimizer,
                self.schedule,
                weight_decay=config.weight_decay,
                # Clipped in the training step, after the sum over replicas (_compile_steps).
                global_clipnorm=None,
                no_decay_variables=optim.no_weight_decay_variables(self.model),
                loss_scale=config.mixed_precision == "float16",
            )
            # Built now, so that a restore fills the slot variables directly.
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.checkpoint = checkpointing.create_checkpoint(
            self.model, self.optimizer, self.step, self.epoch
        )

    def _create_model(self):
        config, info = self.config, self.info
        pretrained = self.pretrained
        if pretrained is not None:
            # The trained head stays when it has the dataset's classes (e.g. a higher
            # resolution only); otherwise a zero head (keras_vit.finetune.head_plan).
            same_classes = finetune.head_plan(
                source_classes=model_layers.num_classes(pretrained),
                target_classes=info.num_classes,
            ) == "keep"
            try:
                model = finetune.adapt(
                    pretrained,
                    image_size=config.image_size,
                    num_classes=None if same_classes else info.num_classes,
                    position_embeddings=config.init_position_embeddings,
                )
            except ValueError as error:
                raise ValueError(f"Cannot fine-tune {config.init_from!r}: {error}") from None
            logging.info(
                "Fine-tuning %s (%s, input %s -> %s): %s", config.init_from, pretrained.name,
                pretrained.input_shape[1:3], model.input_shape[1:3],
                "head kept" if same_classes else
                f"new zero-initialized head for {info.num_classes} classes")
            return model
        if config.init_position_embeddings != "interpolate":
            raise ValueError(
                f"init_position_embeddings={config.init_position_embeddings!r} needs init_from "
                f"to be a '.keras' model, received init_from={config.init_from!r}")
        return keras_vit.ViT(
            config.variant,
            image_size=config.image_size,
            num_classes=info.num_classes,
            pooling=config.pooling,
            representation_size=config.representation_size or None,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            drop_path_rate=config.drop_path_rate,
            weights=config.init_from,
            num_channels=info.channels,
        )

    def _restore(self):
        latest = checkpointing.latest_checkpoint(self.workdir)
        if latest is None:
            self.resumed_from_step = 0
            return
        checkpointing.restore(self.checkpoint, latest)
        self.resumed_from_step = int(self.step.numpy())
        logging.info("Resuming from %s: step %d, epoch %d", latest, self.resumed_from_step,
                     int(self.epoch.numpy()))

    # -- Steps --------------------------------------------------------------------------------

    def _compile_steps(self):
        config, model, optimizer = self.config, self.model, self.optimizer
        strategy, replicas = self.strategy, self.replicas
        global_batch_size = config.global_batch_size
        clip_norm = config.grad_clip_norm
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def replica_train_step(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                per_example = keras.losses.categorical_crossentropy(
                    labels, logits, from_logits=True, label_smoothing=config.label_smoothing
                )
                # Divided by the global batch, not the replica's: the sum over replicas of the
                # gradients is then the gradient of the mean loss over the global batch.
                loss = tf.reduce_sum(per_example) / global_batch_size
                scaled_loss = optimizer.scale_loss(loss)
            variables = model.trainable_variables
            grads = tape.gradient(scaled_loss, variables)
            # The paper clips the global norm of the whole batch's gradient. Keras' optimizers
            # clip before they sum the replicas' gradients, i.e. each replica's share, so the
            # sum and the clip happen here, and the optimizer gets each replica's 1/replicas of
            # the clipped sum (its own all-reduce adds them back up; with one replica both
            # reductions are no-ops).
            grads = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, grads
            )
            scale = tf.cast(optimizer.scale_loss(1.0), tf.float32) if loss_scaled else 1.0
            grad_norm = tf.linalg.global_norm(grads)
            if clip_norm > 0:
                # Under loss scaling the gradients are scaled by `scale`: clipping them at
                # clip_norm * scale clips the true gradients at clip_norm.
                grads, _ = tf.clip_by_global_norm(
                    grads, clip_norm * scale, use_norm=grad_norm
                )
            if replicas > 1:
                grads = [grad / replicas for grad in grads]
            optimizer.apply_gradients(zip(grads, variables))
            return _sums(per_example, logits, labels) | {
                "grad_norm": grad_norm / scale / replicas
            }

        def replica_eval_step(images, labels):
            logits = model(images, training=False)
            per_example = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
            return _sums(per_example, logits, labels)

        if config.jit_compile:
            # As Keras' own trainer does: XLA compiles the per-replica computation, and the
            # strategy's placement and reductions stay outside it.
            replica_train_step = tf.function(replica_train_step, jit_compile=True)
            replica_eval_step = tf.function(replica_eval_step, jit_compile=True)

        def reduce_sums(per_replica):
            return {
                key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for key, value in per_replica.items()
            }

        @tf.function
        def train_step(iterator):
            return reduce_sums(strategy.run(replica_train_step, args=next(iterator)))

        @tf.function(reduce_retracing=True)
        def eval_step(batch):
            return reduce_sums(strategy.run(replica_eval_step, args=batch))

        @tf.function
        def all_finite():
            return tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(v)) for v in model.trainable_variables]
            )

        self.train_step, self.eval_step, self.all_finite = train_step, eval_step, all_finite

    # -- The run ------------------------------------------------------------------------------

    def run(self):
        self._check_strategy()
        self._resolve_data()
        self._build_state()
        self._restore()
        self._log_resolved()
        self.fewshot = fewshot.PeriodicFewshot.from_config(
            self.config, self.model, strategy=self.strategy, is_chief=self.is_chief)
        # Everything checked: from here on the workdir is written.
        self._open_outputs()
        try:
            self._compile_steps()
            with input_pipeline.explain_data_errors():
                self._train()
                evaluation = self._evaluate()
            self._write_summaries(self.eval_writer, self.global_step, {
                "loss": evaluation["loss"], "accuracy": evaluation["accuracy"]})
            metrics = self._metrics(evaluation)
            if self.is_chief:
                self._write_final_outputs(metrics)
        finally:
            self.saver.close()
            for writer in (self.train_writer, self.eval_writer):
                writer.close()
        logging.info(
            "Done: eval_accuracy %.4f, eval_loss %.4f at step %d (%.1f s)",
            metrics["eval_accuracy"], metrics["eval_loss"], metrics["global_step"],
            metrics["wall_seconds"])
        return self.model, metrics

    def _log_resolved(self):
        info, config = self.info, self.config
        logging.info(
            "Dataset %s: %d train (%s), %d eval (%s) examples, %d classes, images %s",
            info.name, info.num_train_examples, info.train_split, info.num_eval_examples,
            info.eval_split, info.num_classes, "x".join(map(str, info.image_shape)))
        logging.info(
            "Model %s (%s, %d parameters); strategy %s: %d replica(s), this task %s%s",
            config.variant, self.model.name, self.model.count_params(), config.strategy,
            self.replicas, self.task, " (chief)" if self.is_chief else "")
        logging.info(
            "Global batch %d (%d per replica); %d steps/epoch; %d steps = %.2f epochs; "
            "resuming at step %d", config.global_batch_size,
            config.global_batch_size // self.replicas, self.steps_per_epoch, self.total_steps,
            self.total_steps / self.steps_per_epoch, self.resumed_from_step)

    def _open_outputs(self):
        config = self.config
        if self.is_chief:
            os.makedirs(self.workdir, exist_ok=True)
            _write_text(os.path.join(self.workdir, "config.json"), config.to_json() + "\n")
            self.train_writer = tf.summary.create_file_writer(
                os.path.join(self.workdir, "logs", "train"))
            self.eval_writer = tf.summary.create_file_writer(
                os.path.join(self.workdir, "logs", "eval"))
        else:
            self.train_writer = tf.summary.create_noop_writer()
            self.eval_writer = tf.summary.create_noop_writer()
        self.saver = checkpointing.CheckpointSaver(
            self.checkpoint, self.workdir, is_chief=self.is_chief,
            max_to_keep=config.keep_checkpoints, task=self.task)

    def _train(self):
        config = self.config
        step = start = self.resumed_from_step
        self.global_step = max(start, 0)
        self.train_seconds, self.timed_images = 0.0, 0
        self.last_epoch = {}
        if start >= self.total_steps:
            logging.info("Step %d >= train steps %d: nothing to train", start, self.total_steps)
            return
        # A new shuffle stream when resuming: replaying the run's first batches would show the
        # model the same examples twice.
        dataset = self.strategy.distribute_datasets_from_function(
            self._dataset_fn("train", seed=config.seed + start))
        iterator = iter(dataset)
        verbose = 0 if not config.progress or not self.is_chief else (
            1 if sys.stdout.isatty() else 2)
        window = _Window()
        while step < self.total_steps:
            epoch = step // self.steps_per_epoch
            epoch_end = min((epoch + 1) * self.steps_per_epoch, self.total_steps)
            if verbose:
                print(f"Epoch {epoch + 1}/{self.total_epochs}", flush=True)
            progbar = keras.utils.Progbar(
                epoch_end - epoch * self.steps_per_epoch, verbose=verbose,
                stateful_metrics=["loss", "accuracy", "images/sec"], unit_name="step")
            totals = _Totals()
            while step < epoch_end:
                tick = time.perf_counter()
                out = {key: float(value) for key, value in self.train_step(iterator).items()}
                elapsed = time.perf_counter() - tick
                step += 1
                self._check_finite(out, step)
                totals.add(out)
                window.add(out, elapsed)
                if step > start + 1:
                    # The run's first step traces and compiles: not training throughput.
                    self.train_seconds += elapsed
                    self.timed_images += config.global_batch_size
                images_per_sec = config.global_batch_size / max(elapsed, 1e-9)
                progbar.update(step - epoch * self.steps_per_epoch, [
                    ("loss", totals.loss), ("accuracy", totals.accuracy),
                    ("images/sec", images_per_sec)])
                if step % config.log_every_steps == 0 or step == epoch_end:
                    self._write_summaries(self.train_writer, step, window.summary(
                        learning_rate=self._learning_rate(step - 1)))
                    window = _Window()
                at_epoch_end = step == epoch_end
                if at_epoch_end or (
                        config.checkpoint_every_steps
                        and step % config.checkpoint_every_steps == 0):
                    self._save(step, epoch + 1 if at_epoch_end else epoch)
                self.fewshot.maybe_run(step, self.eval_writer, last=step == self.total_steps)
            self.last_epoch = {"loss": totals.loss, "accuracy": totals.accuracy}
            if not verbose:
                # The progress bar, when shown, already says this.
                logging.info("Epoch %d/%d: step %d, loss %.4f, accuracy %.4f", epoch + 1,
                             self.total_epochs, step, totals.loss, totals.accuracy)
            if (config.eval_every_epochs and (epoch + 1) % config.eval_every_epochs == 0
                    and step < self.total_steps):
                evaluation = self._evaluate()
                self._write_summaries(self.eval_writer, step, {
                    "loss": evaluation["loss"], "accuracy": evaluation["accuracy"]})
        self.global_step = step

    def _check_finite(self, out, step):
        loss = out["loss_sum"] / max(out["count"], 1.0)
        grads_finite = math.isfinite(out["grad_norm"]) or self.config.mixed_precision == "float16"
        if math.isfinite(loss) and grads_finite:
            return
        what = f"loss is {loss}" if not math.isfinite(loss) else (
            f"gradient norm is {out['grad_norm']}")
        raise NonFiniteLossError(
            f"{what} at step {step} (learning rate {self._learning_rate(step - 1):.3g}); "
            f"stopping. {self._last_checkpoint_note()}; lower --learning_rate, raise "
            "--warmup_steps or check the data")

    def _last_checkpoint_note(self):
        last = checkpointing.latest_checkpoint(self.workdir) if self.is_chief else None
        if last is None:
            return "No checkpoint was saved"
        return f"The last good checkpoint, {last}, is kept"

    def _learning_rate(self, step):
        return float(self.schedule(step)) if callable(self.schedule) else float(self.schedule)

    def _save(self, step, epoch):
        if not bool(self.all_finite()):
            raise NonFiniteLossError(
                f"the weights are NaN or infinite after step {step}; stopping without saving "
                f"them. {self._last_checkpoint_note()}")
        self.step.assign(step)
        self.epoch.assign(epoch)
        self.saver.save(step)

    def _dataset_fn(self, which, seed):
        def dataset_fn(input_context):
            train, evaluation, _ = input_pipeline.load_datasets(
                self.config.dataset, seed=seed, input_context=input_context, **self.data_kwargs)
            if which == "eval":
                return evaluation
            # Static shapes for the model (its patch embedding needs the channels) and for XLA
            # and TPUs (the batch dimension): training batches are always full.
            shape = (input_context.get_per_replica_batch_size(self.config.global_batch_size),
                     *self.info.image_shape)
            return train.map(lambda images, labels: (tf.ensure_shape(images, shape), labels))

        return dataset_fn

    def _evaluate(self):
        dataset = self.strategy.distribute_datasets_from_function(
            self._dataset_fn("eval", seed=self.config.seed))
        totals = _Totals()
        for batch in dataset:
            totals.add({key: float(value) for key, value in self.eval_step(batch).items()})
        if totals.count != self.info.num_eval_examples:
            raise RuntimeError(
                f"evaluation saw {totals.count:.0f} examples, expected "
                f"{self.info.num_eval_examples}")
        logging.info("Evaluation on %d examples: loss %.4f, accuracy %.4f",
                     totals.count, totals.loss, totals.accuracy)
        return {"loss": totals.loss, "accuracy": totals.accuracy, "count": int(totals.count)}

    def _write_summaries(self, writer, step, scalars):
        with writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def _metrics(self, evaluation):
        config, info = self.config, self.info
        images_per_sec = self.timed_images / self.train_seconds if self.train_seconds else None
        return {
            "eval_accuracy": evaluation["accuracy"],
            "eval_loss": evaluation["loss"],
            "eval_examples": evaluation["count"],
            "global_step": self.global_step,
            "resumed_from_step": self.resumed_from_step,
            "train_images_per_sec": images_per_sec,
            "train_loss": self.last_epoch.get("loss"),
            "train_accuracy": self.last_epoch.get("accuracy"),
            "epochs": self.global_step / self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "global_batch_size": config.global_batch_size,
            "num_replicas": self.replicas,
            "strategy": config.strategy,
            "dataset": info.name,
            "num_train_examples": info.num_train_examples,
            "num_eval_examples": info.num_eval_examples,
            "num_classes": info.num_classes,
            "image_shape": list(info.image_shape),
            "variant": config.variant,
            "num_parameters": int(self.model.count_params()),
            "train_seconds": self.train_seconds,
            "wall_seconds": time.time() - self.wall_start,
        }

    def _write_final_outputs(self, metrics):
        model_path = os.path.join(self.workdir, "model.keras")
        with atomic_write(model_path) as temporary:
            self.model.save(temporary)
        if self.config.export:
            # From the saved file, outside the strategy: the export is what
            # `python -m training.export` makes of model.keras.
            export.export_saved_model(model_path, os.path.join(self.workdir, "saved_model"))
        metrics["wall_seconds"] = time.time() - self.wall_start
        _write_text(os.path.join(self.workdir, "metrics.json"),
                      json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _sums(per_example_loss, logits, labels):
    """Per-replica sums that add up across replicas: loss, correct predictions, examples."""
    correct = tf.equal(tf.argmax(logits, axis=-1), tf.argmax(labels, axis=-1))
    return {
        "loss_sum": tf.reduce_sum(tf.cast(per_example_loss, tf.float32)),
        "correct": tf.reduce_sum(tf.cast(correct, tf.float32)),
        "count": tf.cast(tf.shape(labels)[0], tf.float32),
    }


class _Totals:
    """Running sums of `_sums` outputs over an epoch or an evaluation."""

    def __init__(self):
        self.loss_sum = self.correct = self.count = 0.0

    def add(self, out):
        self.loss_sum += out["loss_sum"]
        self.correct += out["correct"]
        self.count += out["count"]

    @property
    def loss(self):
        return self.loss_sum / max(self.count, 1.0)

    @property
    def accuracy(self):
        return self.correct / max(self.count, 1.0)


class _Window(_Totals):
    """Totals over the steps between two TensorBoard writes, with their time and grad norms."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0
        self.grad_norms = []

    def add(self, out, seconds):
        super().add(out)
        self.seconds += seconds
        self.grad_norms.append(out["grad_norm"])

    def summary(self, learning_rate):
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "learning_rate": learning_rate,
            "images_per_sec": self.count / max(self.seconds, 1e-9),
            "grad_norm": float(np.mean(self.grad_norms)),
        }


def evaluate_accuracy(model, dataset, *, data_dir, image_size, batch_size=500):
    """Top-1 accuracy of `model` on `dataset`'s evaluation split, through the evaluation pipeline.

    One replica, `predict_on_batch`, any model that maps images to logits: for comparing saved
    or adapted models outside a training run (benchmarks, tests).
    """
    _, eval_ds, _ = input_pipeline.load_datasets(
        dataset, data_dir=data_dir, image_size=image_size, global_batch_size=batch_size)
    correct = total = 0
    for images, labels in eval_ds:
        predicted = np.argmax(model.predict_on_batch(images), -1)
        correct += int(np.sum(predicted == np.argmax(labels.numpy(), -1)))
        total += int(labels.shape[0])
    return correct / total


def _write_text(path, text):
    with atomic_write(path) as temporary:
        with open(temporary, "w") as f:
            f.write(text)


if __name__ == "__main__":
    training_flags.define_training_flags()
    # --helpshort lists the flags of the defining module too.
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
