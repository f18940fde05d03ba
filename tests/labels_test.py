"""Tests of keras_vit/labels: the shipped ImageNet class names and decode_predictions."""

import importlib.resources

import keras
import ml_dtypes
import numpy as np
import pytest

import keras_vit
from keras_vit import labels


def _softmax64(x):
    x = np.asarray(x, np.float64)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _raises_exactly(message, call):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


# Known classes, (index, synset id, first lemma, all lemmas), from the source files named in
# keras_vit/labels/README.md.
IMAGENET2012 = [
    (0, "n01440764", "tench", "tench, Tinca tinca"),
    (1, "n01443537", "goldfish", "goldfish, Carassius auratus"),
    (134, "n02012849", "crane", "crane"),
    (207, "n02099601", "golden retriever", "golden retriever"),
    (517, "n03126707", "crane", "crane"),
    (850, "n04399382", "teddy", "teddy, teddy bear"),
    (999, "n15075141", "toilet tissue", "toilet tissue, toilet paper, bathroom tissue"),
]
IMAGENET21K = [
    (0, "n00004475", "organism", "organism, being"),
    (1, "n00005787", "benthos", "benthos"),
    (359, "n01440764", "tench", "tench, Tinca tinca"),
    (2264, "n02099601", "golden retriever", "golden retriever"),
    (9205, "n03931044", "picture", "picture, image, icon, ikon"),
    (15027, "n09859684", "bleacher", "bleacher"),
    (21842, "n15102894", "knothole", "knothole"),
]


@pytest.mark.parametrize("label_set, count, known", [
    ("imagenet2012", 1000, IMAGENET2012),
    ("imagenet1k", 1000, IMAGENET2012),
    ("imagenet21k", 21843, IMAGENET21K),
])
def test_known_classes(label_set, count, known):
    names = labels.class_names(label_set)
    full = labels.class_names(label_set, full=True)
    ids = labels.synsets(label_set)
    assert len(names) == len(full) == len(ids) == count
    assert len(set(ids)) == count
    for index, synset, name, lemmas in known:
        assert (ids[index], names[index], full[index]) == (synset, name, lemmas)
    assert all(isinstance(n, str) and n and n == f.split(", ")[0] for n, f in zip(names, full))


def test_2012_is_sorted_synset_order_and_21k_lacks_only_teddy():
    # The ILSVRC-2012 order is the sorted synset ids; ImageNet-21k (Google's) holds all of them
    # but teddy bear (class 850), which the fall11 release dropped.
    ids_2012 = labels.synsets("imagenet2012")
    assert list(ids_2012) == sorted(ids_2012)
    assert set(ids_2012) - set(labels.synsets("imagenet21k")) == {"n04399382"}


def test_data_files_are_the_shipped_package_data():
    files = importlib.resources.files("keras_vit.labels")
    lines = files.joinpath("imagenet2012.tsv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1000
    assert lines[207] == "n02099601\tgolden retriever"
    assert files.joinpath("README.md").is_file()


def test_results_are_cached():
    assert labels.class_names("imagenet1k") is labels.class_names("imagenet2012")
    assert labels.synsets("imagenet21k") is labels.synsets("imagenet21k")


def test_unknown_label_set():
    message = "Unknown labels 'imagenet': expected one of imagenet2012, imagenet1k, imagenet21k"
    _raises_exactly(message, lambda: labels.class_names("imagenet"))
    _raises_exactly(message, lambda: labels.synsets("imagenet"))
    _raises_exactly(message, lambda: keras_vit.decode_predictions(np.zeros((1, 1000)),
                                                                  labels="imagenet"))
    _raises_exactly("Unknown labels None: expected one of imagenet2012, imagenet1k, imagenet21k",
                    lambda: labels.class_names(None))


def test_exported_at_top_level():
    assert keras_vit.decode_predictions is labels.decode_predictions
    assert "decode_predictions" in keras_vit.__all__


def test_decode_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(3, 1000)).astype(np.float32)
    logits[1, 207] = 40.0  # dominates row 1
    logits[2] = 0.0
    logits[2, [5, 9]] = 2.5  # a tie: lower index first
    decoded = keras_vit.decode_predictions(logits, top=4)
    expected = _softmax64(logits)
    names = labels.class_names()
    assert len(decoded) == 3
    for row, probs, result in zip(logits, expected, decoded):
        indices = [index for index, _, _ in result]
        assert indices == list(np.argsort(-probs, kind="stable")[:4])
        assert [name for _, name, _ in result] == [names[i] for i in indices]
        scores = [score for _, _, score in result]
        assert all(type(i) is int and type(s) is float for i, _, s in result)
        np.testing.assert_allclose(scores, probs[indices], rtol=0, atol=1e-6)
        assert scores == sorted(scores, reverse=True)
    assert decoded[1][0][:2] == (207, "golden retriever")
    assert decoded[1][0][2] > 0.999
    assert [index for index, _, _ in decoded[2][:2]] == [5, 9]
    assert decoded[2][0][2] == decoded[2][1][2]


def test_large_logits_do_not_overflow():
    logits = np.full((1, 1000), -1e4)
    logits[0, 3], logits[0, 4] = 1000.0, 999.0
    (result,) = keras_vit.decode_predictions(logits, top=2)
    e = np.exp(-1.0)
    np.testing.assert_allclose([s for _, _, s in result], [1 / (1 + e), e / (1 + e)], atol=1e-12)


