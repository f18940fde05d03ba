"""Tests of the input pipeline on real TFDS reads: digits (made in tmp), cifar10_jpeg.

training/input_pipeline.py (the pipelines), with training/data_source.py (lookup, checks, reads,
decode errors) and training/augmentation.py (AugmentConfig, crop and flip, keras-cv) under it.
"""

import collections
import doctest
import os
import pathlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from training import data_source, input_pipeline
from training.input_pipeline import AugmentConfig, load_datasets

# Contributors' offline TFDS copy holding cifar10_jpeg (docs/contributing.md); .ci/run sets it.
_TFDS_DIR_ENV = os.environ.get("KERAS_VIT_TFDS_DIR")
TFDS_DIR = pathlib.Path(_TFDS_DIR_ENV) if _TFDS_DIR_ENV else None
needs_cifar10_jpeg = pytest.mark.skipif(
    TFDS_DIR is None or not (TFDS_DIR / "cifar10_jpeg").is_dir(),
    reason=f"cifar10_jpeg not found in {TFDS_DIR} (set KERAS_VIT_TFDS_DIR)",
)

NO_AUGMENT = AugmentConfig.none()
DIGITS_TEST_PER_CLASS = [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.builder("digits", data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


def _first_batch(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def _eval_examples(ds):
    """All (label, image bytes) of an eval dataset, as a multiset."""
    examples = collections.Counter()
    for images, labels in ds:
        for image, label in zip(images.numpy(), labels.numpy()):
            examples[(int(label.argmax()), image.tobytes())] += 1
    return examples


def test_digits_batches_and_info(digits_dir):
    train, evaluation, info = load_datasets(
        "digits", data_dir=digits_dir, image_size=16, global_batch_size=32, augment=NO_AUGMENT
    )
    assert info == input_pipeline.DatasetInfo(
        name="digits",
        num_classes=10,
        num_train_examples=1438,
        num_eval_examples=359,
        image_shape=(16, 16, 1),
        class_names=tuple(str(d) for d in range(10)),
        train_split="train",
        eval_split="test",
    )
    assert info.channels == 1
    images, labels = _first_batch(train)
    assert images.shape == (32, 16, 16, 1) and images.dtype == np.float32
    assert labels.shape == (32, 10) and labels.dtype == np.float32
    # One-hot: exactly one 1 per row.
    np.testing.assert_array_equal(labels.sum(axis=1), np.ones(32))
    np.testing.assert_array_equal(labels.max(axis=1), np.ones(32))
    assert images.min() >= -1.0 and images.max() <= 1.0
    # Digits have black (0) backgrounds and saturated (255) strokes: both ends are reached.
    assert images.min() == -1.0 and images.max() == pytest.approx(1.0, abs=1e-6)
    eval_images, eval_labels = _first_batch(evaluation)
    assert eval_images.shape == (32, 16, 16, 1) and eval_labels.shape == (32, 10)


def test_the_three_parts_equal_load_datasets(digits_dir):
    # dataset_info, train_dataset and eval_dataset, each built alone, give what load_datasets
    # gives: the same info, the same training batches for the same seed, the same evaluation.
    arguments = dict(data_dir=digits_dir, image_size=12, global_batch_size=16, seed=3,
                     augment=AugmentConfig(crop_area_range=(0.5, 1.0)))
    train, evaluation, info = load_datasets("digits", **arguments)
    assert input_pipeline.dataset_info("digits", data_dir=digits_dir, image_size=12) == info
    alone = input_pipeline.train_dataset("digits", **arguments)
    for (a_images, a_labels), (b_images, b_labels) in zip(train.take(3), alone.take(3)):
        np.testing.assert_array_equal(a_images.numpy(), b_images.numpy())
        np.testing.assert_array_equal(a_labels.numpy(), b_labels.numpy())
    del arguments["seed"], arguments["augment"]
    eval_alone = input_pipeline.eval_dataset("digits", **arguments)
    assert _eval_examples(eval_alone) == _eval_examples(evaluation)
    assert sum(_eval_examples(eval_alone).values()) == info.num_eval_examples == 359


def test_dataset_info_checks_without_a_pipeline(digits_dir):
    with pytest.raises(ValueError, match=r"eval_split 'validation' is not a split"):
        input_pipeline.dataset_info("digits", data_dir=digits_dir, image_size=8,
                                    eval_split="validation")
    with pytest.raises(ValueError, match="Unknown channels 2: expected one of None, 1, 3"):
        input_pipeline.dataset_info("digits", data_dir=digits_dir, image_size=8, channels=2)
    info = input_pipeline.dataset_info("digits", data_dir=digits_dir, image_size=8, channels=3,
                                       train_split="train[:100]")
    assert info.num_train_examples == 100 and info.image_shape == (8, 8, 3)


@pytest.mark.parametrize("batch, replicas, match", [
    (0, 1, "global_batch_size must be a positive integer, received 0"),
    (6, 4, "global_batch_size 6 is not divisible by the number of replicas 4; use a multiple "
     "of 4"),
])
def test_check_global_batch_size(batch, replicas, match):
    with pytest.raises(ValueError, match=match):
        input_pipeline.check_global_batch_size(batch, replicas)
    input_pipeline.check_global_batch_size(8, 4)


def test_image_size_as_height_width(digits_dir):
    train, evaluation, info = load_datasets(
        "digits", data_dir=digits_dir, image_size=(8, 12), global_batch_size=4
    )
    assert info.image_shape == (8, 12, 1)
    assert _first_batch(train)[0].shape == (4, 8, 12, 1)
    assert _first_batch(evaluation)[0].shape == (4, 8, 12, 1)


def test_docstring_examples(digits_dir):
    result = doctest.testmod(input_pipeline, extraglobs={"data_dir": digits_dir})
    assert result.attempted >= 5 and result.failed == 0


def test_grayscale_to_rgb(digits_dir):
    channels = 3
    train, evaluation, info = load_datasets(
        "digits", data_dir=digits_dir, image_size=8, global_batch_size=16, channels=channels,
        augment=AugmentConfig(inception_crop=False, rand_augment=True),
    )
    assert info.image_shape == (8, 8, channels) and info.channels == channels
    images, _ = _first_batch(train)
    assert images.shape == (16, 8, 8, channels)
    eval_images, _ = _first_batch(evaluation)
    assert eval_images.shape == (16, 8, 8, channels)
    # Grayscale replicated: the three channels are equal.
    np.testing.assert_array_equal(eval_images[..., 0], eval_images[..., 2])


def test_normalize_and_preprocess_for_eval():
    np.testing.assert_allclose(
        input_pipeline.normalize(tf.constant([0, 51, 255], tf.uint8)).numpy(),
        [-1.0, 51 / 127.5 - 1.0, 1.0],
        rtol=0,
        atol=1e-7,
    )
    image = tf.fill((6, 6, 3), tf.constant(255, tf.uint8))
    out = input_pipeline.preprocess_for_eval(image, 12)
    assert out.shape == (12, 12, 3) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), 1.0)
    batch = tf.zeros((2, 5, 7, 1), tf.uint8)
    out = input_pipeline.preprocess_for_eval(batch, (4, 3))
    assert out.shape == (2, 4, 3, 1)
    np.testing.assert_allclose(out.numpy(), -1.0)


def test_eval_keeps_every_example_in_order(digits_dir):
    _, evaluation, _ = load_datasets(
        "digits", data_dir=digits_dir, image_size=8, global_batch_size=64
    )
    sizes = [int(images.shape[0]) for images, _ in evaluation]
    # 359 = 5 * 64 + 39: the last, partial batch is kept.
    assert sizes == [64] * 5 + [39]
    # At native size eval images are exactly the stored pixels, normalized: compare with TFDS.
    expected = tfds.load("digits", split="test", data_dir=digits_dir)
    expected = collections.Counter(
        (int(ex["label"]), (ex["image"].astype(np.float32) / 127.5 - 1.0).tobytes())
        for ex in tfds.as_numpy(expected)
    )
    examples = _eval_examples(evaluation)
    assert examples == expected
    counts = np.zeros(10, int)
    for (label, _), count in examples.items():
        counts[label] += count
    np.testing.assert_array_equal(counts, DIGITS_TEST_PER_CLASS)
    # Not repeated: a second pass sees the same 359 examples again, no more.
    assert sum(int(images.shape[0]) for images, _ in evaluation) == 359


def test_per_worker_sharding(digits_dir):
    full = load_datasets("digits", data_dir=digits_dir, image_size=8, global_batch_size=8)[1]
    shards = []
    for worker in (0, 1):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        train, evaluation, info = load_datasets(
            "digits",
            data_dir=digits_dir,
            image_size=8,
            global_batch_size=8,
            input_context=context,
        )
        # Global 8 over 2 replicas: each pipeline yields per-replica batches of 4.
        images, labels = _first_batch(train)
        assert images.shape == (4, 8, 8, 1) and labels.shape == (4, 10)
        assert info.num_eval_examples == 359  # info counts the whole split
        shards.append(_eval_examples(evaluation))
    assert sum(shards[0].values()) == 180 and sum(shards[1].values()) == 179
    # Together the two workers see every eval example exactly once.
    assert shards[0] + shards[1] == _eval_examples(full)


def test_batch_not_divisible_by_replicas(digits_dir):
    context = tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=3
    )
    with pytest.raises(
        ValueError, match="global_batch_size 8 is not divisible by the number of replicas 3"
    ):
        load_datasets(
            "digits", data_dir=digits_dir, image_size=8, global_batch_size=8, input_context=context
        )


