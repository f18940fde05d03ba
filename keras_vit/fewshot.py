"""Few-shot linear evaluation of a frozen model's representation.

The ViT paper reports few-shot accuracy throughout (Section 4.1, "Metrics"):
the frozen model's representations of n examples per class are mapped to
{-1, 1}^K targets by regularized least squares, solved in closed form, and
top-1 accuracy of the resulting linear classifier is measured on the test
split. big_vision's evaluator does the same with n in (1, 5, 10, 25), the
pre-logits representation, l2 regularization 2^10 and several random draws;
these are the defaults here.

`evaluate` takes precomputed features; `feature_model` and `extract_features`
compute them with any `keras_vit` model on any backend. The TFDS binary is
`python -m training.fewshot`.
"""

import keras
import numpy as np
from keras import ops

from keras_vit import model_layers

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_L2_REG = 2.0**10
# A constant feature carries the bias. It is large, so that the bias weight
# needed is small and the l2 penalty barely constrains it.
_BIAS_FEATURE = 100.0
# Added to each feature's standard deviation before whitening: features that
# are constant over the few examples must not divide by zero.
_STD_EPSILON = 1e-5


def feature_model(model):
    """The model that maps images to `model`'s pre-logits representation.

    The representation is the input of the layer named `head` (the pooled
    tokens after the final LayerNorm, or the pre-logits `Dense + tanh` output
    when the model has one); a model without a `head` layer
    (`include_top=False`) is its own feature model.

    Args:
        model: a Functional `keras.Model`, e.g. `keras_vit.ViT(...)`.

    Returns:
        A Functional `keras.Model` sharing `model`'s layers and weights.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> tuple(feature_model(model)(np.zeros((2, 16, 16, 3))).shape)
    (2, 32)
    """
    head = model_layers.find_layer(model, "head")
    if head is None:
        return model
    return keras.Model(model.input, head.input, name=f"{model.name}_features")


def extract_features(model, batches):
    """Runs `model` over batches and stacks its outputs and the labels.

    Args:
        model: a callable mapping an image batch to (B, D) features, e.g.
            `feature_model(vit)` or a compiled function of it.
        batches: iterable of `(images, labels)` pairs of arrays; labels are
            class indices (B,) or one-hot (B, K).

    Returns:
        (features (N, D) float32, labels (N,) int64) NumPy arrays.

    Example:

    >>> model = feature_model(keras_vit.ViT("mu/4", image_size=16, num_classes=10))
    >>> batches = [(np.zeros((4, 16, 16, 3)), np.arange(4))] * 2
    >>> features, labels = extract_features(model, batches)
    >>> features.shape, labels.tolist()
    ((8, 32), [0, 1, 2, 3, 0, 1, 2, 3])
    """
    features, labels = [], []
    for images, batch_labels in batches:
        features.append(ops.convert_to_numpy(model(images)).astype("float32"))
        labels.append(_class_indices(ops.convert_to_numpy(batch_labels)))
    if not features:
        raise ValueError("batches is empty: expected at least one (images, labels) pair")
    return np.concatenate(features), np.concatenate(labels)


