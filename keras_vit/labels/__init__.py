"""ImageNet class names, and `decode_predictions` to turn a classifier's output into them.

The names are facts shipped as package data (`imagenet2012.tsv`, `imagenet21k.tsv` beside this
file; `README.md` there names their source): one line per class, in class order,
`<WordNet synset id><TAB><the synset's lemmas, comma-separated>`.

- `"imagenet2012"` (alias `"imagenet1k"`): the 1,000 ILSVRC-2012 classes in the standard order
  (synset ids sorted, as in TFDS `imagenet2012`), the head of every ImageNet-1k checkpoint.
- `"imagenet21k"`: the 21,843 classes of Google's ImageNet-21k in the order of the original ViT
  ImageNet-21k checkpoints (two more classes than the public fall11 release's 21,841).

Example:

>>> class_names()[207], synsets()[207]
('golden retriever', 'n02099601')
>>> len(class_names("imagenet21k"))
21843
"""

import functools
import importlib.resources

import keras
import ml_dtypes
import numpy as np

# Canonical label set -> its data file. Aliases map onto these keys.
_FILES = {"imagenet2012": "imagenet2012.tsv", "imagenet21k": "imagenet21k.tsv"}
_ALIASES = {
    "imagenet2012": "imagenet2012",
    "imagenet1k": "imagenet2012",
    "imagenet21k": "imagenet21k",
}

# A row counts as probabilities when its sum is within this of 1: room for float32 rounding over
# 21,843 classes. Lower precisions get two machine epsilons instead when that is more (bfloat16:
# 0.016): rounding each value moves it by up to half an epsilon of itself, so the sum moves by
# up to half an epsilon, and the model's own low-precision sum adds about as much.
_SUM_TOLERANCE = 1e-3


def _canonical(labels):
    if not isinstance(labels, str) or labels not in _ALIASES:
        raise ValueError(
            f"Unknown labels {labels!r}: expected one of {', '.join(_ALIASES)}"
        )
    return _ALIASES[labels]


@functools.lru_cache(maxsize=None)
def _read(canonical):
    """(synset ids, full lemma strings) of a label set, read once from the package data."""
    text = (
        importlib.resources.files(__name__).joinpath(_FILES[canonical]).read_text(encoding="utf-8")
    )
    rows = [line.split("\t") for line in text.splitlines()]
    return tuple(row[0] for row in rows), tuple(row[1] for row in rows)


def synsets(labels="imagenet2012"):
    """The WordNet synset id of each class, in class order.

    Args:
        labels: str. The label set: `"imagenet2012"` (alias `"imagenet1k"`) or `"imagenet21k"`.
            Defaults to `"imagenet2012"`.

    Returns:
        A tuple of str such as `"n01440764"`, one per class.

    Example:

    >>> synsets()[:2]
    ('n01440764', 'n01443537')
    """
    return _read(_canonical(labels))[0]


@functools.lru_cache(maxsize=None)
def _names(canonical, full):
    lemmas = _read(canonical)[1]
    return lemmas if full else tuple(lemma.split(", ")[0] for lemma in lemmas)


def class_names(labels="imagenet2012", *, full=False):
    """The name of each class, in class order.

    A class is a WordNet synset; its name is the synset's first lemma ("tench"), the name that
    `keras.applications` and torchvision show. First lemmas are not unique ("crane" is classes
    134, the bird, and 517, the machine; the 21k set has many more): the class index is the
    identity, or `full=True` gives all the synset's lemmas ("tench, Tinca tinca").

    Args:
        labels: str. The label set: `"imagenet2012"` (alias `"imagenet1k"`) or `"imagenet21k"`.
            Defaults to `"imagenet2012"`.
        full: bool. Return every lemma of the synset, comma-separated, instead of the first.
            Defaults to False.

    Returns:
        A tuple of str, one per class (1,000 or 21,843).

    Example:

    >>> class_names()[:2]
    ('tench', 'goldfish')
    >>> class_names("imagenet1k", full=True)[0]
    'tench, Tinca tinca'
    """
    return _names(_canonical(labels), bool(full))


