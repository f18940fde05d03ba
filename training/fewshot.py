"""Few-shot linear evaluation of a trained model on a TFDS dataset: binary and training hook.

    python -m training.fewshot --model=WORKDIR/model.keras --dataset=digits --shots=1,5,10,25

The model is frozen; its pre-logits features (`keras_vit.fewshot.feature_model`) of every
example of `--train_split` and `--eval_split` are computed once, read through the project's
input pipeline exactly as evaluation reads images (resized, `x / 127.5 - 1`, no augmentation,
converted to the model's channels); then, per shot count and seed, n examples per class are
drawn and a regularized least-squares classifier is fitted and scored
(`keras_vit.fewshot.evaluate`). Every feature of the training split is computed: bound big
splits as big_vision does (`--train_split=train[:65000]`).

`PeriodicFewshot` runs the same evaluation inside `python -m training.train`
(`--fewshot_dataset`, `--fewshot_every_steps`, ...) and logs it to TensorBoard.
"""

import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import keras_vit  # noqa: E402
from training import config as config_lib  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import input_pipeline, outputs  # noqa: E402
from training.model_loading import load_model  # noqa: E402


class FewshotEvaluator:
    """Few-shot linear accuracy of one model on one TFDS dataset.

    Everything that can be checked (the dataset, its splits, enough examples of every class for
    the largest shot count) is checked when the evaluator is built.

    Args:
        model: `keras.Model` taking (B, H, W, C) images in [-1, 1], e.g. `keras_vit.ViT(...)`.
        dataset: str. TFDS name.
        data_dir: str or None. TFDS data directory.
        train_split: str. Split the few-shot examples are drawn from. Defaults to "train".
        eval_split: str or None. Split accuracy is measured on; None: "test", else
            "validation".
        shots: list of int. Defaults to (1, 5, 10, 25).
        seeds: int. Draws per shot count. Defaults to 3.
        l2_reg: float. Defaults to 1024.
        batch_size: int. Images per forward pass. Defaults to 256.
    """

    def __init__(self, model, dataset, *, data_dir=None, train_split="train", eval_split=None,
                 shots=keras_vit.fewshot.DEFAULT_SHOTS, seeds=3,
                 l2_reg=keras_vit.fewshot.DEFAULT_L2_REG, batch_size=256):
        input_shape = tuple(model.input_shape)
        if len(input_shape) != 4 or None in input_shape[1:]:
            raise ValueError(
                f"model {model.name!r} takes inputs of shape {input_shape}; expected images "
                "(batch, height, width, channels) of a fixed size")
        height, width, channels = input_shape[1:]
        common = dict(data_dir=data_dir, image_size=(height, width), channels=channels)
        info = input_pipeline.dataset_info(
            dataset, train_split=train_split, eval_split=eval_split, **common)
        # The evaluation pipeline reads a split once, in order, unaugmented: used for both splits.
        batches = dict(global_batch_size=batch_size, cache=False, **common)
        self.test_ds = input_pipeline.eval_dataset(dataset, eval_split=info.eval_split, **batches)
        self.train_ds = input_pipeline.eval_dataset(dataset, eval_split=train_split, **batches)
        self.info = info
        self.name = info.name
        self.shots = sorted(set(shots))
        self.seeds = seeds
        self.l2_reg = l2_reg
        self.batch_size = batch_size
        extractor = keras_vit.fewshot.feature_model(model)
        self._features = tf.function(lambda images: extractor(images, training=False),
                                     reduce_retracing=True)
        # A pass over the labels now: too few examples of a class fails before any work.
        labels = self.train_ds.map(lambda images, labels: tf.argmax(labels, axis=-1))
        with input_pipeline.explain_data_errors():
            labels = tf.concat(list(labels), axis=0).numpy()
        keras_vit.fewshot.draw_support_sets(labels, self.shots, seeds,
                                            num_classes=info.num_classes)

    def evaluate(self, progress=False):
        """Computes the features and returns `keras_vit.fewshot.evaluate`'s results."""
        with input_pipeline.explain_data_errors():
            train = self._extract(self.train_ds, self.info.num_train_examples, "train", progress)
            test = self._extract(self.test_ds, self.info.num_eval_examples, "eval", progress)
        return keras_vit.fewshot.evaluate(
            *train, *test, shots=self.shots, seeds=self.seeds, l2_reg=self.l2_reg,
            num_classes=self.info.num_classes)

    def _extract(self, dataset, count, split, progress):
        bar = keras.utils.Progbar(
            math.ceil(count / self.batch_size), verbose=(1 if sys.stdout.isatty() else 2),
            unit_name="batch") if progress else None
        if bar is not None:
            print(f"Features of {self.name} ({split}: {count} images)", flush=True)

        def batches():
            for step, (images, labels) in enumerate(dataset, start=1):
                yield images, labels
                if bar is not None:
                    bar.update(step)

        return keras_vit.fewshot.extract_features(self._features, batches())


