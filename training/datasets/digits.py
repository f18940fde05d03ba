"""`digits`: the 8x8 handwritten digits shipped inside scikit-learn, as a TFDS dataset.

The project's default dataset: it needs no download (scikit-learn carries the 1,797 images in its
wheel), prepares in about a second, and goes through exactly the same `tfds.builder` /
`as_dataset` path as `cifar10` or `imagenet2012`, so the training binary, its tests and the
quick-start all exercise the real input pipeline offline.

Source: the test part of the UCI "Optical Recognition of Handwritten Digits" data set
(Alpaydin & Kaynak, 1998), as returned by `sklearn.datasets.load_digits`: 32x32 bitmaps from 13
writers, reduced to 8x8 by counting the "on" pixels in each 4x4 block, so every pixel is an
integer in 0..16.

What this builder stores:
- `image`: (8, 8, 1) uint8, PNG-encoded. The 0..16 counts are scaled to 0..255 as
  `(v * 255 + 8) // 16`, i.e. `v * 255 / 16` rounded half up; 0 -> 0, 8 -> 128, 16 -> 255. The
  scaling makes the images look like every other uint8 image dataset, so that one normalization
  (`x / 127.5 - 1`) and RandAugment's (0, 255) value range apply unchanged.
- `label`: ClassLabel with the names "0".."9".
- `id`: the example's index in `load_digits()` order as four digits ("0000".."1796").

Splits: a stratified 80/20 split, fixed once and for all. Within each class, the indices are
permuted by `numpy.random.RandomState(0)` (classes drawn in label order from one generator) and
the first `round(n_class / 5)` of them (half rounding up) go to `test`: 359 test and 1,438 train
examples. `RandomState` is used, not `default_rng` or scikit-learn's splitters, because NumPy
guarantees its stream never changes between releases, so the split is the same on every machine
and every version.

Example:
```python
import tensorflow_datasets as tfds
import training.datasets  # registers "digits"

ds = tfds.load("digits", split="train", data_dir="/tmp/tfds")  # prepares offline on first use
```
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 10
# The seed of the train/test split. Changing it changes the dataset: bump VERSION if you do.
_SPLIT_SEED = 0
# One example in five goes to test (80/20).
_TEST_FRACTION_DENOMINATOR = 5


def _load_arrays():
    """Returns (images uint8 (N, 8, 8, 1), labels int64 (N,)) from scikit-learn, 0..255 scaled."""
    # Imported here: scikit-learn is only needed when the dataset is prepared, not when it is read.
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = digits.images.astype(np.int64)
    if counts.min() < 0 or counts.max() > 16:
        raise ValueError(
            f"sklearn's load_digits returned pixel values in [{counts.min()}, {counts.max()}], "
            "expected counts in [0, 16]"
        )
    # Integer arithmetic: the rounding (half up) is exact and cannot drift with float rounding.
    images = ((counts * 255 + 8) // 16).astype(np.uint8)[..., np.newaxis]
    return images, digits.target.astype(np.int64)


def split_indices(labels):
    """Returns the fixed stratified split of the digits as index arrays.

    Args:
        labels: int array (N,). The class of each example, in `load_digits()` order.

    Returns:
        dict from split name ("train", "test") to a sorted int64 array of example indices.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(_SPLIT_SEED)
    train, test = [], []
    for label in range(NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        # Half-up rounding of n / 5 in integers: 178 -> 36, 177 -> 35, 183 -> 37.
        num_test = (len(members) + _TEST_FRACTION_DENOMINATOR // 2) // _TEST_FRACTION_DENOMINATOR
        test.append(members[:num_test])
        train.append(members[num_test:])
    return {
        "train": np.sort(np.concatenate(train)).astype(np.int64),
        "test": np.sort(np.concatenate(test)).astype(np.int64),
    }


class Digits(tfds.core.GeneratorBasedBuilder):
    """The 1,797 8x8 handwritten digits of scikit-learn (UCI optdigits test set), 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 0..16 scaled to 0..255, stratified 80/20 split."}

    def _info(self):
        return self.dataset_info_from_configs(
            description=(
                "8x8 grayscale handwritten digits (the UCI optdigits test set as shipped in "
                "scikit-learn), pixel counts 0..16 scaled to 0..255; a fixed stratified 80/20 "
                "train/test split."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(NUM_CLASSES)]),
                    "id": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=(
                "https://archive.ics.uci.edu/dataset/80/"
                "optical+recognition+of+handwritten+digits"
            ),
            citation=(
                "@misc{alpaydin1998optdigits, author={Alpaydin, E. and Kaynak, C.}, "
                "title={Optical Recognition of Handwritten Digits}, year={1998}, "
                "howpublished={UCI Machine Learning Repository}}"
            ),
        )

    def _split_generators(self, dl_manager):
        # Nothing to download: the arrays come from the installed scikit-learn.
        del dl_manager
        images, labels = _load_arrays()
        indices = split_indices(labels)
        return {
            name: self._generate_examples(images, labels, split)
            for name, split in indices.items()
        }

    def _generate_examples(self, images, labels, indices):
        for index in indices:
            key = f"{index:04d}"
            yield key, {"image": images[index], "label": int(labels[index]), "id": key}
