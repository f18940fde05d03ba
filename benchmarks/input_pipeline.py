"""Images/sec of the training input pipeline alone (training/input_pipeline.py), no model.

The pipeline must outrun the training step it feeds; this prints what it delivers per dataset,
image size and augmentation setting, for the training set (the figure that matters) and the
evaluation set:

    python benchmarks/input_pipeline.py --datasets=digits,cifar10_jpeg --image_sizes=32

Augmentation settings: `none` (resize only), `crop_flip` (the ViT fine-tuning default: Inception
crop + flip) and `full` (crop, flip, RandAugment 2 layers, MixUp 0.2 or CutMix 1.0 per batch).
Before timing, each pipeline runs one epoch plus some batches untimed, so the in-memory cache is
filled, tf.data's autotuner has settled and the keras-cv functions are traced; each figure is then
the median over `--repeats` rounds of `--batches` batches. `digits` is prepared in a temporary
directory unless `--digits_data_dir` is given; the other datasets are read from `--data_dir`
(default: $KERAS_VIT_TFDS_DIR; `cifar10_jpeg`, an offline copy of CIFAR-10, needs one of them;
without either, public datasets such as `cifar10` are read from TFDS's own directory).
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Run as a script from anywhere: make the repository's `training` package importable.
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO_ROOT))

import math  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from training.input_pipeline import AugmentConfig, load_datasets  # noqa: E402

_DATASETS = flags.DEFINE_list("datasets", ["digits", "cifar10_jpeg"], "TFDS datasets to time.")
_IMAGE_SIZES = flags.DEFINE_list(
    "image_sizes", ["native", "32"], "Square sizes; 'native' is the dataset's own size."
)
_AUGMENTS = flags.DEFINE_list(
    "augments", ["none", "crop_flip", "full"], "Augmentation settings to time."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Global batch size.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Batches per timed round.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds; the median is reported.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    os.environ.get("KERAS_VIT_TFDS_DIR"),
    "TFDS data_dir of the datasets other than digits (default: $KERAS_VIT_TFDS_DIR).",
)
_DIGITS_DATA_DIR = flags.DEFINE_string(
    "digits_data_dir", None, "TFDS data_dir for digits; a temporary directory when unset."
)

_AUGMENT_CONFIGS = {
    "none": AugmentConfig.none(),
    "crop_flip": AugmentConfig(),
    "full": AugmentConfig(rand_augment=True, mixup_alpha=0.2, cutmix_alpha=1.0),
}
_NATIVE_SIZES = {"digits": 8, "cifar10_jpeg": 32, "cifar10": 32}


def _images_per_sec(iterator, batches, repeats):
    """Median images/sec over `repeats` rounds of `batches` batches from `iterator`."""
    rates = []
    for _ in range(repeats):
        start, images = time.perf_counter(), 0
        for _ in range(batches):
            batch, _ = next(iterator)
            images += int(batch.shape[0])
        rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def _eval_images_per_sec(dataset, repeats):
    """Median images/sec of full passes over the evaluation set (after one untimed pass)."""
    rates = []
    for round_index in range(repeats + 1):
        start, images = time.perf_counter(), 0
        for batch, _ in dataset:
            images += int(batch.shape[0])
        if round_index:  # The first pass fills the cache.
            rates.append(images / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    unknown = set(_AUGMENTS.value) - set(_AUGMENT_CONFIGS)
    if unknown:
        raise app.UsageError(
            f"unknown --augments {sorted(unknown)}; known: {list(_AUGMENT_CONFIGS)}"
        )
    if "cifar10_jpeg" in _DATASETS.value and not _DATA_DIR.value:
        raise app.UsageError(
            "cifar10_jpeg is an offline copy of CIFAR-10 read from a TFDS directory: set "
            "$KERAS_VIT_TFDS_DIR or --data_dir to it, or time --datasets=digits,cifar10")
    logging.set_verbosity(logging.WARNING)  # TFDS logs every dataset it opens at INFO.
    digits_dir = _DIGITS_DATA_DIR.value or tempfile.mkdtemp(prefix="digits_tfds_")
    print(f"tf {tf.__version__}, {os.cpu_count()} CPUs, batch {_BATCH_SIZE.value}, "
          f"median of {_REPEATS.value} x {_BATCHES.value} batches")
    print(f"{'dataset':<14}{'size':>6}  {'augment':<10}{'train img/s':>12}{'eval img/s':>12}")
    for dataset in _DATASETS.value:
        data_dir = digits_dir if dataset == "digits" else _DATA_DIR.value
        sizes = []
        for size in _IMAGE_SIZES.value:
            size = _NATIVE_SIZES.get(dataset, 224) if size == "native" else int(size)
            if size not in sizes:
                sizes.append(size)
        for size in sizes:
            for augment in _AUGMENTS.value:
                train, evaluation, info = load_datasets(
                    dataset,
                    data_dir=data_dir,
                    image_size=size,
                    global_batch_size=_BATCH_SIZE.value,
                    augment=_AUGMENT_CONFIGS[augment],
                )
                iterator = iter(train)
                warmup = math.ceil(info.num_train_examples / _BATCH_SIZE.value) + 10
                for _ in range(warmup):
                    next(iterator)
                train_rate = _images_per_sec(iterator, _BATCHES.value, _REPEATS.value)
                # Eval does not depend on the augmentation: time it once per size.
                eval_rate = (
                    f"{_eval_images_per_sec(evaluation, min(_REPEATS.value, 3)):>12,.0f}"
                    if augment == _AUGMENTS.value[0]
                    else f"{'':>12}"
                )
                print(f"{dataset:<14}{size:>6}  {augment:<10}{train_rate:>12,.0f}{eval_rate}",
                      flush=True)


if __name__ == "__main__":
    app.run(main)