def format_results(name, results):
    """One line per shot count: 'digits 5-shot: 71.03% +- 1.20 (3 draws)'."""
    return "\n".join(
        f"{name} {shot}-shot: {100 * r['mean']:.2f}% +- {100 * r['std']:.2f} "
        f"({len(r['accuracies'])} draws)" for shot, r in results.items())


class PeriodicFewshot:
    """The training binary's optional few-shot evaluation, logged to TensorBoard.

    Built from the run's `Config` before anything is written (so a bad `--fewshot_dataset`
    stops the run early); `maybe_run` is called after every training step and evaluates every
    `fewshot_every_steps` steps and at the last step, on the chief only. TensorBoard scalars:
    `fewshot/DATASET_Nshot` (mean accuracy over the draws) and `fewshot/DATASET_Nshot_std`.
    """

    def __init__(self, evaluator=None, every_steps=0):
        self.evaluator = evaluator
        self.every_steps = every_steps

    @classmethod
    def from_config(cls, config, model, *, strategy, is_chief):
        if not config.fewshot_dataset:
            return cls()
        if isinstance(strategy, tf.distribute.TPUStrategy):
            raise ValueError("fewshot_dataset is not supported with strategy 'tpu' (the "
                             "features are computed outside the replicas); evaluate the saved "
                             "model with `python -m training.fewshot` instead")
        evaluator = FewshotEvaluator(
            model, config.fewshot_dataset,
            data_dir=config.fewshot_data_dir or config.data_dir,
            train_split=config.fewshot_train_split,
            shots=config_lib.parse_shots(config.fewshot_shots, name="fewshot_shots"),
            seeds=config.fewshot_seeds,
        )
        return cls(evaluator if is_chief else None, config.fewshot_every_steps)

    def maybe_run(self, step, writer, *, last):
        if self.evaluator is None:
            return None
        if not last and not (self.every_steps and step % self.every_steps == 0):
            return None
        results = self.evaluator.evaluate()
        name = self.evaluator.name
        with writer.as_default(step=step):
            for shot, result in results.items():
                tf.summary.scalar(f"fewshot/{name}_{shot}shot", result["mean"])
                tf.summary.scalar(f"fewshot/{name}_{shot}shot_std", result["std"])
        writer.flush()
        logging.info("Few-shot at step %d:\n%s", step, format_results(name, results))
        return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    flags = training_flags.FLAGS
    try:
        shots = config_lib.parse_shots(flags.shots)
        model = load_model(flags.model)
        evaluator = FewshotEvaluator(
            model, flags.dataset, data_dir=flags.data_dir or None,
            train_split=flags.train_split, eval_split=flags.eval_split or None, shots=shots,
            seeds=flags.seeds, l2_reg=flags.l2_reg, batch_size=flags.batch_size)
        results = evaluator.evaluate(progress=True)
    except ValueError as exc:
        raise SystemExit(f"training.fewshot: error: {exc}") from None
    print(format_results(evaluator.name, results), flush=True)
    if flags.output:
        record = {
            "model": os.path.abspath(flags.model), "dataset": evaluator.name,
            "train_split": flags.train_split, "eval_split": evaluator.info.eval_split,
            "l2_reg": flags.l2_reg, "seeds": flags.seeds,
            "results": {str(shot): result for shot, result in results.items()},
        }
        write_record(flags.output, record)


def write_record(path, record):
    """Writes the binary's --output JSON atomically: the previous file stays until it is whole."""
    outputs.write_text(path, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    training_flags.define_fewshot_flags()
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
