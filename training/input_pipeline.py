"""Input pipeline of the training binary: TFDS -> decode -> crop/resize -> augment -> batch.

Three functions turn any TFDS image-classification dataset (features `image` and `label`) into
what a training run needs, for one machine or for one worker of a `tf.distribute` strategy:
`dataset_info` (classes, sizes, image shape: no pipeline built), `train_dataset` and
`eval_dataset`; `load_datasets` returns all three at once.

    train: read (shuffled files, this worker's part) -> decode [-> cache] -> shuffle -> repeat
           -> Inception crop or resize, random flip (per example)
           -> batch (drop_remainder) -> RandAugment, MixUp / CutMix (keras-cv, per batch)
           -> normalize -> prefetch
    eval:  read (this worker's part, in order) -> decode [-> cache] -> resize -> normalize
           -> batch (the last batch may be partial) -> prefetch

Conventions every consumer relies on:
- Images are float32 in [-1, 1], `x / 127.5 - 1` (the original ViT convention, so that the
  published checkpoints see the input range they were trained on). `normalize` and
  `preprocess_for_eval` are public so that the exported serving signature applies exactly what
  evaluation applies.
- Labels are always float32 one-hot, shape (batch, num_classes), in both datasets, with or
  without MixUp/CutMix: MixUp and CutMix need soft labels, and one format means one loss
  (`keras.losses.CategoricalCrossentropy(from_logits=True)`) and one accuracy metric
  (`keras.metrics.CategoricalAccuracy`) whatever the augmentation flags say.
- Grayscale datasets (`digits`, `mnist`) keep their single channel unless `channels=3` asks for
  RGB; `DatasetInfo.channels` says how many channels the model must be built for
  (`keras_vit.ViT(..., num_channels=info.channels)`).
- Decoding errors (a corrupt image in the prepared files) surface when the iterator reaches them,
  as TensorFlow errors; `explain_data_errors()` / `describe_data_error` turn them into a
  ValueError naming the dataset, split and directory.

The binary reads prepared TFDS data only and never downloads (training jobs on TPU workers or
behind firewalls must not fetch data on their own); the datasets in `training.datasets`
(`digits`) are the exception: they are generated locally on first use, without network.
"""

import contextlib
import dataclasses
import difflib
import os
import re

import keras
import keras_cv
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import training.datasets  # Registers the embedded builders ("digits") with TFDS.
from keras_vit.validation import check_int, check_number