def decode_predictions(preds, top=5, labels="imagenet2012", *, from_logits=None):
    """The `top` classes of each image, best first, as `(class_index, name, score)`.

    Like `keras.applications.imagenet_utils.decode_predictions`, with the class index first and
    the scores always probabilities. `keras_vit.ViT` returns logits, so its output can be passed
    as is.

    Logits or probabilities: with `from_logits=None` the whole batch is taken as probabilities
    when every value is in [0, 1] and every row sums to 1 within 1e-3 (two machine epsilons for
    float16/bfloat16 input), and as logits otherwise; softmax is then applied in float64 after
    subtracting each row's maximum. Probabilities are returned unchanged (not renormalized).
    `from_logits=True` or `False` skips the detection.

    Args:
        preds: array of shape (batch, num_classes): a NumPy array or any backend's tensor, finite
            values. `num_classes` must be the label set's size.
        top: int. How many classes to return per image, 1 to num_classes. Defaults to 5.
        labels: str or sequence of str. The label set: `"imagenet2012"` (alias
            `"imagenet1k"`, 1,000 classes) or `"imagenet21k"` (21,843 classes); a Hub
            checkpoint (`"hf://ORG/NAME"` or a checkpoint folder) whose config names its classes
            (`id2label`, timm's `label_names`), e.g. a community fine-tune on food101; or the
            class names themselves, in class order. Defaults to `"imagenet2012"`.
        from_logits: bool or None. True: `preds` are logits; False: probabilities; None: detect
            as above. Defaults to None.

    Returns:
        A list with one list per image of `top` tuples `(class_index, name, score)`: int, str
        (the class's first WordNet lemma, see `class_names`) and float probability, highest
        score first (ties: lower class index first).

    Example:

    >>> logits = np.zeros((1, 1000))
    >>> logits[0, 207], logits[0, 1] = 8.0, 6.0
    >>> decode_predictions(logits, top=2)
    [[(207, 'golden retriever', 0.680...), (1, 'goldfish', 0.092...)]]
    """
    names = _label_names(labels)
    num_classes = len(names)
    if from_logits not in (None, True, False):
        raise ValueError(f"from_logits must be True, False or None, received {from_logits!r}")
    if (
        not isinstance(top, (int, np.integer))
        or isinstance(top, bool)
        or not 1 <= top <= num_classes
    ):
        raise ValueError(f"top must be an integer in [1, {num_classes}], received {top!r}")

    x = np.asarray(keras.ops.convert_to_numpy(preds))
    if x.ndim != 2:
        raise ValueError(
            f"preds must have shape (batch, {num_classes}) for labels {labels!r}, "
            f"received shape {x.shape}"
        )
    if x.shape[1] != num_classes:
        raise ValueError(
            f"preds has {x.shape[1]} classes but labels {labels!r} has {num_classes}"
        )
    input_dtype = x.dtype
    if input_dtype.kind not in "biuf" and not _float_epsilon(input_dtype):
        raise ValueError(f"preds must be numeric, received dtype {input_dtype}")
    x = x.astype(np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"preds must be finite; rows {bad_rows[:10].tolist()} contain NaN or inf"
        )

    if from_logits is None:
        from_logits = not _look_like_probabilities(x, input_dtype)
    probs = _softmax(x) if from_logits else x

    # Stable sort of the negated scores: equal scores keep class order.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    return [
        [(int(i), names[i], float(row[i])) for i in row_order]
        for row, row_order in zip(probs, order)
    ]


def _label_names(labels):
    """The class names of a `labels` argument of `decode_predictions`."""
    if isinstance(labels, (list, tuple)):
        if not labels or not all(isinstance(n, str) for n in labels):
            raise ValueError(
                f"labels as a sequence must be non-empty class names (str), received "
                f"{list(labels)[:5]!r}")
        return tuple(labels)
    from keras_vit import hub  # the label sets need no Hub client

    if hub.is_reference(labels):
        from keras_vit import checkpoints

        arch = checkpoints.read_checkpoint(labels, config_only=True).architecture
        if not arch.class_names:
            raise ValueError(f"{labels}: its config names no classes (no id2label or "
                             f"label_names for a head)")
        return arch.class_names
    return class_names(_canonical(labels))


def _look_like_probabilities(x, input_dtype):
    if x.size == 0:
        return False
    tolerance = max(_SUM_TOLERANCE, 2 * _float_epsilon(input_dtype))
    return bool(
        (x >= 0).all() and (x <= 1).all() and (np.abs(x.sum(axis=1) - 1) <= tolerance).all()
    )


def _float_epsilon(dtype):
    """Machine epsilon of a float dtype, bfloat16 included (np.finfo does not know it); else 0."""
    try:
        return float(ml_dtypes.finfo(dtype).eps)
    except (TypeError, ValueError):
        return 0.0


def _softmax(x):
    # Subtracting the row maximum keeps exp() from overflowing; float64 keeps small probabilities.
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
