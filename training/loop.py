"""The training loop and the evaluation pass of the training binary.

`train` runs optimizer steps from the resumed step to the run's last, epoch by epoch: a progress
bar, TensorBoard scalars every `log_every_steps`, a checkpoint at each epoch end and every
`checkpoint_every_steps`, the periodic few-shot and full evaluations, and a stop with
`NonFiniteLossError` as soon as the loss, the gradients or the weights are not finite.
`evaluate` is one pass over the evaluation dataset. Both take the step functions of
`training/steps.py` and the writers of `training/outputs.py`; neither builds anything.
"""

import dataclasses
import math
import sys
import time

import keras
import numpy as np
from absl import logging


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN or infinite; the message names the step."""


@dataclasses.dataclass(frozen=True)
class RunLength:
    """How long a run is, in optimizer steps and epochs.

    Attributes:
        steps_per_epoch: int. Full global batches in the training split.
        total_steps: int. Optimizer steps of the whole run.
    """

    steps_per_epoch: int
    total_steps: int

    @classmethod
    def create(cls, config, info):
        """From `config.train_steps` or `config.epochs`; ValueError if an epoch has no step."""
        steps_per_epoch = info.num_train_examples // config.global_batch_size
        if steps_per_epoch == 0:
            raise ValueError(
                f"global_batch_size {config.global_batch_size} is larger than the "
                f"{info.num_train_examples} training examples of {info.name!r} "
                f"({info.train_split}); use at most {info.num_train_examples}"
            )
        return cls(steps_per_epoch, config.train_steps or config.epochs * steps_per_epoch)

    @property
    def total_epochs(self):
        return math.ceil(self.total_steps / self.steps_per_epoch)


@dataclasses.dataclass
class Progress:
    """What `train` reports: where it stopped, its throughput and the last epoch's figures."""

    global_step: int
    train_seconds: float = 0.0
    timed_images: int = 0
    last_epoch: dict = dataclasses.field(default_factory=dict)
    stopped_by: str = None

    @property
    def images_per_sec(self):
        """Training images/sec over the timed steps (all but the first, which compiles)."""
        return self.timed_images / self.train_seconds if self.train_seconds else None


