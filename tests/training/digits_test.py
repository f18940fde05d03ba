"""Tests of the embedded `digits` TFDS dataset: counts, features, the fixed split, the scaling."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

import training.datasets  # noqa: F401  (registers "digits")
from training.datasets import digits

# Per-class sizes of sklearn's digits (labels 0..9), and round(n / 5) of each for the test split.
CLASS_SIZES = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
TEST_PER_CLASS = [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]


def _read_split(data_dir, split):
    """Returns {id: (image, label)} for one split, read through tfds.load."""
    ds = tfds.load("digits", split=split, data_dir=str(data_dir))
    return {
        ex["id"].decode(): (ex["image"], int(ex["label"])) for ex in tfds.as_numpy(ds)
    }


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.builder("digits", data_dir=str(data_dir)).download_and_prepare()
    return data_dir


@pytest.fixture(scope="module")
def splits(digits_dir):
    return {split: _read_split(digits_dir, split) for split in ("train", "test")}


def test_registered_and_prepared_offline(digits_dir):
    builder = tfds.builder("digits", data_dir=str(digits_dir))
    assert isinstance(builder, digits.Digits)
    assert builder.is_prepared()
    assert str(builder.version) == "1.0.0"
    assert builder.info.splits["train"].num_examples == 1438
    assert builder.info.splits["test"].num_examples == 359
    assert builder.info.features["label"].num_classes == 10
    assert builder.info.features["label"].names == [str(d) for d in range(10)]
    assert builder.info.supervised_keys == ("image", "label")


def test_counts_features_and_label_range(splits):
    assert len(splits["train"]) == 1438
    assert len(splits["test"]) == 359
    for split in splits.values():
        image, _ = next(iter(split.values()))
        assert image.shape == (8, 8, 1)
        assert image.dtype == np.uint8
        labels = np.array([label for _, label in split.values()])
        assert labels.min() == 0 and labels.max() == 9


def test_split_is_stratified_and_partitions_the_data(splits):
    train_ids, test_ids = set(splits["train"]), set(splits["test"])
    assert not train_ids & test_ids
    assert train_ids | test_ids == {f"{i:04d}" for i in range(1797)}
    test_counts = np.bincount([label for _, label in splits["test"].values()], minlength=10)
    train_counts = np.bincount([label for _, label in splits["train"].values()], minlength=10)
    np.testing.assert_array_equal(test_counts, TEST_PER_CLASS)
    np.testing.assert_array_equal(train_counts + test_counts, CLASS_SIZES)


def test_split_is_deterministic(splits, tmp_path):
    # A second, independent preparation gives the same ids in each split.
    tfds.builder("digits", data_dir=str(tmp_path)).download_and_prepare()
    for split in ("train", "test"):
        assert set(_read_split(tmp_path, split)) == set(splits[split])
    # And the split is the documented function of the labels alone.
    indices = digits.split_indices(load_digits().target)
    assert {f"{i:04d}" for i in indices["test"]} == set(splits["test"])
    assert {f"{i:04d}" for i in indices["train"]} == set(splits["train"])


def test_pixels_are_counts_scaled_to_255_rounding_half_up(splits):
    sklearn_digits = load_digits()
    allowed = {(v * 255 + 8) // 16 for v in range(17)}
    assert sorted(allowed)[:4] == [0, 16, 32, 48] and 128 in allowed and 255 in allowed
    for split in splits.values():
        for key, (image, label) in list(split.items())[:50]:
            index = int(key)
            expected = (sklearn_digits.images[index].astype(np.int64) * 255 + 8) // 16
            np.testing.assert_array_equal(image[..., 0], expected)
            assert label == sklearn_digits.target[index]
            assert set(np.unique(image)) <= allowed