# A decoded split is cached in memory when it is at most this big (cifar10: 147 MiB,
# digits: 92 KiB); datasets whose image shape is not fixed (imagenet2012) are never cached.
_AUTO_CACHE_MAX_BYTES = 1 << 30
# Aspect ratios of the Inception crop (Szegedy et al., 2015, as used by the ViT fine-tuning code).
_CROP_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which training augmentations the pipeline applies. Evaluation is never augmented.

    The defaults are the ViT paper's fine-tuning recipe (Inception crop and horizontal flip, no
    RandAugment, no MixUp); `AugmentConfig.none()` turns everything off.

    Args:
        inception_crop: bool. Take a random crop covering `crop_area_range` of the image with an
            aspect ratio in [3/4, 4/3], then resize it to the target size; when False, resize the
            whole image. Defaults to True.
        crop_area_range: (float, float). Fraction of the image area the Inception crop covers.
            Defaults to (0.05, 1.0), the range of the original ViT input pipeline.
        flip: bool. Random horizontal flip. Defaults to True (turn it off for digits and text).
        rand_augment: bool. keras-cv RandAugment (Cubuk et al., 2020). Defaults to False.
        rand_augment_layers: int. Operations applied to each image. Defaults to 2.
        rand_augment_magnitude: float in [0, 1]. keras-cv's magnitude scale, where 1.0 is the
            strongest distortion (the paper's m=10 of 30 is about 0.33). Defaults to 0.5.
        mixup_alpha: float. MixUp (Zhang et al., 2018) Beta(alpha, alpha) parameter; 0 disables.
            Defaults to 0.0.
        cutmix_alpha: float. CutMix (Yun et al., 2019) Beta(alpha, alpha) parameter; 0 disables.
            When both MixUp and CutMix are on, each batch gets one of them, chosen at random.
            Defaults to 0.0.
    """

    inception_crop: bool = True
    crop_area_range: tuple = (0.05, 1.0)
    flip: bool = True
    rand_augment: bool = False
    rand_augment_layers: int = 2
    rand_augment_magnitude: float = 0.5
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        low, high = self.crop_area_range
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"crop_area_range {self.crop_area_range} is not a range within (0, 1]; expected "
                "(low, high) with 0 < low <= high <= 1"
            )
        check_int("rand_augment_layers", self.rand_augment_layers, minimum=1)
        # keras-cv's magnitude scale.
        check_number("rand_augment_magnitude", self.rand_augment_magnitude, 0.0, 1.0,
                     high_open=False)
        for name in ("mixup_alpha", "cutmix_alpha"):  # 0 disables them
            check_number(name, getattr(self, name), low=0.0)

    @classmethod
    def none(cls):
        """Returns a config with every augmentation off: the training images are only resized."""
        return cls(inception_crop=False, flip=False)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the model and the training loop need to know about a loaded dataset.

    Attributes:
        name: str. The TFDS name, e.g. "cifar10".
        num_classes: int. Width of the one-hot labels.
        num_train_examples: int. Examples in the whole training split (all workers together):
            steps per epoch are `num_train_examples // global_batch_size`.
        num_eval_examples: int. Examples in the whole evaluation split (all workers together).
        image_shape: (height, width, channels) of the images in the batches.
        class_names: tuple of str, one per class.
        train_split: str. The TFDS split the training set reads.
        eval_split: str. The TFDS split the evaluation set reads.
    """

    name: str
    num_classes: int
    num_train_examples: int
    num_eval_examples: int
    image_shape: tuple
    class_names: tuple
    train_split: str
    eval_split: str

    @property
    def channels(self):
        """int: channels of the images (1 for grayscale datasets); build the model with it."""
        return self.image_shape[-1]


def normalize(images):
    """Maps uint8-range pixel values to float32 in [-1, 1] as `x / 127.5 - 1`.

    The original ViT convention (0 -> -1, 255 -> 1), which the published checkpoints expect.

    Args:
        images: tensor of any shape with values in [0, 255], integer or float.

    Returns:
        float32 tensor of the same shape with values in [-1, 1].

    Example:
    >>> normalize(tf.constant([0, 255], tf.uint8)).numpy().tolist()
    [-1.0, 1.0]
    """
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def preprocess_for_eval(image, image_size):
    """Resizes raw images to `image_size` and normalizes them: what evaluation and serving apply.

    Bilinear resize of the whole image, no crop, so that nothing of an object near the border is
    lost; the exported SavedModel calls this function so serving sees what evaluation saw.

    Args:
        image: uint8 (or 0..255 float) tensor, one image (H, W, C) or a batch (B, H, W, C).
        image_size: int or (height, width). Target size.

    Returns:
        float32 tensor (..., height, width, C) with values in [-1, 1].
    """
    height, width = _image_size(image_size)
    image = tf.image.resize(image, (height, width), method="bilinear")
    return normalize(image)


def dataset_info(dataset, *, data_dir, image_size, train_split="train", eval_split=None,
                 channels=None):
    """What a model and a training loop need to know about a dataset, without building a pipeline.

    Checks everything `train_dataset` and `eval_dataset` would check about the data (the name,
    `data_dir`, the features, the splits, the size, the channels) and prepares the embedded
    datasets on first use.

    Args:
        dataset, data_dir, image_size, train_split, eval_split, channels: as for
            `load_datasets`.

    Returns:
        A `DatasetInfo`.

    Raises:
        ValueError: as `load_datasets`, for everything but the batch size and the augmentation.

    Example:
    >>> info = dataset_info("digits", data_dir=data_dir, image_size=32)
    >>> info.num_classes, info.image_shape, info.eval_split
    (10, (32, 32, 1), 'test')
    """
    height, width = _image_size(image_size)
    source = _source(dataset, data_dir, channels)
    eval_split = _eval_split(source.builder, eval_split)
    return DatasetInfo(
        name=source.builder.name,
        num_classes=len(source.class_names),
        num_train_examples=_num_examples(source.builder, train_split, "train_split"),
        num_eval_examples=_num_examples(source.builder, eval_split, "eval_split"),
        image_shape=(height, width, source.channels),
        class_names=tuple(source.class_names),
        train_split=train_split,
        eval_split=eval_split,
    )


def train_dataset(
    dataset,
    *,
    data_dir,
    image_size,
    global_batch_size,
    train_split="train",
    shuffle_buffer=10_000,
    seed=0,
    augment=AugmentConfig(),
    input_context=None,
    cache=None,
    channels=None,
):
    """The training dataset alone: shuffled, repeated, augmented, full batches.

    Args: as for `load_datasets`; `cache` (None) caches when the decoded training split is at
    most 1 GiB.

    Returns:
        A `tf.data.Dataset` that repeats forever and yields (images, labels): images float32
        (B, height, width, channels) in [-1, 1], labels float32 one-hot (B, num_classes) (soft
        with MixUp/CutMix), every batch full.

    Raises:
        ValueError: as `load_datasets`.
    """
    height, width = _image_size(image_size)
    batch_size = _per_replica_batch_size(global_batch_size, input_context)
    if not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment {augment!r} is not an AugmentConfig")
    check_int("shuffle_buffer", shuffle_buffer, minimum=1)
    check_int("seed", seed)
    source = _source(dataset, data_dir, channels)
    builder, channels, num_classes = source.builder, source.channels, len(source.class_names)
    num_examples = _num_examples(builder, train_split, "train_split")
    decode = _decoder(builder, train_split, source.image_feature, channels)
    if cache is None:
        cache = _small_enough_to_cache(source.image_feature, num_examples)
    pipeline_id = input_context.input_pipeline_id if input_context else 0

    # Decoded images are cached before shuffling so that every epoch is shuffled anew; without a
    # cache the shuffle buffer holds the encoded bytes, which keeps a 10,000 example buffer of
    # ImageNet JPEGs at ~1 GiB instead of ~5 GiB decoded.
    train = _read(builder, train_split, input_context, shuffle_files=True, seed=seed)
    if cache:
        train = train.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
    train = train.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    # One stateless seed pair per example: the crop and flip draws depend on the seed and the
    # example's position only, not on which parallel map thread got there first. Workers fold in
    # their id so that they do not crop their (different) images identically.
    example_seeds = tf.data.Dataset.random(seed=seed * 1_000_003 + pipeline_id).batch(2)
    train = tf.data.Dataset.zip((train, example_seeds))

    def _train_example(example, example_seed):
        image, label = example
        if not cache:
            image, label = decode(image, label)
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
        if augment.inception_crop:
            image = _inception_crop(image, crop_seed, augment.crop_area_range)
        image = tf.image.resize(image, (height, width), method="bilinear")
        if augment.flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, label

    train = train.map(_train_example, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.batch(batch_size, drop_remainder=True)
    train = train.map(
        _batch_augmenter(augment, channels, seed), num_parallel_calls=tf.data.AUTOTUNE
    )
    return _per_worker(train.prefetch(tf.data.AUTOTUNE), input_context)


def eval_dataset(
    dataset,
    *,
    data_dir,
    image_size,
    global_batch_size,
    eval_split=None,
    input_context=None,
    cache=None,
    channels=None,
):
    """The evaluation dataset alone: every example of the split once, in order, unaugmented.

    Args: as for `load_datasets`; `cache` (None) caches when the decoded evaluation split is at
    most 1 GiB.

    Returns:
        A `tf.data.Dataset` of (images, labels) as `train_dataset`'s, preprocessed by
        `preprocess_for_eval`, its last batch possibly partial. Iterate it once per evaluation.

    Raises:
        ValueError: as `load_datasets`.
    """
    height, width = _image_size(image_size)
    batch_size = _per_replica_batch_size(global_batch_size, input_context)
    source = _source(dataset, data_dir, channels)
    builder, num_classes = source.builder, len(source.class_names)
    eval_split = _eval_split(builder, eval_split)
    num_examples = _num_examples(builder, eval_split, "eval_split")
    decode = _decoder(builder, eval_split, source.image_feature, source.channels)
    if cache is None:
        cache = _small_enough_to_cache(source.image_feature, num_examples)

    evaluation = _read(builder, eval_split, input_context, shuffle_files=False, seed=0)
    evaluation = evaluation.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        evaluation = evaluation.cache()
    evaluation = evaluation.map(
        lambda image, label: (
            preprocess_for_eval(image, (height, width)),
            tf.one_hot(label, num_classes, dtype=tf.float32),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    evaluation = evaluation.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
    return _per_worker(evaluation, input_context)


def raw_images(dataset, *, data_dir, image_size, split, count=None, seed=None, channels=None):
    """uint8 images of `split` at `image_size`, as a deployed model takes them, and their labels.

    Each image is decoded, resized bilinearly (as `preprocess_for_eval` resizes), rounded and
    clipped to uint8: the input of the LiteRT and ONNX exports (`training.export`), whose
    callers resize their own images. Used to calibrate an int8 export and to check exports.

    Args:
        dataset, data_dir, channels: as for `load_datasets`.
        image_size: int or (height, width).
        split: str. TFDS split, e.g. "train" or "test[:100]".
        count: int or None. Images to return; None: all of `split`.
        seed: int or None. None: the first `count` images in order; an int: `count` images drawn
            at random (without replacement) with this seed.

    Returns:
        (images, labels): uint8 array (N, height, width, channels) and int64 array (N,).

    Raises:
        ValueError: as `load_datasets`, or `count` is not a positive int, or the split has
            fewer than `count` images.
    """
    height, width = _image_size(image_size)
    if count is not None:
        check_int("count", count, minimum=1)
    if seed is not None:
        check_int("seed", seed)
    source = _source(dataset, data_dir, channels)
    num_examples = _num_examples(source.builder, split, "split")
    if count is not None and count > num_examples:
        raise ValueError(
            f"count {count} is more than the {num_examples} images of {dataset!r} split {split!r}"
        )
    decode = _decoder(source.builder, split, source.image_feature, source.channels)
    ds = _read(source.builder, split, None, shuffle_files=False, seed=0)
    if seed is not None:
        ds = ds.shuffle(num_examples, seed=seed, reshuffle_each_iteration=False)
    if count is not None:
        ds = ds.take(count)

    def resize(image, label):
        image = tf.image.resize(image, (height, width), method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8), label

    ds = ds.map(decode).map(resize).batch(256)
    images, labels = [], []
    for image_batch, label_batch in ds.as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load_datasets(
    dataset,
    *,
    data_dir,
    image_size,
    global_batch_size,
    train_split="train",
    eval_split=None,
    shuffle_buffer=10_000,
    seed=0,
    augment=AugmentConfig(),
    input_context=None,
    cache=None,
    channels=None,
):
    """Builds the training and evaluation datasets of a TFDS image-classification dataset.

    `dataset_info`, `train_dataset` and `eval_dataset` together, for callers that want all
    three; a caller that needs one of them (the training binary builds each once) calls it
    alone.

    Works for any prepared TFDS dataset with an `image` (Image or uint8 Tensor, (H, W, C)) and a
    `label` (ClassLabel) feature: `cifar10`, `imagenet2012`, `oxford_flowers102`, a read-only
    dataset found in `data_dir` such as `cifar10_jpeg`, and the embedded `digits`, which is
    prepared on first use without network. Nothing else is ever downloaded.

    Args:
        dataset: str. TFDS name, optionally with config and version ("cifar10:3.0.2").
        data_dir: str or None. TFDS data directory; None means TFDS's default
            (~/tensorflow_datasets or $TFDS_DATA_DIR). Must exist and be readable.
        image_size: int or (height, width). Size of the images in the batches.
        global_batch_size: int. Batch size summed over all replicas. With `input_context`, each
            dataset yields per-replica batches of `global_batch_size / num_replicas_in_sync`.
        train_split: str. TFDS split to train on (slices such as "train[:90%]" work). Defaults
            to "train".
        eval_split: str or None. TFDS split to evaluate on; None picks "test" when the dataset
            has one, else "validation" (imagenet2012 has no labelled test split). Defaults to
            None.
        shuffle_buffer: int. Examples in the training shuffle buffer. Defaults to 10,000.
        seed: int. Seed of file and example shuffling and of the crop and flip draws (which are
            stateless per example, so they are reproducible under parallel map); keras-cv's
            augmentations draw from their own generators. Defaults to 0.
        augment: AugmentConfig. Training augmentations. Defaults to `AugmentConfig()`.
        input_context: tf.distribute.InputContext or None. When given (as passed to the function
            of `strategy.distribute_datasets_from_function`), this worker reads its own
            1/num_input_pipelines of each split and batches per replica. Defaults to None.
        cache: bool or None. Keep the decoded images in memory after the first epoch; None
            caches each split whose decoded images take at most 1 GiB. Defaults to None.
        channels: 1, 3 or None. Channels of the images in the batches: None keeps the
            dataset's own; 3 turns grayscale into RGB (to fine-tune a checkpoint pretrained on
            RGB images on digits or mnist), 1 turns RGB into luma. Defaults to None.

    Returns:
        (train_ds, eval_ds, info): `train_ds` repeats forever and yields (images, labels) with
        images float32 (B, height, width, channels) in [-1, 1] and labels float32 one-hot
        (B, num_classes) (soft with MixUp/CutMix), every batch full; `eval_ds` yields the same
        structure once over the evaluation split, unaugmented, its last batch possibly partial;
        `info` is a `DatasetInfo`.

    Raises:
        ValueError: an unknown dataset, a dataset without `image`/`label` features or not
            prepared in `data_dir`, a missing or unreadable `data_dir`, an unknown split, a
            non-positive size, or a global batch size not divisible by the number of replicas.

    Example (the model is then built with `num_classes=info.num_classes` and
    `num_channels=info.channels`):
    >>> train_ds, eval_ds, info = load_datasets(
    ...     "digits", data_dir=data_dir, image_size=32, global_batch_size=128,
    ...     augment=AugmentConfig(flip=False))
    >>> info.num_classes, info.channels, info.num_train_examples, info.num_eval_examples
    (10, 1, 1438, 359)
    >>> images, labels = next(iter(train_ds))
    >>> images.shape, labels.shape
    (TensorShape([128, 32, 32, 1]), TensorShape([128, 10]))
    """
    common = dict(data_dir=data_dir, image_size=image_size, channels=channels)
    batching = dict(global_batch_size=global_batch_size, input_context=input_context,
                    cache=cache)
    info = dataset_info(dataset, train_split=train_split, eval_split=eval_split, **common)
    train = train_dataset(dataset, train_split=train_split, shuffle_buffer=shuffle_buffer,
                          seed=seed, augment=augment, **common, **batching)
    evaluation = eval_dataset(dataset, eval_split=info.eval_split, **common, **batching)
    return train, evaluation, info


def check_global_batch_size(global_batch_size, num_replicas=1):
    """Raises ValueError unless `global_batch_size` is a positive int divisible by the replicas.

    Example:
    >>> check_global_batch_size(6, num_replicas=4)
    Traceback (most recent call last):
    ...
    ValueError: global_batch_size 6 is not divisible by the number of replicas 4; use a multiple of 4
    """
    if (
        not isinstance(global_batch_size, int)
        or isinstance(global_batch_size, bool)
        or global_batch_size < 1
    ):
        raise ValueError(f"global_batch_size {global_batch_size!r} must be a positive int")
    if global_batch_size % num_replicas:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by the number of replicas "
            f"{num_replicas}; use a multiple of {num_replicas}"
        )



def describe_data_error(exc):
    """Turns an image-decoding failure raised while iterating a dataset into a clear error.

    TensorFlow reports a corrupt image only when the iterator reaches it, as an
    `InvalidArgumentError` from deep inside the training loop. The decode ops of this pipeline
    are named after their dataset and split, which lets this function say which data is broken.

    Args:
        exc: an exception raised while iterating a dataset from `load_datasets`.

    Returns:
        A ValueError naming the dataset, split and directory, or None when `exc` is not a
        decoding failure of this pipeline.
    """
    if not isinstance(exc, tf.errors.OpError):
        return None
    message = str(exc)
    for scope, (dataset, split, dataset_dir) in _DECODE_SCOPES.items():
        if re.search(rf"\b{re.escape(scope)}/", message):
            # The first line holds TensorFlow's reason; the rest is its node/function trace.
            reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message).strip().splitlines()
            reason = reason[0] if reason else "unknown error"
            return ValueError(
                f"Could not decode an image of dataset {dataset!r}, split {split!r} "
                f"(files in {dataset_dir}): {reason}. The prepared files are corrupt or "
                "incomplete; delete that directory and prepare the dataset again."
            )
    return None


@contextlib.contextmanager
def explain_data_errors():
    """Context manager that re-raises image-decoding failures as `describe_data_error` says.

    Example:
    ```python
    with explain_data_errors():
        model.fit(train_ds, ...)
    ```

    Raises:
        ValueError: from a decoding failure of a dataset of this pipeline (chained to the
            original TensorFlow error); other exceptions pass through unchanged.
    """
    try:
        yield
    except tf.errors.OpError as exc:
        error = describe_data_error(exc)
        if error is None:
            raise
        raise error from exc


def _per_replica_batch_size(global_batch_size, input_context):
    """Validates the global batch size; returns the batch size this pipeline yields."""
    if input_context is None:
        check_global_batch_size(global_batch_size)
        return global_batch_size
    check_global_batch_size(global_batch_size, input_context.num_replicas_in_sync)
    return input_context.get_per_replica_batch_size(global_batch_size)


# Decode op name scope -> (dataset, split, directory), for describe_data_error.
_DECODE_SCOPES = {}


def _image_size(image_size):
    """Validates an int or (height, width) image size; returns (height, width)."""
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = tuple(image_size)
    else:
        raise ValueError(f"image_size {image_size!r} is not an int or a (height, width) pair")
    if min(size) < 1:
        raise ValueError(f"image_size {image_size!r} must be positive")
    return size




@dataclasses.dataclass(frozen=True)
class _Source:
    """A checked, prepared TFDS dataset: its builder, image feature, class names, channels."""

    builder: object
    image_feature: object
    class_names: list
    channels: int


def _source(dataset, data_dir, channels):
    """Resolves and checks `dataset` (ValueError naming what is wrong); prepares embedded ones."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels {channels!r} is not supported; expected None, 1 or 3")
    builder = _builder(dataset, data_dir)
    # Features first: they are known without data, and a text dataset should be told so, not
    # told to download itself.
    image_feature, class_names = _check_features(builder)
    builder = _prepare(builder, dataset)
    return _Source(builder, image_feature, class_names, channels or image_feature.shape[-1] or 3)


def _eval_split(builder, eval_split):
    if eval_split is None:
        return "test" if "test" in builder.info.splits else "validation"
    return eval_split


def _per_worker(ds, input_context):
    if input_context is None:
        return ds
    # Already split per worker here: tf.distribute must not shard these datasets again (it
    # would, by files or by examples, if they were passed to experimental_distribute_dataset).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def _builder(dataset, data_dir):
    """Returns the TFDS builder of `dataset`; ValueError for a bad data_dir or unknown name."""
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset {dataset!r} is not a TFDS dataset name")
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        if not os.path.isdir(data_dir):
            raise ValueError(f"data_dir {data_dir!r} does not exist or is not a directory")
        if not os.access(data_dir, os.R_OK | os.X_OK):
            raise ValueError(f"data_dir {data_dir!r} is not readable by this process")
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(_unknown_dataset_message(dataset, data_dir)) from None
    return builder


def _prepare(builder, dataset):
    """Prepares an embedded dataset on first use; ValueError for any other unprepared one.

    Returns the builder to read: `builder`, or a new one when the data was prepared here or by
    another process meanwhile (a builder reads the prepared splits' sizes when it is made).
    """
    if builder.is_prepared():
        return builder
    if builder.name not in training.datasets.EMBEDDED_DATASETS:
        raise ValueError(
            f"dataset {dataset!r} is not prepared in data_dir "
            f"{os.fspath(builder.data_dir_root)!r} and the training binary never downloads data; "
            f"prepare it there first (e.g. `tfds build {builder.name} --data_dir=DIR` on a "
            "machine with network access)"
        )
    # Generated from a package on this machine: no network involved. Several processes may
    # start at once on one data_dir (every worker of a multi-worker run on a fresh machine or a
    # shared file system): TFDS renames its finished folder onto the dataset's, and the second
    # rename fails. One process prepares under a lock, the others wait and then read its data.
    root = os.fspath(builder.data_dir_root)
    os.makedirs(root, exist_ok=True)
    with _file_lock(os.path.join(root, f".{builder.name}.prepare.lock")):
        fresh = tfds.builder(builder.name, data_dir=root, version=str(builder.version))
        if not fresh.is_prepared():
            try:
                fresh.download_and_prepare()
            except FileExistsError:
                # A file system without locks, and another process won the rename: its data is
                # used when complete, else this error stands.
                fresh = tfds.builder(builder.name, data_dir=root, version=str(builder.version))
                if not fresh.is_prepared():
                    raise
                return fresh
        return tfds.builder(builder.name, data_dir=root, version=str(builder.version))


@contextlib.contextmanager
def _file_lock(path):
    """An exclusive `flock` on `path` for the block; the OS releases it if the process dies.

    Where the file system has no locks (some network mounts), the block runs unlocked.
    """
    import fcntl

    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # ENOLCK, EOPNOTSUPP: no locks here
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unknown_dataset_message(dataset, data_dir):
    name = dataset.split(":")[0].split("/")[0]
    # Network-free list: registered builders plus the dataset folders found in data_dir.
    candidates = set(tfds.list_builders(with_community_datasets=False))
    if data_dir is not None:
        candidates.update(entry.name for entry in os.scandir(data_dir) if entry.is_dir())
    close = difflib.get_close_matches(name, sorted(candidates), n=5, cutoff=0.7)
    hint = f"; close names: {', '.join(close)}" if close else ""
    where = f"data_dir {data_dir!r}" if data_dir is not None else "the default data_dir"
    return (
        f"unknown dataset {dataset!r}: neither a registered TFDS builder nor a prepared dataset "
        f"in {where}{hint}"
    )


def _check_features(builder):
    """Returns (image feature, class names); ValueError when the features do not fit."""
    features = builder.info.features
    keys = sorted(features.keys()) if isinstance(features, tfds.features.FeaturesDict) else []
    if "image" not in keys or "label" not in keys:
        raise ValueError(
            f"dataset {builder.name!r} has features {keys}; an image classification dataset "
            "needs an 'image' and a 'label' feature"
        )
    image, label = features["image"], features["label"]
    if isinstance(image, tfds.features.Image):
        valid_image = len(image.shape) == 3 and np.dtype(image.np_dtype) == np.uint8
    else:
        valid_image = (
            isinstance(image, tfds.features.Tensor)
            and len(image.shape) == 3
            and np.dtype(image.np_dtype) == np.uint8
        )
    if not valid_image:
        raise ValueError(
            f"dataset {builder.name!r} has image feature {image!r}; expected a uint8 image of "
            "shape (height, width, channels)"
        )
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(
            f"dataset {builder.name!r} has label feature {label!r}; expected a ClassLabel"
        )
    return image, label.names


def _num_examples(builder, split, argument):
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError, TypeError):
        raise ValueError(
            f"{argument} {split!r} is not a split of dataset {builder.name!r}; available: "
            f"{sorted(builder.info.splits.keys())}"
        ) from None


def _small_enough_to_cache(image_feature, num_examples):
    if any(dim is None for dim in image_feature.shape):
        return False
    height, width, channels = image_feature.shape
    return num_examples * height * width * channels <= _AUTO_CACHE_MAX_BYTES


def _read(builder, split, input_context, *, shuffle_files, seed):
    """Reads (encoded image, label) pairs of this worker's part of `split`."""
    if input_context is not None and input_context.num_input_pipelines > 1:
        # Each worker reads a contiguous 1/n of the split (sizes differ by at most one example).
        # Unlike `ds.shard(n, i)` after reading, no worker reads records it throws away (on
        # ImageNet that would be every worker reading all 140 GB), and unlike file-level
        # sharding (`ReadConfig(input_context=...)`) it works when a split has fewer files
        # than workers (cifar10_jpeg, digits: one file).
        split = tfds.even_splits(
            split, n=input_context.num_input_pipelines, drop_remainder=False
        )[input_context.input_pipeline_id]
    read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
    decoders = None
    if isinstance(builder.info.features["image"], tfds.features.Image):
        # Keep the bytes: decode after sharding and after the shuffle buffer, in our own named
        # op, so that a corrupt image can be reported by dataset and split.
        decoders = {"image": tfds.decode.SkipDecoding()}
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle_files, read_config=read_config, decoders=decoders
    )
    return ds.map(lambda example: (example["image"], example["label"]))


def _decoder(builder, split, image_feature, channels):
    """Returns a function (encoded image, label) -> (uint8 image (H, W, channels), label)."""
    stored_channels = image_feature.shape[-1] or 3
    static_shape = tuple(image_feature.shape[:2]) + (channels,)

    def convert(image):
        if stored_channels == channels:
            return image
        if channels == 3:
            return tf.image.grayscale_to_rgb(image)
        return tf.image.rgb_to_grayscale(image)

    if not isinstance(image_feature, tfds.features.Image):
        return lambda image, label: (convert(image), label)
    split_name = str(split)
    scope = "decode_image." + re.sub(r"[^A-Za-z0-9_.-]", "_", f"{builder.name}.{split_name}")
    base, suffix = scope, 1
    while _DECODE_SCOPES.get(scope, (builder.name, split_name))[:2] != (builder.name, split_name):
        suffix += 1
        scope = f"{base}.{suffix}"
    _DECODE_SCOPES[scope] = (builder.name, split_name, os.fspath(builder.data_dir))

    def decode(image, label):
        image = tf.io.decode_image(
            image, channels=stored_channels, expand_animations=False, name=scope
        )
        image = convert(image)
        image.set_shape(static_shape)
        return image, label

    return decode


def _inception_crop(image, seed, area_range):
    """Random crop of `area_range` of the area with aspect ratio in [3/4, 4/3] (stateless)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        # No object boxes: the whole image is the object; the area range alone bounds the crop.
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=_CROP_ASPECT_RATIO_RANGE,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    # tf.slice with a dynamic size loses the static channel count, which the model needs.
    crop.set_shape([None, None, image.shape[-1]])
    return crop


@contextlib.contextmanager
def _float32_policy():
    # keras-cv layers take their compute dtype from the global policy when they are built; under
    # the training binary's "mixed_bfloat16" RandAugment's sub-layers would then return bfloat16
    # from some branches and float32 from others, which tf.cond rejects (and pixel values would
    # lose precision). Augmentation is input preprocessing: it runs in float32.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _batch_augmenter(augment, channels, seed):
    """Returns the per-batch function: keras-cv RandAugment, MixUp/CutMix, then normalize."""
    # keras-cv 0.9 layers run in tf.data on Keras 3 when called on whole batches inside
    # `Dataset.map`; MixUp and CutMix must see a batch anyway (they mix examples with each other).
    with _float32_policy():
        rand_augment = None
        if augment.rand_augment:
            rand_augment = keras_cv.layers.RandAugment(
                value_range=(0, 255),
                augmentations_per_image=augment.rand_augment_layers,
                magnitude=augment.rand_augment_magnitude,
                seed=seed,
            )
        mixers = []
        if augment.mixup_alpha > 0:
            mixers.append(keras_cv.layers.MixUp(alpha=augment.mixup_alpha, seed=seed))
        if augment.cutmix_alpha > 0:
            mixers.append(keras_cv.layers.CutMix(alpha=augment.cutmix_alpha, seed=seed))
        mixer = None
        if len(mixers) == 1:
            mixer = mixers[0]
        elif mixers:
            # batchwise: the whole batch gets MixUp or CutMix; they cannot be mixed per example.
            mixer = keras_cv.layers.RandomChoice(mixers, batchwise=True, seed=seed)

    def augment_batch(images, labels):
        if rand_augment is not None:
            if channels == 1:
                # RandAugment's colour operations (rgb_to_grayscale) need 3 channels; on a gray
                # image replicated to RGB every operation keeps the channels equal, so averaging
                # them back loses nothing.
                images = tf.reduce_mean(
                    rand_augment(tf.tile(images, [1, 1, 1, 3]), training=True),
                    axis=-1,
                    keepdims=True,
                )
            else:
                images = rand_augment(images, training=True)
        if mixer is not None:
            mixed = mixer({"images": images, "labels": labels}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        return normalize(images), labels

    return augment_batch