def test_crop_and_flip_are_reproducible_and_change_images(digits_dir):
    def first(augment, seed=0):
        train, _, _ = load_datasets(
            "digits", data_dir=digits_dir, image_size=8, global_batch_size=64, seed=seed,
            augment=augment,
        )
        return _first_batch(train)

    plain_images, plain_labels = first(NO_AUGMENT)
    crop_flip = AugmentConfig(inception_crop=True, flip=True, crop_area_range=(0.3, 1.0))
    images_a, labels_a = first(crop_flip)
    images_b, labels_b = first(crop_flip)
    # Same seed, same batch: the crop and flip draws are stateless per example.
    np.testing.assert_array_equal(images_a, images_b)
    # Shuffling does not depend on the augmentation: same examples, augmented.
    np.testing.assert_array_equal(labels_a, plain_labels)
    assert images_a.shape == plain_images.shape == (64, 8, 8, 1)
    changed = np.abs(images_a - plain_images).reshape(64, -1).max(axis=1) > 1e-3
    assert changed.sum() >= 48, f"only {changed.sum()} of 64 images changed"
    # A different seed, a different order.
    assert not np.array_equal(first(NO_AUGMENT, seed=1)[1], plain_labels)


def test_rand_augment_changes_grayscale_images_keeps_shape(digits_dir):
    image_size = 16
    plain = load_datasets(
        "digits", data_dir=digits_dir, image_size=image_size, global_batch_size=32,
        augment=NO_AUGMENT,
    )[0]
    augmented = load_datasets(
        "digits", data_dir=digits_dir, image_size=image_size, global_batch_size=32,
        augment=AugmentConfig(inception_crop=False, flip=False, rand_augment=True,
                              rand_augment_magnitude=0.8),
    )[0]
    plain_images, plain_labels = _first_batch(plain)
    images, labels = _first_batch(augmented)
    # RandAugment needs RGB; a grayscale dataset keeps its one channel through it.
    assert images.shape == (32, image_size, image_size, 1)
    assert images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(labels, plain_labels)
    changed = np.abs(images - plain_images).reshape(32, -1).max(axis=1) > 1e-3
    assert changed.sum() >= 16, f"only {changed.sum()} of 32 images changed"