def least_squares(x, y, l2_reg):
    """Solves min_W ||x W - y||^2 + l2_reg ||W||^2 in closed form.

    Through the normal equations of whichever side is smaller: (D, D) when
    there are more examples N than features D, otherwise (N, N) with
    W = x^T (x x^T + l2_reg I)^-1 y (few-shot problems have N << D). Both are
    the same W; the second costs O(N^2 D) instead of O(D^3).

    Args:
        x: array (N, D).
        y: array (N, K).
        l2_reg: float > 0.

    Returns:
        array (D, K) float64.

    Example:

    >>> least_squares(np.eye(2), np.array([[2.0], [4.0]]), 1.0).ravel().tolist()
    [1.0, 2.0]
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not (isinstance(l2_reg, (int, float)) and np.isfinite(l2_reg) and l2_reg > 0):
        raise ValueError(f"l2_reg must be a positive number, received {l2_reg!r}")
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"Expected x (N, D) and y (N, K) with the same N, received {x.shape} and {y.shape}"
        )
    num, dim = x.shape
    if num >= dim:
        return np.linalg.solve(x.T @ x + l2_reg * np.eye(dim), x.T @ y)
    return x.T @ np.linalg.solve(x @ x.T + l2_reg * np.eye(num), y)


def linear_probe_accuracy(
    train_features, train_labels, test_features, test_labels, *, num_classes,
    l2_reg=DEFAULT_L2_REG,
):
    """Top-1 test accuracy of the regularized least-squares linear classifier.

    Features are whitened with the training examples' mean and standard
    deviation, a constant feature carries the bias, and the targets are the
    one-hot labels scaled to {-1, 1}.

    Args:
        train_features: array (N, D).
        train_labels: array (N,) of class indices.
        test_features: array (M, D).
        test_labels: array (M,) of class indices.
        num_classes: int. K.
        l2_reg: float. Defaults to 1024.

    Returns:
        float: the fraction of test examples classified correctly.

    Example:

    >>> x = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> linear_probe_accuracy(x, [0, 1], x, [0, 1], num_classes=2, l2_reg=1.0)
    1.0
    """
    train_features = np.asarray(train_features, dtype=np.float64)
    test_features = np.asarray(test_features, dtype=np.float64)
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0) + _STD_EPSILON

    def design(features):
        whitened = (features - mean) / std
        bias = np.full((whitened.shape[0], 1), _BIAS_FEATURE)
        return np.concatenate([whitened, bias], axis=1)

    targets = 2.0 * np.eye(num_classes)[np.asarray(train_labels)] - 1.0
    weights = least_squares(design(train_features), targets, l2_reg)
    predictions = np.argmax(design(test_features) @ weights, axis=1)
    return float(np.mean(predictions == np.asarray(test_labels)))


def draw_support_sets(labels, shots, seeds, *, num_classes=None):
    """The indices of the training examples each few-shot draw uses.

    For each seed, each class's examples are permuted once by
    `np.random.default_rng(seed)`; the n-shot set takes the first n of each
    class's permutation, so the draws of one seed are nested (its 1-shot set
    is part of its 5-shot set).

    Args:
        labels: array (N,) of class indices of the training examples.
        shots: list of int. Examples per class.
        seeds: int. Draws per shot count: seeds 0..seeds-1.
        num_classes: int or None. Defaults to the largest label + 1.

    Returns:
        dict {(shot, seed): int64 array of shot * num_classes indices}.

    Raises:
        ValueError: a shot count larger than the examples some class has.

    Example:

    >>> sets = draw_support_sets([0, 0, 1, 1, 1], shots=[2], seeds=1)
    >>> sorted(sets[(2, 0)].tolist())[:2]
    [0, 1]
    """
    labels = _class_indices(np.asarray(labels))
    shots = _check_shots(shots)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, received {seeds!r}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    most = max(shots)
    for c, indices in enumerate(members):
        if len(indices) < most:
            raise ValueError(
                f"{most}-shot evaluation needs {most} training examples of every "
                f"class, but class {c} has only {len(indices)} available"
            )
    sets = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        permuted = [rng.permutation(indices) for indices in members]
        for shot in shots:
            sets[(shot, seed)] = np.concatenate([p[:shot] for p in permuted]).astype("int64")
    return sets


def evaluate(
    train_features, train_labels, test_features, test_labels, *,
    shots=DEFAULT_SHOTS, seeds=3, l2_reg=DEFAULT_L2_REG, num_classes=None,
):
    """Few-shot linear evaluation: accuracy per shot count over several random draws.

    For each shot count n and seed, n training examples per class are drawn
    (`draw_support_sets`), a linear classifier is fitted to their features
    in closed form (`linear_probe_accuracy`) and scored on all the test
    examples.

    Args:
        train_features: array (N, D): features of the pool to draw from.
        train_labels: array (N,) class indices, or one-hot (N, K).
        test_features: array (M, D).
        test_labels: array (M,) class indices, or one-hot (M, K).
        shots: list of int. Defaults to (1, 5, 10, 25).
        seeds: int. Draws per shot count. Defaults to 3 (big_vision's).
        l2_reg: float. Defaults to 2^10 (big_vision's).
        num_classes: int or None. Defaults to the largest label + 1.

    Returns:
        dict {shot: {"mean": float, "std": float, "accuracies": [float] * seeds}}:
        top-1 accuracy in [0, 1]; `std` is the population standard deviation
        over the draws.

    Raises:
        ValueError: a shot count larger than the examples some class has
            (naming the class, the count and what is available), or features
            and labels of different lengths.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(np.arange(3), 10)
    >>> features = np.eye(3)[labels] * 10 + rng.normal(size=(30, 3))
    >>> result = evaluate(features, labels, features, labels, shots=[1, 5], seeds=2)
    >>> result[5]["mean"]
    1.0
    """
    train_labels = _class_indices(np.asarray(train_labels))
    test_labels = _class_indices(np.asarray(test_labels))
    train_features = np.asarray(train_features)
    test_features = np.asarray(test_features)
    for name, features, labels in (
        ("train", train_features, train_labels), ("test", test_features, test_labels)
    ):
        if features.ndim != 2 or features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{name}_features must have shape (N, D) with N = {labels.shape[0]} "
                f"labels, received {features.shape}"
            )
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    sets = draw_support_sets(train_labels, shots, seeds, num_classes=num_classes)
    results = {}
    for shot in _check_shots(shots):
        accuracies = [
            linear_probe_accuracy(
                train_features[sets[(shot, seed)]], train_labels[sets[(shot, seed)]],
                test_features, test_labels, num_classes=num_classes, l2_reg=l2_reg,
            )
            for seed in range(seeds)
        ]
        results[shot] = {
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "accuracies": accuracies,
        }
    return results


def _check_shots(shots):
    if isinstance(shots, int):
        shots = [shots]
    shots = list(shots)
    if not shots or any(
        not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1 for s in shots
    ):
        raise ValueError(f"shots must be positive integers, received {shots!r}")
    return sorted({int(s) for s in shots})


def _class_indices(labels):
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.argmax(labels, axis=-1)
    if labels.ndim != 1:
        raise ValueError(
            f"labels must be class indices (N,) or one-hot (N, K), received shape "
            f"{labels.shape}"
        )
    return labels.astype("int64")
