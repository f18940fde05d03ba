"""Model parallelism with `keras.distribution`: layouts that shard a ViT over devices.

`layout_map(device_mesh, variant)` returns the `keras.distribution.LayoutMap`
that splits every Transformer block Megatron-style
([Shoeybi et al., 2019](https://arxiv.org/abs/1909.08053), Section 3) over
the mesh's `"model"` axis, while `keras.distribution.ModelParallel` splits
the batch over its `"data"` axis:

| variable of each `encoder_block_{i}`   | shape        | split over "model" |
|----------------------------------------|--------------|--------------------|
| `qkv/kernel`, `qkv/bias`               | (D, 3D), 3D  | output columns     |
| `attention_output/kernel`              | (D, D)       | input rows         |
| `mlp_dense_1/kernel`, `mlp_dense_1/bias` | (D, M), M  | output columns     |
| `mlp_dense_2/kernel`                   | (M, D)       | input rows         |
| the other two biases, both LayerNorms  | (D,)         | replicated         |

Everything else (patch embedding, class token, position embeddings, the
final LayerNorm, pre-logits and head, a hybrid's ResNet stem) has no rule
and is replicated, `ModelParallel`'s default: for H/14 that is 0.37% of the
parameters, and the head's width is the user's class count, which no mesh
needs to divide.

Keras matches each variable's path (`"encoder_block_3/qkv/kernel"`) against
the map's keys as regular expressions (`re.fullmatch`) and replicates a
variable that no key matches, so a key that no longer matches the layers'
names shards nothing and says nothing. `check_layout_map(model, layout_map)`
makes that an error.

This is for the JAX backend, where Keras implements `ModelParallel`; the
training binary scales the same model with `tf.distribute` instead.
"""

import collections
import re

import keras

from keras_vit import variants

# One row per variable of a `TransformerBlock`: the variable's path inside
# the block and the mesh axis of each of its dimensions, `_MODEL` standing
# for the model axis. The column-split layers (qkv, mlp_dense_1) feed the
# row-split ones (attention_output, mlp_dense_2) with activations that are
# already split the same way, so each half of the block needs one all-reduce
# of its (B*T, D) output, in the forward pass and in the backward pass. A
# row-split layer's bias is added after that all-reduce: replicated.
_MODEL = object()
_Rule = collections.namedtuple("_Rule", ["variable", "axes"])
_BLOCK_RULES = (
    _Rule("attention_norm/gamma", (None,)),
    _Rule("attention_norm/beta", (None,)),
    _Rule("qkv/kernel", (None, _MODEL)),
    _Rule("qkv/bias", (_MODEL,)),
    _Rule("attention_output/kernel", (_MODEL, None)),
    _Rule("attention_output/bias", (None,)),
    _Rule("mlp_norm/gamma", (None,)),
    _Rule("mlp_norm/beta", (None,)),
    _Rule("mlp_dense_1/kernel", (None, _MODEL)),
    _Rule("mlp_dense_1/bias", (_MODEL,)),
    _Rule("mlp_dense_2/kernel", (_MODEL, None)),
    _Rule("mlp_dense_2/bias", (None,)),
)

# `ViT` names its blocks `encoder_block_{i}`; the optional prefix admits a
# model built inside a `keras.name_scope`.
_BLOCK_PATH = r"(?:.+/)?encoder_block_\d+/"