def train(config, length, state, steps, make_iterator, *, start, outputs, fewshot, evaluate_fn,
          show_progress, stopper):
    """Trains from step `start` to `length.total_steps`.

    Args:
        config: `training.config.Config` (logging, checkpoint and evaluation intervals).
        length: `RunLength`.
        state: `training.state.TrainState`; its `step` and `epoch` are set at each checkpoint.
        steps: `training.steps.StepFunctions`.
        make_iterator: callable returning the iterator of the distributed training batches;
            called only when there is something to train.
        start: int. The step the run resumes from (0 for a new run).
        outputs: `training.outputs.RunOutputs`.
        fewshot: `training.fewshot.PeriodicFewshot`.
        evaluate_fn: callable returning `evaluate(...)`'s dict, for `eval_every_epochs`.
        show_progress: bool. Show a progress bar (on stdout).
        stopper: `training.preemption.StopAgreement`. When it says so (a SIGTERM or SIGINT
            here or on another worker), training stops after the current step, whose
            checkpoint is saved, and `Progress.stopped_by` names the reason.

    Returns:
        `Progress`.

    Raises:
        NonFiniteLossError: the loss, the gradient norm or the weights are NaN or infinite.
    """
    progress = Progress(global_step=max(start, 0))
    if start >= length.total_steps:
        logging.info("Step %d >= train steps %d: nothing to train", start, length.total_steps)
        return progress
    if stopper.at_boundary():
        # Asked to stop while the run was starting: the resumed checkpoint is the step.
        progress.stopped_by = stopper.reason
        return progress
    iterator = make_iterator()
    verbose = 0 if not show_progress else (1 if sys.stdout.isatty() else 2)
    batch = config.global_batch_size
    window = Window()
    step = start
    while step < length.total_steps:
        epoch = step // length.steps_per_epoch
        epoch_end = min((epoch + 1) * length.steps_per_epoch, length.total_steps)
        if verbose:
            print(f"Epoch {epoch + 1}/{length.total_epochs}", flush=True)
        progbar = keras.utils.Progbar(
            epoch_end - epoch * length.steps_per_epoch, verbose=verbose,
            stateful_metrics=["loss", "accuracy", "images/sec"], unit_name="step")
        totals = Totals()
        while step < epoch_end:
            tick = time.perf_counter()
            out = {key: float(value)
                   for key, value in steps.train(iterator, stopper.step_flag()).items()}
            elapsed = time.perf_counter() - tick
            step += 1
            _check_finite(out, step, config, state, outputs)
            totals.add(out)
            window.add(out, elapsed)
            if step > start + 1:
                # The run's first step traces and compiles: not training throughput.
                progress.train_seconds += elapsed
                progress.timed_images += batch
            progbar.update(step - epoch * length.steps_per_epoch, [
                ("loss", totals.loss), ("accuracy", totals.accuracy),
                ("images/sec", batch / max(elapsed, 1e-9))])
            if step % config.log_every_steps == 0 or step == epoch_end:
                outputs.scalars("train", step, window.summary(state.learning_rate(step - 1)))
                window = Window()
            at_epoch_end = step == epoch_end
            if at_epoch_end or (
                    config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0):
                _save(step, epoch + 1 if at_epoch_end else epoch, state, steps, outputs)
            if stopper.after_step(out):
                _save(step, epoch + 1 if at_epoch_end else epoch, state, steps, outputs)
                logging.warning("Stopped by %s after step %d; checkpoint %d saved",
                                stopper.reason, step, step)
                progress.global_step, progress.stopped_by = step, stopper.reason
                return progress
            fewshot.maybe_run(step, outputs.writer("eval"), last=step == length.total_steps)
        progress.last_epoch = {"loss": totals.loss, "accuracy": totals.accuracy}
        if not verbose:
            # The progress bar, when shown, already says this.
            logging.info("Epoch %d/%d: step %d, loss %.4f, accuracy %.4f", epoch + 1,
                         length.total_epochs, step, totals.loss, totals.accuracy)
        if (config.eval_every_epochs and (epoch + 1) % config.eval_every_epochs == 0
                and step < length.total_steps):
            evaluation = evaluate_fn()
            outputs.scalars("eval", step, {
                "loss": evaluation["loss"], "accuracy": evaluation["accuracy"]})
    progress.global_step = step
    return progress


def evaluate(steps, dataset, *, num_examples):
    """One pass of `steps.evaluate` over the distributed `dataset`.

    Returns:
        {"loss": mean loss, "accuracy": top-1 accuracy, "count": examples seen}.

    Raises:
        RuntimeError: the pass saw another number of examples than `num_examples`.
    """
    totals = Totals()
    for batch in dataset:
        totals.add({key: float(value) for key, value in steps.evaluate(batch).items()})
    if totals.count != num_examples:
        raise RuntimeError(
            f"evaluation saw {totals.count:.0f} examples, expected {num_examples}")
    logging.info("Evaluation on %d examples: loss %.4f, accuracy %.4f",
                 totals.count, totals.loss, totals.accuracy)
    return {"loss": totals.loss, "accuracy": totals.accuracy, "count": int(totals.count)}


def _check_finite(out, step, config, state, outputs):
    loss = out["loss_sum"] / max(out["count"], 1.0)
    # Under float16 loss scaling a non-finite gradient is expected now and then: the optimizer
    # skips that step and lowers the scale.
    grads_finite = math.isfinite(out["grad_norm"]) or config.mixed_precision == "float16"
    if math.isfinite(loss) and grads_finite:
        return
    what = f"loss is {loss}" if not math.isfinite(loss) else (
        f"gradient norm is {out['grad_norm']}")
    raise NonFiniteLossError(
        f"{what} at step {step} (learning rate {state.learning_rate(step - 1):.3g}); "
        f"stopping. {outputs.last_checkpoint_note()}; lower --learning_rate, raise "
        "--warmup_steps or check the data")


def _save(step, epoch, state, steps, outputs):
    if not bool(steps.all_finite()):
        raise NonFiniteLossError(
            f"the weights are NaN or infinite after step {step}; stopping without saving "
            f"them. {outputs.last_checkpoint_note()}")
    state.step.assign(step)
    state.epoch.assign(epoch)
    outputs.save_checkpoint(step)


class Totals:
    """Running sums of `training.steps.batch_sums` outputs over an epoch or an evaluation."""

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


class Window(Totals):
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
