"""Where the training binary's images come from: a prepared TFDS dataset, checked and read.

`open_source(dataset, data_dir, channels)` finds the TFDS builder of `dataset` (a registered
builder or a read-only dataset folder in `data_dir`), checks that it is an image-classification
dataset (a uint8 `image` and a ClassLabel `label`), prepares the embedded datasets
(`training.datasets`: `digits`) on first use under a file lock, and refuses anything else that
is not prepared: the binary never downloads (training jobs on TPU workers or behind firewalls
must not fetch data on their own). `read` gives this worker's (encoded image, label) pairs of a
split, and `decoder` the function that decodes them.

A corrupt image in the prepared files surfaces only when an iterator reaches it, as a TensorFlow
error from deep inside the training loop. Each decode op carries its dataset, split and
directory in its own name, so `describe_data_error` (and `explain_data_errors` around a loop)
turns such an error into a ValueError naming the broken data, with no state kept anywhere else.
"""

import contextlib
import dataclasses
import difflib
import json
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import training.datasets  # Registers the embedded builders ("digits") with TFDS.
from keras_vit.validation import check_choice

# Name of the decode ops, followed by ".<hex>", the hex of the JSON [dataset, split, directory]:
# TensorFlow op names allow only [A-Za-z0-9_.\-/>], and TensorFlow itself adds "_1", "_2" to a
# name used twice in one graph.
_DECODE_OP = "decode_image"
_DECODE_OP_IN_MESSAGE = re.compile(rf"\b{_DECODE_OP}\.([0-9a-f]+)(?:_\d+)?/")


@dataclasses.dataclass(frozen=True)
class Source:
    """A checked, prepared TFDS dataset.

    Attributes:
        builder: the TFDS builder to read (prepared).
        image_feature: its `image` feature (`tfds.features.Image` or a uint8 `Tensor`).
        class_names: list of str, one per class of its `label` feature.
        channels: int. Channels of the images this source's decoder returns.
    """

    builder: object
    image_feature: object
    class_names: list
    channels: int

    @property
    def num_classes(self):
        """int: classes of the `label` feature."""
        return len(self.class_names)

    def num_examples(self, split, argument="split"):
        """Examples in `split`; ValueError naming `argument` when it is not a split."""
        try:
            return self.builder.info.splits[split].num_examples
        except (KeyError, ValueError, TypeError):
            raise ValueError(
                f"{argument} {split!r} is not a split of dataset {self.builder.name!r}; "
                f"available: {sorted(self.builder.info.splits.keys())}"
            ) from None

    def eval_split(self, eval_split=None):
        """`eval_split`, or when None "test" if the dataset has one, else "validation"."""
        if eval_split is None:
            return "test" if "test" in self.builder.info.splits else "validation"
        return eval_split


def open_source(dataset, data_dir, channels=None):
    """Resolves, checks and (for an embedded dataset) prepares `dataset`.

    Args:
        dataset: str. TFDS name, optionally with config and version ("cifar10:3.0.2").
        data_dir: str or None. TFDS data directory; None means TFDS's default. Must exist and
            be readable.
        channels: 1, 3 or None. Channels the decoder returns; None keeps the dataset's own.

    Returns:
        A `Source`.

    Raises:
        ValueError: an unknown dataset (with close names), a dataset without a uint8 `image`
            and a ClassLabel `label` feature or not prepared in `data_dir`, a missing or
            unreadable `data_dir`, or unsupported `channels`.
    """
    check_choice("channels", channels, (None, 1, 3))
    builder = _builder(dataset, data_dir)
    # Features first: they are known without data, and a text dataset should be told so, not
    # told to download itself.
    image_feature, class_names = _check_features(builder)
    builder = _prepare(builder, dataset)
    return Source(builder, image_feature, class_names, channels or image_feature.shape[-1] or 3)


def read(source, split, input_context, *, shuffle_files, seed):
    """Reads (encoded image, label) pairs of this worker's part of `split` of `source`."""
    builder = source.builder
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
    if isinstance(source.image_feature, tfds.features.Image):
        # Keep the bytes: decode after sharding and after the shuffle buffer, in our own named
        # op, so that a corrupt image can be reported by dataset and split.
        decoders = {"image": tfds.decode.SkipDecoding()}
    ds = builder.as_dataset(
        split=split, shuffle_files=shuffle_files, read_config=read_config, decoders=decoders
    )
    return ds.map(lambda example: (example["image"], example["label"]))


def decoder(source, split):
    """Returns a function (encoded image, label) -> (uint8 image (H, W, channels), label)."""
    image_feature, channels = source.image_feature, source.channels
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
    name = _decode_op_name(source.builder.name, str(split), os.fspath(source.builder.data_dir))

    def decode(image, label):
        image = tf.io.decode_image(
            image, channels=stored_channels, expand_animations=False, name=name
        )
        image = convert(image)
        image.set_shape(static_shape)
        return image, label

    return decode


def describe_data_error(exc):
    """Turns an image-decoding failure raised while iterating a dataset into a clear error.

    TensorFlow reports a corrupt image only when the iterator reaches it, as an
    `InvalidArgumentError` from deep inside the training loop. The decode ops of this pipeline
    are named after their dataset, split and directory, which lets this function say which data
    is broken.

    Args:
        exc: an exception raised while iterating a dataset of `training.input_pipeline`.

    Returns:
        A ValueError naming the dataset, split and directory, or None when `exc` is not a
        decoding failure of this pipeline.
    """
    if not isinstance(exc, tf.errors.OpError):
        return None
    message = str(exc)
    for match in _DECODE_OP_IN_MESSAGE.finditer(message):
        try:
            dataset, split, dataset_dir = json.loads(bytes.fromhex(match.group(1)).decode())
        except (ValueError, TypeError):  # not one of our names: not hex of a JSON triple
            continue
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


def _decode_op_name(dataset, split, directory):
    """The name of a decode op, from which `describe_data_error` reads the three back."""
    return f"{_DECODE_OP}.{json.dumps([dataset, split, directory]).encode().hex()}"


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
