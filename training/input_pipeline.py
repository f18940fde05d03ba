"""Input pipeline of the training binary: TFDS -> decode -> crop/resize -> augment -> batch.

This module builds the pipelines; the data comes from `training.data_source` (the TFDS dataset
found, checked, prepared, read and decoded) and the training augmentation from
`training.augmentation` (`AugmentConfig`, re-exported here). Three functions turn any TFDS
image-classification dataset (features `image` and `label`) into what a training run needs, for
one machine or for one worker of a `tf.distribute` strategy: `dataset_info` (classes, sizes,
image shape: no pipeline built), `train_dataset` and `eval_dataset`; `load_datasets` returns all
three at once.

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
  as TensorFlow errors; `explain_data_errors()` / `describe_data_error` (from
  `training.data_source`, re-exported here) turn them into a ValueError naming the dataset,
  split and directory.

The binary reads prepared TFDS data only and never downloads; the datasets in
`training.datasets` (`digits`) are the exception: they are generated locally on first use,
without network (see `training.data_source`).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_vit.layers.position_embedding import normalize_grid
from keras_vit.validation import check_int, check_positive_int
from training import augmentation, data_source
from training.augmentation import AugmentConfig

# Re-exported: callers catch decoding errors through this module.
describe_data_error = data_source.describe_data_error
explain_data_errors = data_source.explain_data_errors

# A decoded split is cached in memory when it is at most this big (cifar10: 147 MiB,
# digits: 92 KiB); datasets whose image shape is not fixed (imagenet2012) are never cached.
_AUTO_CACHE_MAX_BYTES = 1 << 30


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
    height, width = normalize_grid(image_size, name="image_size")
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
    height, width = normalize_grid(image_size, name="image_size")
    source = data_source.open_source(dataset, data_dir, channels)
    eval_split = source.eval_split(eval_split)
    return DatasetInfo(
        name=source.builder.name,
        num_classes=source.num_classes,
        num_train_examples=source.num_examples(train_split, "train_split"),
        num_eval_examples=source.num_examples(eval_split, "eval_split"),
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
    size = normalize_grid(image_size, name="image_size")
    batch_size = _per_replica_batch_size(global_batch_size, input_context)
    if not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment {augment!r} is not an AugmentConfig")
    check_int("shuffle_buffer", shuffle_buffer, minimum=1)
    check_int("seed", seed)
    source = data_source.open_source(dataset, data_dir, channels)
    num_examples = source.num_examples(train_split, "train_split")
    decode = data_source.decoder(source, train_split)
    if cache is None:
        cache = _small_enough_to_cache(source.image_feature, num_examples)
    pipeline_id = input_context.input_pipeline_id if input_context else 0

    # Decoded images are cached before shuffling so that every epoch is shuffled anew; without a
    # cache the shuffle buffer holds the encoded bytes, which keeps a 10,000 example buffer of
    # ImageNet JPEGs at ~1 GiB instead of ~5 GiB decoded.
    train = data_source.read(source, train_split, input_context, shuffle_files=True, seed=seed)
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
        image = augmentation.crop_resize_flip(image, example_seed, augment, size)
        return image, tf.one_hot(label, source.num_classes, dtype=tf.float32)

    augment_batch = augmentation.batch_augmenter(augment, source.channels, seed)

    def _train_batch(images, labels):
        images, labels = augment_batch(images, labels)
        return normalize(images), labels

    train = train.map(_train_example, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.batch(batch_size, drop_remainder=True)
    train = train.map(_train_batch, num_parallel_calls=tf.data.AUTOTUNE)
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
    size = normalize_grid(image_size, name="image_size")
    batch_size = _per_replica_batch_size(global_batch_size, input_context)
    source = data_source.open_source(dataset, data_dir, channels)
    eval_split = source.eval_split(eval_split)
    num_examples = source.num_examples(eval_split, "eval_split")
    decode = data_source.decoder(source, eval_split)
    if cache is None:
        cache = _small_enough_to_cache(source.image_feature, num_examples)

    evaluation = data_source.read(source, eval_split, input_context, shuffle_files=False, seed=0)
    evaluation = evaluation.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        evaluation = evaluation.cache()
    evaluation = evaluation.map(
        lambda image, label: (
            preprocess_for_eval(image, size),
            tf.one_hot(label, source.num_classes, dtype=tf.float32),
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
    size = normalize_grid(image_size, name="image_size")
    if count is not None:
        check_int("count", count, minimum=1)
    if seed is not None:
        check_int("seed", seed)
    source = data_source.open_source(dataset, data_dir, channels)
    num_examples = source.num_examples(split, "split")
    if count is not None and count > num_examples:
        raise ValueError(
            f"count {count} is more than the {num_examples} images of {dataset!r} split {split!r}"
        )
    decode = data_source.decoder(source, split)
    ds = data_source.read(source, split, None, shuffle_files=False, seed=0)
    if seed is not None:
        ds = ds.shuffle(num_examples, seed=seed, reshuffle_each_iteration=False)
    if count is not None:
        ds = ds.take(count)

    def resize(image, label):
        image = tf.image.resize(image, size, method="bilinear")
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
    check_positive_int("global_batch_size", global_batch_size)
    if global_batch_size % num_replicas:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by the number of replicas "
            f"{num_replicas}; use a multiple of {num_replicas}"
        )


def _per_replica_batch_size(global_batch_size, input_context):
    """Validates the global batch size; returns the batch size this pipeline yields."""
    if input_context is None:
        check_global_batch_size(global_batch_size)
        return global_batch_size
    check_global_batch_size(global_batch_size, input_context.num_replicas_in_sync)
    return input_context.get_per_replica_batch_size(global_batch_size)


def _per_worker(ds, input_context):
    if input_context is None:
        return ds
    # Already split per worker here: tf.distribute must not shard these datasets again (it
    # would, by files or by examples, if they were passed to experimental_distribute_dataset).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def _small_enough_to_cache(image_feature, num_examples):
    if any(dim is None for dim in image_feature.shape):
        return False
    height, width, channels = image_feature.shape
    return num_examples * height * width * channels <= _AUTO_CACHE_MAX_BYTES