def layout_map(device_mesh, variant, *, model_axis="model"):
    """The `LayoutMap` that shards each Transformer block over `model_axis`.

    Megatron-style tensor parallelism: in each block the q|k|v projection
    and the first MLP Dense are split by output columns, the attention
    output projection and the second MLP Dense by input rows, their biases
    to match; LayerNorms, embeddings, the head and a hybrid's ResNet stem
    are replicated (they match no rule). Combined with
    `keras.distribution.ModelParallel(layout_map=..., batch_dim_name="data")`
    the batch is split over the mesh's other axis. Set the distribution
    before the model is built: variables take their layout when created.

    The fused q|k|v kernel (D, 3D) holds all the queries' columns, then the
    keys', then the values' (each H heads of D / H). A `LayoutMap` can only
    split a dimension into contiguous blocks, so of m model devices, device
    i holds columns [i * 3D / m, (i + 1) * 3D / m): for m > 1 a run of whole
    heads (the divisibility checks see to that) that mixes q, k and v (m = 2:
    the queries and half the keys, then the rest), not the q, k and v of the
    same H / m heads that attention needs on one device. The result is still
    exact (a layout is an annotation; XLA's SPMD partitioner moves data where
    the computation needs it), but unlike Megatron's it costs communication
    inside the block: compiled on a 2x4 CPU mesh (`benchmarks/
    distribution_collectives.py`), each block's forward pass all-gathers its
    (B*T, 3D) projections over the model axis, each device then keeping the
    q, k and v of its H / m heads, and the backward pass all-gathers their
    gradient, besides Megatron's one all-reduce of (B*T, D) after each
    row-split layer in each pass. An all-gather of 3D columns moves about
    1.5 times what an all-reduce of D does, so a block's communication is
    about 3.5 all-reduces per pass instead of 2. Avoiding it would take a
    per-head q|k|v column order in the kernel, a change of the block's
    weight layout (saved models, the checkpoint converter) that this module
    leaves alone.

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with an axis named
            `model_axis`; its other axis (usually `"data"`) is the one to
            give `ModelParallel` as `batch_dim_name`.
        variant: str or `keras_vit.variants.VariantSpec`. The variant the
            model will be built with, e.g. `"L/16"` or `"R50+B/16"`: its
            number of heads, width and MLP width must each be divisible by
            the size of the model axis.
        model_axis: str. The mesh axis over which the blocks are split.
            Defaults to `"model"`.

    Returns:
        A `keras.distribution.LayoutMap` on `device_mesh`: one key per
        variable of a Transformer block (a regular expression matching that
        variable in every block), the value its `TensorLayout`.

    Raises:
        ValueError: if the mesh has no axis `model_axis`, or the variant's
            number of heads, width or MLP width is not divisible by its size.

    Example:

    >>> devices = [f"cpu:{i}" for i in range(8)]  # names; nothing is placed
    >>> mesh = keras.distribution.DeviceMesh((2, 4), ["data", "model"], devices)
    >>> layouts = layout_map(mesh, "B/16")
    >>> layouts["encoder_block_0/qkv/kernel"].axes
    (None, 'model')
    >>> layouts["encoder_block_11/mlp_dense_2/kernel"].axes
    ('model', None)
    >>> layouts["head/kernel"] is None  # no rule: replicated
    True
    >>> layout_map(mesh, "Ti/16")
    Traceback (most recent call last):
    ...
    ValueError: Variant 'Ti/16' ...: its 3 attention heads are not divisible by 4. Each...
    """
    spec = variants.parse_variant(variant)
    size = _axis_size(device_mesh, model_axis)
    dims = (
        (spec.num_heads, f"its {spec.num_heads} attention heads are"),
        (spec.hidden_dim, f"its width {spec.hidden_dim} is"),
        (spec.mlp_dim, f"its MLP width {spec.mlp_dim} is"),
    )
    for value, what in dims:
        if value % size != 0:
            sizes = [n for n in range(1, spec.num_heads + 1)
                     if all(v % n == 0 for v, _ in dims)]
            raise ValueError(
                f"Variant {spec.name!r} cannot be split over the {size} devices of "
                f"mesh axis {model_axis!r}: {what} not divisible by {size}. Each "
                f"device holds whole heads and equal parts of the width and MLP "
                f"width; {model_axis!r} axis sizes that work: {sizes}"
            )
    layouts = keras.distribution.LayoutMap(device_mesh)
    for rule in _BLOCK_RULES:
        axes = tuple(model_axis if axis is _MODEL else axis for axis in rule.axes)
        layouts[_BLOCK_PATH + re.escape(rule.variable)] = keras.distribution.TensorLayout(
            axes
        )
    return layouts


def check_layout_map(model, layout_map):
    """Raises unless every rule of `layout_map` applies to variables of `model`.

    Keras replicates a variable that no key of the layout map matches, so a
    key written for other layer names (another model, a renamed layer)
    silently shards nothing. Call this once the model is built, with the
    layout map it was built under; or on a model built without a
    distribution, before the distributed one, to find a layout that does
    not fit its shapes.

    Args:
        model: a built `keras.Model` (or layer).
        layout_map: `keras.distribution.LayoutMap`, e.g. from `layout_map`.

    Raises:
        ValueError: naming every key that matches no variable of the model
            (with the model's variable paths to compare with), or a variable
            whose rank differs from the number of axes of its layout, or one
            with a dimension not divisible by the size of its mesh axis.

    Example:

    >>> devices = [f"cpu:{i}" for i in range(2)]
    >>> mesh = keras.distribution.DeviceMesh((1, 2), ["data", "model"], devices)
    >>> layouts = layout_map(mesh, "mu/4")
    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=3)
    >>> check_layout_map(model, layouts)
    >>> layouts["encoder_block_.*/mlp/kernel"] = (None, "model")  # no such layer
    >>> check_layout_map(model, layouts)
    Traceback (most recent call last):
    ...
    ValueError: 1 of the 13 rules of the layout map match no variable of model 'vit_mu4'...
    """
    paths = [variable.path for variable in model.weights]
    unmatched = [key for key in layout_map
                 if not any(path == key or re.fullmatch(key, path) for path in paths)]
    if unmatched:
        shown = ", ".join(repr(p) for p in paths[:8])
        raise ValueError(
            f"{len(unmatched)} of the {len(layout_map)} rules of the layout map "
            f"match no variable of model {model.name!r}, so they would shard "
            f"nothing: {unmatched}. Keys are regular expressions that must match a "
            f"whole variable path; the model's paths are like {shown}"
            f"{', ...' if len(paths) > 8 else ''}"
        )
    mesh = layout_map.device_mesh
    for variable in model.weights:
        layout = layout_map[variable.path]
        if layout is None:
            continue
        shape = tuple(variable.shape)
        if len(layout.axes) != len(shape):
            raise ValueError(
                f"The layout {layout.axes} of variable {variable.path!r} has "
                f"{len(layout.axes)} axes, but the variable has shape {shape}"
            )
        for dim, (length, axis) in enumerate(zip(shape, layout.axes)):
            if axis is not None and length % _axis_size(mesh, axis) != 0:
                raise ValueError(
                    f"Variable {variable.path!r} of shape {shape} cannot be split "
                    f"over mesh axis {axis!r} of size {_axis_size(mesh, axis)}: "
                    f"dimension {dim} ({length}) is not divisible by it"
                )


def _axis_size(device_mesh, axis):
    if axis not in device_mesh.axis_names:
        raise ValueError(
            f"Axis {axis!r} is not an axis of the device mesh, whose axes are "
            f"{list(device_mesh.axis_names)}; name the axis to split the model over "
            f"(for data parallelism alone, use keras.distribution.DataParallel)"
        )
    return device_mesh.shape[list(device_mesh.axis_names).index(axis)]