def test_probabilities_pass_through_unchanged():
    rng = np.random.default_rng(1)
    probs = _softmax64(rng.normal(size=(2, 1000)))
    decoded = keras_vit.decode_predictions(probs, top=3)
    for row, result in zip(probs, decoded):
        assert [s for _, _, s in result] == sorted(row, reverse=True)[:3]
    # Forcing the same reading gives the same answer.
    assert keras_vit.decode_predictions(probs, top=3, from_logits=False) == decoded


def test_from_logits_forces_the_reading():
    # A one-hot row looks like probabilities; read as logits it is softmaxed.
    one_hot = np.zeros((1, 1000))
    one_hot[0, 1] = 1.0
    assert keras_vit.decode_predictions(one_hot, top=1) == [[(1, "goldfish", 1.0)]]
    (result,) = keras_vit.decode_predictions(one_hot, top=2, from_logits=True)
    expected = _softmax64(one_hot)[0]
    assert [i for i, _, _ in result] == [1, 0]
    np.testing.assert_allclose([s for _, _, s in result], expected[[1, 0]], atol=1e-15)
    # Logits that are not probabilities, forced as probabilities, are returned as given.
    logits = np.linspace(-2.0, 3.0, 1000)[None]
    (result,) = keras_vit.decode_predictions(logits, top=1, from_logits=False)
    assert result == [(999, "toilet tissue", 3.0)]


def test_detection_is_per_batch():
    # One row of logits makes the whole batch logits, the probability row included.
    probs = np.full((1, 1000), 1e-3)
    logits = np.linspace(0.0, 5.0, 1000)[None]
    decoded = keras_vit.decode_predictions(np.concatenate([probs, logits]), top=1)
    np.testing.assert_allclose(decoded[0][0][2], 1e-3, atol=1e-15)  # softmax of a constant row
    # A row of values in [0, 1] that does not sum to 1 is logits.
    (result,) = keras_vit.decode_predictions(np.full((1, 1000), 0.5), top=1)
    assert result == [(0, "tench", pytest.approx(1e-3, abs=1e-15))]


def test_bfloat16_probabilities_are_detected():
    rng = np.random.default_rng(2)
    probs = _softmax64(rng.normal(0.0, 4.0, size=(2, 1000))).astype(ml_dtypes.bfloat16)
    sums = probs.astype(np.float64).sum(axis=1)
    assert np.abs(sums - 1).max() > 0  # rounded, yet within two bfloat16 epsilons
    decoded = keras_vit.decode_predictions(probs, top=2)
    for row, result in zip(probs.astype(np.float64), decoded):
        assert [s for _, _, s in result] == sorted(row, reverse=True)[:2]


def test_backend_tensor_and_imagenet21k():
    logits = np.zeros((2, 21843), np.float32)
    logits[0, 2264] = 10.0
    logits[1, 359] = 10.0
    decoded = keras_vit.decode_predictions(keras.ops.convert_to_tensor(logits), top=1,
                                           labels="imagenet21k")
    p = np.exp(10.0) / (np.exp(10.0) + 21842)
    assert [r[0][:2] for r in decoded] == [(2264, "golden retriever"), (359, "tench")]
    np.testing.assert_allclose([r[0][2] for r in decoded], [p, p], rtol=0, atol=1e-6)


def test_empty_batch():
    assert keras_vit.decode_predictions(np.zeros((0, 1000))) == []


@pytest.mark.parametrize("preds, kwargs, message", [
    (np.zeros((2, 10)), {}, "preds has 10 classes but labels 'imagenet2012' has 1000"),
    (np.zeros((2, 1000)), {"labels": "imagenet21k"},
     "preds has 1000 classes but labels 'imagenet21k' has 21843"),
    (np.zeros(1000), {}, "preds must have shape (batch, 1000) for labels 'imagenet2012', "
     "received shape (1000,)"),
    (np.zeros((1, 1000)), {"top": 0}, "top must be an integer in [1, 1000], received 0"),
    (np.zeros((1, 1000)), {"top": 1001}, "top must be an integer in [1, 1000], received 1001"),
    (np.zeros((1, 1000)), {"top": 2.0}, "top must be an integer in [1, 1000], received 2.0"),
    (np.zeros((1, 1000)), {"top": True}, "top must be an integer in [1, 1000], received True"),
    (np.zeros((1, 1000)), {"from_logits": "yes"},
     "from_logits must be True, False or None, received 'yes'"),
    (np.array([[0.0] * 999 + [np.nan], [0.0] * 1000]), {},
     "preds must be finite; rows [0] contain NaN or inf"),
    (np.array([["a"] * 1000]), {}, "preds must be numeric, received dtype <U1"),
])
def test_errors(preds, kwargs, message):
    _raises_exactly(message, lambda: keras_vit.decode_predictions(preds, **kwargs))


def test_top_accepts_numpy_integers_and_all_classes():
    decoded = keras_vit.decode_predictions(np.zeros((1, 1000)), top=np.int64(1000))
    assert [i for i, _, _ in decoded[0]] == list(range(1000))