@pytest.mark.parametrize(
    "augment",
    [
        AugmentConfig(inception_crop=False, flip=False, mixup_alpha=0.8),
        AugmentConfig(inception_crop=False, flip=False, cutmix_alpha=1.0),
        AugmentConfig(inception_crop=False, flip=False, mixup_alpha=0.8, cutmix_alpha=1.0),
    ],
    ids=["mixup", "cutmix", "mixup_or_cutmix"],
)
def test_mixing_gives_soft_labels_summing_to_one(digits_dir, augment):
    train, _, _ = load_datasets(
        "digits", data_dir=digits_dir, image_size=16, global_batch_size=64, augment=augment
    )
    batches = list(train.take(3))
    for images, labels in batches:
        labels = labels.numpy()
        assert images.shape == (64, 16, 16, 1) and labels.shape == (64, 10)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
        assert labels.min() >= 0.0
    # Soft: some rows are a blend of two classes (not all one-hot).
    soft_rows = sum(int((labels.numpy().max(axis=1) < 0.999).sum()) for _, labels in batches)
    assert soft_rows > 0


def test_augmentation_runs_in_float32_under_mixed_precision(digits_dir):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        train, _, _ = load_datasets(
            "digits", data_dir=digits_dir, image_size=8, global_batch_size=16,
            augment=AugmentConfig(rand_augment=True, mixup_alpha=0.2, cutmix_alpha=1.0),
        )
        assert keras.config.dtype_policy().name == "mixed_bfloat16"  # restored
        images, labels = _first_batch(train)
    finally:
        keras.config.set_dtype_policy(previous)
    assert images.dtype == np.float32 and labels.dtype == np.float32


@needs_cifar10_jpeg
def test_cifar10_jpeg_offline():
    train, evaluation, info = load_datasets(
        "cifar10_jpeg", data_dir=str(TFDS_DIR), image_size=24, global_batch_size=16,
        shuffle_buffer=64, cache=False,
        augment=AugmentConfig(rand_augment=True, mixup_alpha=0.2),
    )
    assert (info.name, info.num_classes, info.num_train_examples, info.num_eval_examples) == (
        "cifar10_jpeg", 10, 50_000, 10_000,
    )
    assert info.image_shape == (24, 24, 3) and info.channels == 3
    assert info.class_names[:3] == ("airplane", "automobile", "bird")
    images, labels = _first_batch(train)
    assert images.shape == (16, 24, 24, 3) and labels.shape == (16, 10)
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    eval_images, eval_labels = _first_batch(evaluation)
    assert eval_images.shape == (16, 24, 24, 3)
    np.testing.assert_array_equal(eval_labels.sum(axis=1), np.ones(16))
    # RGB to luma on request.
    _, gray_eval, gray_info = load_datasets(
        "cifar10_jpeg", data_dir=str(TFDS_DIR), image_size=24, global_batch_size=16,
        cache=False, channels=1,
    )
    assert gray_info.channels == 1
    gray_images, gray_labels = _first_batch(gray_eval)
    assert gray_images.shape == (16, 24, 24, 1)
    np.testing.assert_array_equal(gray_labels, eval_labels)


# --- Errors -------------------------------------------------------------------------------------


def test_unknown_dataset_lists_close_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'.*close names: .*cifar10"):
        load_datasets("cifar11", data_dir=str(tmp_path), image_size=32, global_batch_size=8)


def test_dataset_without_image_and_label(tmp_path):
    # imdb_reviews is registered: its features are known without any data.
    with pytest.raises(
        ValueError, match=r"'imdb_reviews' has features \['label', 'text'\].*'image' and a 'label'"
    ):
        load_datasets("imdb_reviews", data_dir=str(tmp_path), image_size=32, global_batch_size=8)


def test_dataset_not_prepared_is_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match=r"dataset 'cifar10' is not prepared.*never downloads"):
        load_datasets("cifar10", data_dir=str(tmp_path), image_size=32, global_batch_size=8)
    assert not (tmp_path / "downloads").exists()


def test_missing_data_dir(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"data_dir '.*nowhere' does not exist"):
        load_datasets("digits", data_dir=missing, image_size=8, global_batch_size=8)


def test_unreadable_data_dir(tmp_path, monkeypatch):
    # Faked through os.access: these tests may run as root, who can read a chmod 000 directory.
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode: False if str(path) == str(tmp_path) else real_access(path, mode),
    )
    with pytest.raises(ValueError, match=r"data_dir '.*' is not readable"):
        load_datasets("digits", data_dir=str(tmp_path), image_size=8, global_batch_size=8)


def test_unknown_split(digits_dir):
    with pytest.raises(
        ValueError, match=r"eval_split 'validation' is not a split.*\['test', 'train'\]"
    ):
        load_datasets(
            "digits", data_dir=digits_dir, image_size=8, global_batch_size=8,
            eval_split="validation",
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        # keras_vit.layers.position_embedding.normalize_grid's wording: the one size rule.
        ({"image_size": 0}, r"image_size must hold positive integers, received \(0, 0\)"),
        ({"image_size": (8, 8, 1)},
         r"image_size must be an int or a pair of ints \(height, width\), received \(8, 8, 1\)"),
        ({"global_batch_size": 0}, "global_batch_size must be a positive integer, received 0"),
        ({"channels": 4}, "Unknown channels 4: expected one of None, 1, 3"),
    ],
)
def test_invalid_sizes(digits_dir, kwargs, match):
    arguments = {"image_size": 8, "global_batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_datasets("digits", data_dir=digits_dir, **arguments)


def test_invalid_augment_config():
    with pytest.raises(ValueError, match=r"crop_area_range\[0\] must be a number in \(0, 1\], "
                                         r"received 0.0"):
        AugmentConfig(crop_area_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"crop_area_range\[1\] must be a number in \[0.5, 1\], "
                                         r"received 0.3"):
        AugmentConfig(crop_area_range=(0.5, 0.3))
    with pytest.raises(ValueError, match=r"crop_area_range\[1\] must be a number in \[0.5, 1\], "
                                         r"received 1.5"):
        AugmentConfig(crop_area_range=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"mixup_alpha must be a number in \[0, inf\), received -1"):
        AugmentConfig(mixup_alpha=-1)


class CorruptImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Six 4x4 JPEGs; train example "bad" holds bytes that are not a JPEG."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(4, 4, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(True), "test": self._generate_examples(False)}

    def _generate_examples(self, with_bad_image):
        good = tf.io.encode_jpeg(tf.fill((4, 4, 3), tf.constant(200, tf.uint8))).numpy()
        for index in range(3):
            yield f"good{index}", {"image": good, "label": index % 2}
        if with_bad_image:
            # A JPEG cut short: the header is valid, the data is not.
            yield "bad", {"image": good[: len(good) // 2], "label": 0}


@pytest.mark.parametrize("cache", [False, True])
def test_corrupt_image_names_dataset_and_split(tmp_path, cache):
    CorruptImages(data_dir=str(tmp_path)).download_and_prepare()
    # Loaded by name from data_dir, as a read-only TFDS dataset (the class is not registered).
    train, evaluation, info = load_datasets(
        "corrupt_images", data_dir=str(tmp_path), image_size=4, global_batch_size=2,
        augment=NO_AUGMENT, cache=cache,
    )
    assert (info.num_train_examples, info.num_eval_examples) == (4, 3)
    assert sum(int(images.shape[0]) for images, _ in evaluation) == 3  # the test split is fine
    with pytest.raises(
        ValueError,
        match=r"Could not decode an image of dataset 'corrupt_images', split 'train' .*"
        r"corrupt_images.1\.0\.0.*prepare the dataset again",
    ) as raised:
        with input_pipeline.explain_data_errors():
            for _ in train.take(4):
                pass
    assert isinstance(raised.value.__cause__, tf.errors.InvalidArgumentError)


def test_corrupt_image_names_its_own_directory(tmp_path):
    # The same dataset and split in two directories, the later one intact: the error names the
    # directory of the pipeline that failed (the decode op carries it; nothing global is kept).
    broken, intact = tmp_path / "broken", tmp_path / "intact"
    CorruptImages(data_dir=str(broken)).download_and_prepare()
    CorruptImages(data_dir=str(intact)).download_and_prepare()
    arguments = dict(image_size=4, global_batch_size=2, augment=NO_AUGMENT, cache=False)
    train = load_datasets("corrupt_images", data_dir=str(broken), **arguments)[0]
    load_datasets("corrupt_images", data_dir=str(intact), **arguments)
    with pytest.raises(ValueError, match=r"split 'train' \(files in .*broken.corrupt_images"):
        with data_source.explain_data_errors():
            for _ in train.take(4):
                pass


def test_decode_op_name_round_trip():
    name = data_source._decode_op_name("cifar10_jpeg", "train[:90%]", "/data/tfds/x 1.0.0")
    # Only the characters TensorFlow allows in an op name.
    assert re.fullmatch(r"[A-Za-z0-9_.\-/>]+", name)
    for node in (name, name + "_1"):  # TensorFlow renames a second op of one graph: "_1"
        error = data_source.describe_data_error(tf.errors.InvalidArgumentError(
            None, None, f"jpeg data is corrupt\n\t [[{{{{node {node}/DecodeImage}}}}]]"))
        assert str(error).startswith(
            "Could not decode an image of dataset 'cifar10_jpeg', split 'train[:90%]' (files in "
            "/data/tfds/x 1.0.0): jpeg data is corrupt. The prepared files are corrupt")


def test_describe_data_error_ignores_other_errors():
    assert input_pipeline.describe_data_error is data_source.describe_data_error
    assert input_pipeline.describe_data_error(RuntimeError("x")) is None
    assert input_pipeline.describe_data_error(
        tf.errors.InvalidArgumentError(None, None, "shape mismatch in node foo/bar")
    ) is None
    # Names of the decode ops' shape that are not ours: not hex of JSON.
    for node in ("decode_image.3132/DecodeImage", "decode_image.zz/DecodeImage"):
        assert data_source.describe_data_error(
            tf.errors.InvalidArgumentError(None, None, f"bad image in node {node}")) is None
    with pytest.raises(tf.errors.InvalidArgumentError, match="unrelated"):
        with input_pipeline.explain_data_errors():
            raise tf.errors.InvalidArgumentError(None, None, "unrelated")


def test_raw_images_are_what_a_deployed_model_takes(tfds_data_dir):
    images, labels = input_pipeline.raw_images(
        "digits", data_dir=tfds_data_dir, image_size=(16, 12), split="test")
    assert images.dtype == np.uint8 and images.shape == (359, 16, 12, 1)
    assert labels.dtype == np.int64 and labels.shape == (359,) and set(labels) == set(range(10))
    # Rounded from what evaluation sees: preprocess_for_eval's bilinear resize, before
    # normalization, within half a pixel level.
    evaluation = next(iter(input_pipeline.eval_dataset(
        "digits", data_dir=tfds_data_dir, image_size=(16, 12), global_batch_size=359)))[0]
    pixels = (evaluation.numpy() + 1.0) * 127.5
    np.testing.assert_allclose(images, pixels, atol=0.5 + 1e-3)
    drawn, drawn_labels = input_pipeline.raw_images(
        "digits", data_dir=tfds_data_dir, image_size=(16, 12), split="test", count=20, seed=3)
    again, _ = input_pipeline.raw_images(
        "digits", data_dir=tfds_data_dir, image_size=(16, 12), split="test", count=20, seed=3)
    np.testing.assert_array_equal(drawn, again)
    assert not np.array_equal(drawn, images[:20])
    first, _ = input_pipeline.raw_images(
        "digits", data_dir=tfds_data_dir, image_size=(16, 12), split="test", count=20)
    np.testing.assert_array_equal(first, images[:20])
    with pytest.raises(ValueError, match="count 400 is more than the 359 images of 'digits' "
                                         "split 'test'"):
        input_pipeline.raw_images("digits", data_dir=tfds_data_dir, image_size=8,
                                  split="test", count=400)
