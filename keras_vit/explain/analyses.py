"""Seeing inside a ViT: intermediate tokens, attention maps and the paper's analyses.

[The ViT paper](https://arxiv.org/abs/2010.11929), Section 4.5 and Appendix D.7,
looks inside trained models in three ways, each a function here, with a
plotting helper that writes the paper's figure as a PNG:

- `attention_rollout` (Figure 6, Abnar & Zuidema 2020): which parts of the
  image the representation attends to; `plot_attention_rollout`.
- `patch_embedding_components` (Figure 7, left): the principal components of
  the patch-embedding filters; `plot_patch_embedding_filters`.
- `position_embedding_similarity` (Figure 7, centre): the cosine similarity of
  each position embedding with all others, on the patch grid;
  `plot_position_embedding_similarity`.
- `mean_attention_distance` (Figure 7, right): how far each head looks, against
  depth; `plot_mean_attention_distance`.

All of them rest on `intermediate_outputs`, which runs a model's own layers
(no second copy of the model code or of its weights) and asks every
`TransformerBlock` for its attention weights. Only that call computes them: a
normal `model(images)` keeps the fused attention kernels.

Functions take images as the model takes them (float, channels last, scaled
to [-1, 1], the model's input size) and return NumPy arrays. matplotlib is
needed by the `plot_*` functions only, and imported there.
"""

import os
import weakref

import keras
import numpy as np
from keras import ops

from keras_vit import interpolation, model_layers
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.position_embedding import PositionEmbedding

__all__ = [
    "HEAD_FUSIONS",
    "attention_rollout",
    "intermediate_outputs",
    "mean_attention_distance",
    "patch_distances",
    "patch_embedding_components",
    "plot_attention_rollout",
    "plot_mean_attention_distance",
    "plot_patch_embedding_filters",
    "plot_position_embedding_similarity",
    "position_embedding_similarity",
    "rollout_from_weights",
    "similarity_by_relation",
    "token_layout",
    "transformer_blocks",
]

HEAD_FUSIONS = ("mean", "max", "min")


def transformer_blocks(model):
    """The `TransformerBlock` layers of `model`, in the order they run.

    Args:
        model: a Functional `keras.Model` built from `keras_vit` layers, such as
            `keras_vit.ViT(...)`.

    Returns:
        list of `TransformerBlock`; block i of the other functions is item i.

    Raises:
        ValueError: if `model` is not a Functional model or has no
            `TransformerBlock` among its layers.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> [block.name for block in transformer_blocks(model)]
    ['encoder_block_0']
    """
    if not _is_functional(model):
        raise ValueError(
            f"Expected a Functional keras.Model such as keras_vit.ViT(...), "
            f"received {type(model).__name__} {getattr(model, 'name', model)!r}"
        )
    blocks = model_layers.transformer_blocks(model)
    if not blocks:
        raise ValueError(
            f"Model {model.name!r} has no TransformerBlock layer among its "
            f"layers {[layer.name for layer in model.layers]}"
        )
    return blocks


def intermediate_outputs(model, images, *, blocks=None, attention=True):
    """Runs `model` on `images` and returns every block's tokens and attention.

    The model's own layers run as in `model(images)`, in the model's own graph
    (`keras.models.clone_model` with every layer reused, so no weight is
    copied), except that the selected `TransformerBlock`s also return their
    attention weights. Whatever comes before the blocks (a patch embedding, a
    hybrid ResNet stem, ...) runs unchanged, so this works for any `keras_vit`
    model. Dropout and stochastic depth are off.

    Args:
        model: a Functional `keras.Model` with `TransformerBlock` layers, e.g.
            `keras_vit.ViT(...)`.
        images: array (B, H, W, C) of the model's input size, as the model
            takes them (float, in [-1, 1]).
        blocks: None (every block) or a list of block indices, negative
            indices counting from the end. Defaults to None.
        attention: bool. Also return the attention weights; False keeps the
            fused attention path. Defaults to True.

    Returns:
        dict of NumPy arrays:
        - `"blocks"`: list of the block indices returned (non-negative).
        - `"tokens"`: list, per selected block, of its output tokens
          (B, T, D), T counting the [class] token if the model has one.
        - `"attention"`: list, per selected block, of its attention weights
          (B, heads, T, T) after softmax (rows sum to 1), float32; None when
          `attention=False`.
        - `"features"`: the input of the `head` layer (B, D'): the pooled
          representation or, with a pre-logits layer, its output; the model's
          output when it has no `head` layer (`include_top=False`).
        - `"outputs"`: the model's output (logits).

    Raises:
        ValueError: a block index out of range, or images that are not a batch
            of the model's input size.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> out = intermediate_outputs(model, np.zeros((2, 16, 16, 3)))
    >>> out["tokens"][0].shape, out["attention"][0].shape  # 1 + (16 / 4)^2 tokens
    ((2, 17, 32), (2, 2, 17, 17))
    """
    all_blocks = transformer_blocks(model)
    selected = _block_indices(model, all_blocks, blocks)
    images = _check_images(model, images)
    probe = _probe(model, tuple(selected), attention)
    values = probe(images, training=False)
    outputs = [values[f"output_{i}"] for i in range(len(model.outputs))]
    outputs = outputs[0] if len(outputs) == 1 else outputs
    return {
        "blocks": list(selected),
        "tokens": [_numpy(values[f"tokens_{i}"]) for i in selected],
        "attention": (
            [_numpy(values[f"attention_{i}"], "float32") for i in selected] if attention else None
        ),
        "features": _numpy(values["features"]) if "features" in values else _numpy(outputs),
        "outputs": _numpy(outputs),
    }


# Probe models by model, then by (selected blocks, attention). A probe calls the model's layers
# on new symbolic inputs, which each layer records, so building one per call would grow every
# layer's record with each call (attention_rollout and mean_attention_distance make one call per
# batch). Weak keys: a model's probes go with it.
_PROBES = weakref.WeakKeyDictionary()


def _probe(model, selected, attention):
    """A Functional model sharing `model`'s layers that returns what intermediate_outputs needs.

    Its outputs are a dict: `output_{i}` (the model's outputs), `tokens_{b}` and, with
    `attention`, `attention_{b}` for each selected block b, and `features` (the input of the
    `head` layer) when the model has a head.
    """
    probes = _PROBES.setdefault(model, {})
    key = (selected, attention)
    if key in probes:
        return probes[key]
    position = {id(block): i for i, block in enumerate(transformer_blocks(model))}
    head = _head_layer(model)
    wanted = set(selected)
    captured = {}

    def call_function(layer, *args, **kwargs):
        index = position.get(id(layer))
        if layer is head:
            captured["features"] = args[0]
        if index is None:
            return layer(*args, **kwargs)
        kwargs["training"] = False
        if index in wanted:
            # All tokens of a selected block, also of a model's last block,
            # which computes the [class] token alone (`first_token_only`).
            kwargs.pop("first_token_only", None)
        if index in wanted and attention:
            out, captured[f"attention_{index}"] = _WithAttentionWeights(layer)(*args, **kwargs)
        else:
            out = layer(*args, **kwargs)
        if index in wanted:
            captured[f"tokens_{index}"] = out
        return out

    # Every layer is reused (`clone_function` returns it), so the clone runs the model's own
    # weights; only the calls of the selected blocks differ. `call_function` sees each layer
    # with the arguments it was called with when the model was built. The graph is cloned from
    # a new uncompiled Functional model over the same tensors: clone_model would compile the
    # clone of a compiled model again (and build its optimizer's slots for every weight).
    graph = keras.Model(model.inputs, model.outputs)
    clone = keras.models.clone_model(
        graph, clone_function=lambda layer: layer, call_function=call_function
    )
    outputs = {f"output_{i}": output for i, output in enumerate(clone.outputs)}
    outputs.update(captured)
    probes[key] = keras.Model(clone.inputs, outputs, name=f"{model.name}_intermediates")
    return probes[key]


class _WithAttentionWeights(keras.layers.Layer):
    """Calls a `TransformerBlock` (its weights, not a copy) asking for its attention weights.

    Calling the block itself with `return_attention_weights=True` inside `clone_model`'s
    `call_function` gives the right (tokens, weights) specs (`compute_output_spec`), yet the
    probe model then fails to build: "Output with path `attention_0` is not connected to
    `inputs`" (tried on all three backends, 2026-12-03). Called through this layer, whose
    output spec Keras traces, both outputs stay connected.
    """

    def __init__(self, block, **kwargs):
        super().__init__(name=f"{block.name}_with_attention", dtype=block.dtype_policy, **kwargs)
        self.block = block

    def call(self, inputs, training=None):
        return self.block(inputs, training=training, return_attention_weights=True)


def token_layout(model, image_size=None):
    """The number of prefix tokens and the patch grid of `model`'s tokens.

    Read from the model's `PositionEmbedding` layer: its stored grid, or for a model of any
    image size (`ViT(dynamic_image_size=True)`) given `image_size`, the grid of such images.

    Args:
        model: a `keras_vit` model.
        image_size: None or (height, width) of the images the tokens come from.

    Returns:
        (num_prefix_tokens, (grid_height, grid_width)).

    Example:

    >>> token_layout(keras_vit.ViT("mu/4", image_size=(16, 32), num_classes=10))
    (1, (4, 8))
    """
    for layer in model.layers:
        if isinstance(layer, PositionEmbedding):
            if layer.stride is not None and image_size is not None:
                grid = (image_size[0] // layer.stride[0], image_size[1] // layer.stride[1])
                return layer.num_prefix_tokens, grid
            return layer.num_prefix_tokens, tuple(layer.grid_size)
    raise ValueError(
        f"Model {model.name!r} has no PositionEmbedding layer, so its patch "
        f"grid is unknown"
    )


def rollout_from_weights(attention, *, head_fusion="mean", discard_ratio=0.0):
    """Attention rollout (Abnar & Zuidema, 2020) of per-block attention weights.

    [Quantifying Attention Flow in Transformers](https://arxiv.org/abs/2005.00928):
    each block's attention, fused over heads, gets the identity added (the
    residual connection carries each token on) and its rows renormalized;
    the rollout is the product over blocks, last block on the left, so that
    entry (i, j) says how much of input token j reaches output token i.

    Args:
        attention: list of arrays (B, heads, T, T), one per block, in order.
        head_fusion: str. How heads are combined: `"mean"` (the paper's),
            `"max"` or `"min"`. Defaults to `"mean"`.
        discard_ratio: float in [0, 1). Fraction of each image's smallest
            fused attention entries set to zero before the identity is added
            (a common way to sharpen maps). Defaults to 0.

    Returns:
        array (B, T, T) float64: the rollout matrices.

    Example:

    >>> uniform = np.full((1, 2, 3, 3), 1 / 3)
    >>> rollout_from_weights([uniform])[0, 0].round(3).tolist()
    [0.667, 0.167, 0.167]
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(
            f"Unknown head_fusion {head_fusion!r}: expected one of {list(HEAD_FUSIONS)}"
        )
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), received {discard_ratio!r}")
    if not attention:
        raise ValueError("attention is empty: expected one (B, heads, T, T) array per block")
    result = None
    for weights in attention:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
            raise ValueError(
                f"attention weights must have shape (B, heads, T, T), received "
                f"{weights.shape}"
            )
        fused = getattr(weights, head_fusion)(axis=1)
        batch, length, _ = fused.shape
        if discard_ratio > 0:
            flat = fused.reshape(batch, -1).copy()
            drop = int(flat.shape[1] * discard_ratio)
            smallest = np.argsort(flat, axis=1)[:, :drop]
            np.put_along_axis(flat, smallest, 0.0, axis=1)
            fused = flat.reshape(batch, length, length)
        fused = fused + np.eye(length)
        fused = fused / fused.sum(axis=-1, keepdims=True)
        result = fused if result is None else fused @ result
    return result


def attention_rollout(
    model, images, *, head_fusion="mean", discard_ratio=0.0, batch_size=32
):
    """Attention-rollout maps of `images` at image resolution (the paper's Figure 6).

    The rollout of all blocks (`rollout_from_weights`); the row of the
    [class] token over the patch tokens is the map. A model without a class
    token (`pooling="gap"`) is represented by the mean of its patch tokens,
    so the map is the mean of the rollout rows of all tokens. The patch-grid
    map is upsampled bilinearly to the image size and scaled to [0, 1] per
    image (min to 0, max to 1; a map constant up to float rounding, 1e-6
    relative, is all ones).

    Args:
        model: a `keras_vit` model.
        images: array (B, H, W, C) of the model's input size, in [-1, 1].
        head_fusion: str. `"mean"` (the paper's), `"max"` or `"min"`.
            Defaults to `"mean"`.
        discard_ratio: float in [0, 1). See `rollout_from_weights`.
            Defaults to 0.
        batch_size: int. Images per forward pass. Defaults to 32.

    Returns:
        array (B, H, W) float32 in [0, 1].

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> maps = attention_rollout(model, np.zeros((2, 16, 16, 3)))
    >>> maps.shape, float(maps.min()) >= 0.0, float(maps.max()) <= 1.0
    ((2, 16, 16), True, True)
    """
    images = _check_images(model, images)
    height, width = images.shape[1], images.shape[2]
    num_prefix, (grid_h, grid_w) = token_layout(model, (height, width))
    rows = interpolation.resize_matrix(grid_h, height, "bilinear", antialias=False)
    cols = interpolation.resize_matrix(grid_w, width, "bilinear", antialias=False)
    maps = []
    for batch in _batches(images, batch_size):
        out = intermediate_outputs(model, batch, attention=True)
        rollout = rollout_from_weights(
            out["attention"], head_fusion=head_fusion, discard_ratio=discard_ratio
        )
        if num_prefix:
            relevance = rollout[:, 0, num_prefix:]
        else:
            relevance = rollout.mean(axis=1)
        grid = relevance.reshape(-1, grid_h, grid_w)
        maps.append(np.einsum("ih,bhw,jw->bij", rows, grid, cols))
    maps = np.concatenate(maps, axis=0)
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    # Differences at rounding level are no structure: scaling them up to [0, 1] would draw
    # float noise, so such maps count as constant.
    varies = (high - low) > 1e-6 * np.abs(high)
    scaled = np.where(varies, (maps - low) / np.where(varies, high - low, 1.0), 1.0)
    return scaled.astype("float32")


def patch_embedding_components(model, n=28, *, return_variance=False):
    """Principal components of the patch-embedding filters (the paper's Figure 7, left).

    The projection kernel (P, P, C, D) holds D filters of P x P x C pixels;
    the components are the top right-singular vectors of the centred
    (D, P * P * C) filter matrix (PCA over the filters), reshaped to filters.
    Each component's sign is fixed so that its largest-magnitude entry is
    positive.

    Args:
        model: a `keras_vit` model (its `PatchEmbedding` layer is used).
        n: int. Components to return, at most min(D, P * P * C). Defaults to
            28, as in the paper.
        return_variance: bool. Also return the fraction of the variance each
            component explains. Defaults to False.

    Returns:
        array (n, P, P, C), or `(components, explained_variance_ratio (n,))`.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> patch_embedding_components(model, n=6).shape
    (6, 4, 4, 3)
    """
    layers = [layer for layer in model.layers if isinstance(layer, PatchEmbedding)]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no PatchEmbedding layer")
    kernel = _numpy(layers[0].projection.kernel, "float64")
    size_h, size_w, channels, width = kernel.shape
    filters = kernel.reshape(-1, width).T
    limit = min(filters.shape)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= limit:
        raise ValueError(
            f"n must be an integer in [1, {limit}] (min of {width} filters and "
            f"{filters.shape[1]} pixels per filter), received {n!r}"
        )
    centred = filters - filters.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:n]
    largest = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(n), largest])
    components = components * signs[:, None]
    components = components.reshape(n, size_h, size_w, channels).astype("float32")
    if return_variance:
        variance = singular**2
        return components, (variance[:n] / variance.sum()).astype("float32")
    return components


def position_embedding_similarity(model):
    """Cosine similarity of each patch's position embedding with all others (Figure 7, centre).

    Args:
        model: a `keras_vit` model (its `PositionEmbedding` layer is used; the
            prefix rows, e.g. the [class] token's, are left out).

    Returns:
        array (gh, gw, gh, gw) float32: entry [r, c, i, j] is the similarity of
        the embedding of grid position (r, c) with that of (i, j).

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> similarity = position_embedding_similarity(model)
    >>> similarity.shape, round(float(similarity[1, 2, 1, 2]), 5)
    ((4, 4, 4, 4), 1.0)
    """
    layer = None
    for candidate in model.layers:
        if isinstance(candidate, PositionEmbedding):
            layer = candidate
            break
    if layer is None:
        raise ValueError(f"Model {model.name!r} has no PositionEmbedding layer")
    grid_h, grid_w = layer.grid_size
    embeddings = _numpy(layer.embeddings, "float64")[0, layer.num_prefix_tokens :]
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    similarity = unit @ unit.T
    return similarity.reshape(grid_h, grid_w, grid_h, grid_w).astype("float32")


def similarity_by_relation(similarity):
    """Mean position-embedding similarity by how two positions relate on the grid.

    The paper observes that trained position embeddings encode the 2-D grid:
    positions in the same row or column have more similar embeddings. This
    puts a number on it.

    Args:
        similarity: array (gh, gw, gh, gw), e.g. from
            `position_embedding_similarity`.

    Returns:
        dict with the mean similarity over ordered pairs of distinct positions
        in the `"same_row"`, in the `"same_column"`, and sharing `"neither"`
        (float; NaN for a relation no pair has, e.g. rows of a 1-row grid).

    Example:

    >>> grid = np.zeros((2, 2, 2, 2)); grid[0, 0, 0, 1] = grid[0, 1, 0, 0] = 1.0
    >>> similarity_by_relation(grid)
    {'same_row': 0.5, 'same_column': 0.0, 'neither': 0.0}
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 4 or similarity.shape[:2] != similarity.shape[2:]:
        raise ValueError(
            f"similarity must have shape (gh, gw, gh, gw), received {similarity.shape}"
        )
    grid_h, grid_w = similarity.shape[:2]
    r, c, i, j = np.meshgrid(
        np.arange(grid_h), np.arange(grid_w), np.arange(grid_h), np.arange(grid_w),
        indexing="ij",
    )
    same_row, same_col = r == i, c == j
    masks = {
        "same_row": same_row & ~same_col,
        "same_column": same_col & ~same_row,
        "neither": ~same_row & ~same_col,
    }
    return {
        key: float(similarity[mask].mean()) if mask.any() else float("nan")
        for key, mask in masks.items()
    }


def mean_attention_distance(model, images, *, batch_size=32):
    """Mean attention distance per block and head, in pixels (the paper's Figure 7, right).

    For each query patch, the distance in image pixels from its centre to
    every key patch's centre, averaged with the query's attention weights
    over the patch tokens (renormalized to sum to 1 over them: attention to
    the [class] token has no location); then the mean over query patches and
    images. The analogue of a CNN's receptive-field size.

    Args:
        model: a `keras_vit` model.
        images: array (B, H, W, C) of the model's input size, in [-1, 1]. The
            paper uses 128 images.
        batch_size: int. Images per forward pass. Defaults to 32.

    Returns:
        array (depth, heads) float32, in pixels.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> mean_attention_distance(model, np.zeros((2, 16, 16, 3))).shape
    (1, 2)
    """
    num_prefix, grid = token_layout(model)
    images = _check_images(model, images)
    distances = patch_distances(grid, (images.shape[1], images.shape[2]))
    total, count = None, 0
    for batch in _batches(images, batch_size):
        out = intermediate_outputs(model, batch, attention=True)
        per_block = []
        for weights in out["attention"]:
            patches = weights[:, :, num_prefix:, num_prefix:].astype("float64")
            patches = patches / patches.sum(axis=-1, keepdims=True)
            # (B, heads, queries): each query's weighted mean distance.
            per_query = np.einsum("bhqk,qk->bhq", patches, distances)
            per_block.append(per_query.sum(axis=(0, 2)))
        per_block = np.stack(per_block)
        total = per_block if total is None else total + per_block
        count += batch.shape[0] * distances.shape[0]
    return (total / count).astype("float32")


def patch_distances(grid, image_size):
    """Pixel distances between the centres of the patches of a grid.

    Args:
        grid: (gh, gw) patches.
        image_size: (H, W) pixels; each patch covers H / gh x W / gw pixels.

    Returns:
        array (gh * gw, gh * gw) float64, patches in row-major order.

    Example:

    >>> patch_distances((1, 2), (4, 8)).tolist()
    [[0.0, 4.0], [4.0, 0.0]]
    """
    (grid_h, grid_w), (height, width) = grid, image_size
    ys = (np.arange(grid_h) + 0.5) * height / grid_h
    xs = (np.arange(grid_w) + 0.5) * width / grid_w
    y, x = np.meshgrid(ys, xs, indexing="ij")
    points = np.stack([y.ravel(), x.ravel()], axis=-1)
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


# -- Plots --------------------------------------------------------------------------------


def plot_attention_rollout(images, maps, path, *, cell_inches=2.0, dpi=100, titles=None):
    """Writes a PNG with one row per image: the image, its map, and their overlay.

    Args:
        images: array (B, H, W, C), C 1 or 3, in [-1, 1] (the model's input).
        maps: array (B, H, W) in [0, 1], e.g. from `attention_rollout`.
        path: str. PNG file to write.
        cell_inches: float. Side of each panel. Defaults to 2.
        dpi: int. Defaults to 100: the PNG is `3 * cell_inches * dpi` pixels
            wide and `B * cell_inches * dpi` high.
        titles: list of B str or None: a label per row. Defaults to None.

    Returns:
        str: `path`.
    """
    images, maps = np.asarray(images), np.asarray(maps)
    if images.ndim != 4 or maps.shape != images.shape[:3]:
        raise ValueError(
            f"Expected images (B, H, W, C) and maps (B, H, W) of the same size, "
            f"received {images.shape} and {maps.shape}"
        )
    figure = _figure(3 * cell_inches, len(images) * cell_inches)
    axes = figure.subplots(len(images), 3, squeeze=False)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.05,
                           hspace=0.15)
    for row, (image, heat) in enumerate(zip(images, maps)):
        shown, cmap = _displayable(image)
        axes[row, 0].imshow(shown, cmap=cmap, vmin=0, vmax=1)
        axes[row, 1].imshow(heat, cmap="inferno", vmin=0, vmax=1)
        axes[row, 2].imshow(shown, cmap=cmap, vmin=0, vmax=1)
        axes[row, 2].imshow(heat, cmap="jet", vmin=0, vmax=1, alpha=0.5)
        if titles is not None:
            axes[row, 0].set_ylabel(str(titles[row]))
    for axis, title in zip(axes[0], ("image", "attention rollout", "overlay")):
        axis.set_title(title, fontsize=9)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    return _save(figure, path, dpi)


def plot_patch_embedding_filters(components, path, *, columns=7, cell_inches=1.0, dpi=100):
    """Writes a PNG grid of patch-embedding filters (the paper's Figure 7, left).

    Each filter is scaled to [0, 1] on its own; RGB filters are shown in
    colour, 1-channel filters in grey.

    Args:
        components: array (n, P, P, C), C 1 or 3, e.g. from
            `patch_embedding_components`.
        path: str. PNG file to write.
        columns: int. Filters per row. Defaults to 7 (4 rows of 28).
        cell_inches: float. Side of each filter. Defaults to 1.
        dpi: int. Defaults to 100: the PNG is `columns * cell_inches * dpi`
            pixels wide and `ceil(n / columns) * cell_inches * dpi` high.

    Returns:
        str: `path`.
    """
    components = np.asarray(components, dtype=np.float64)
    if components.ndim != 4 or components.shape[-1] not in (1, 3):
        raise ValueError(
            f"Expected filters (n, P, P, C) with C 1 or 3 to draw as images, "
            f"received shape {components.shape}"
        )
    count = components.shape[0]
    rows = -(-count // columns)
    figure = _figure(columns * cell_inches, rows * cell_inches)
    axes = figure.subplots(rows, columns, squeeze=False)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.08,
                           hspace=0.08)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index >= count:
            continue
        component = components[index]
        low, high = component.min(), component.max()
        component = (component - low) / (high - low) if high > low else component * 0
        if component.shape[-1] == 1:
            axis.imshow(component[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            axis.imshow(component)
    return _save(figure, path, dpi)


def plot_position_embedding_similarity(similarity, path, *, cell_inches=0.5, dpi=100):
    """Writes the paper's Figure 7 (centre) layout: one small tile per grid position.

    The tile at row r, column c shows, over the whole grid, the cosine
    similarity of position (r, c)'s embedding with every position's.

    Args:
        similarity: array (gh, gw, gh, gw), e.g. from
            `position_embedding_similarity`.
        path: str. PNG file to write.
        cell_inches: float. Side of each tile. Defaults to 0.5.
        dpi: int. Defaults to 100: the PNG is `(gw * cell_inches + 2) * dpi`
            pixels wide (room for labels and the colour bar) and
            `(gh * cell_inches + 1) * dpi` high.

    Returns:
        str: `path`.
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 4 or similarity.shape[:2] != similarity.shape[2:]:
        raise ValueError(
            f"similarity must have shape (gh, gw, gh, gw), received {similarity.shape}"
        )
    grid_h, grid_w = similarity.shape[:2]
    width, height = grid_w * cell_inches + 2.0, grid_h * cell_inches + 1.0
    figure = _figure(width, height)
    left, bottom = 0.6 / width, 0.5 / height
    right, top = left + grid_w * cell_inches / width, bottom + grid_h * cell_inches / height
    axes = figure.subplots(grid_h, grid_w, squeeze=False)
    figure.subplots_adjust(left=left, right=right, bottom=bottom, top=top, wspace=0.1,
                           hspace=0.1)
    image = None
    for r in range(grid_h):
        for c in range(grid_w):
            axis = axes[r, c]
            image = axis.imshow(similarity[r, c], cmap="viridis", vmin=-1, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(str(r + 1), fontsize=6, rotation=0, labelpad=6)
            if r == grid_h - 1:
                axis.set_xlabel(str(c + 1), fontsize=6)
    figure.text((left + right) / 2, 0.1 / height, "Input patch column", ha="center",
                fontsize=8)
    figure.text(0.1 / width, (bottom + top) / 2, "Input patch row", va="center",
                rotation="vertical", fontsize=8)
    bar = figure.add_axes([right + 0.3 / width, bottom, 0.15 / width, top - bottom])
    figure.colorbar(image, cax=bar).set_label("Cosine similarity", fontsize=8)
    bar.tick_params(labelsize=6)
    return _save(figure, path, dpi)


def plot_mean_attention_distance(distances, path, *, image_size=None, width_inches=5.0,
                                 height_inches=4.0, dpi=100):
    """Writes the paper's Figure 7 (right): mean attention distance of each head against depth.

    Args:
        distances: array (depth, heads), e.g. from `mean_attention_distance`.
        path: str. PNG file to write.
        image_size: int or None. When given, the y axis runs from 0 to
            `image_size` pixels, as in the paper, so that plots of different
            models compare. Defaults to None (matplotlib's limits).
        width_inches, height_inches: float. Figure size. Defaults to 5 x 4.
        dpi: int. Defaults to 100.

    Returns:
        str: `path`.
    """
    distances = np.asarray(distances)
    if distances.ndim != 2:
        raise ValueError(f"distances must have shape (depth, heads), received {distances.shape}")
    depth, heads = distances.shape
    figure = _figure(width_inches, height_inches)
    axis = figure.subplots()
    figure.subplots_adjust(left=0.14, right=0.78, bottom=0.13, top=0.95)
    layers = np.arange(1, depth + 1)
    for head in range(heads):
        axis.scatter(layers, distances[:, head], s=14, label=f"Head {head + 1}")
    axis.set_xlabel("Network depth (layer)")
    axis.set_ylabel("Mean attention distance (pixels)")
    axis.set_xticks(layers if depth <= 12 else layers[:: max(depth // 12, 1)])
    if image_size is not None:
        axis.set_ylim(0, image_size)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return _save(figure, path, dpi)


# -- Helpers ------------------------------------------------------------------------------


def _numpy(value, dtype=None):
    array = ops.convert_to_numpy(value)
    return array.astype(dtype) if dtype is not None else array


def _block_indices(model, blocks, requested):
    depth = len(blocks)
    if requested is None:
        return list(range(depth))
    if isinstance(requested, int):
        requested = [requested]
    indices = []
    for index in requested:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not (
            -depth <= index < depth
        ):
            raise ValueError(
                f"Block index {index!r} is out of range: model {model.name!r} has "
                f"{depth} TransformerBlock(s), valid indices are 0..{depth - 1} "
                f"(or -{depth}..-1)"
            )
        indices.append(int(index) % depth)
    return indices


def _check_images(model, images):
    expected = tuple(model.inputs[0].shape)
    shape = tuple(getattr(images, "shape", np.shape(images)))
    fits = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected[1:], shape[1:])
    )
    if not fits:
        raise ValueError(
            f"Images of shape {shape} do not fit model {model.name!r}, which takes "
            f"{expected} (batch, height, width, channels); resize them to the "
            f"model's input size first"
        )
    return ops.convert_to_tensor(images, dtype=model.inputs[0].dtype)


def _batches(images, batch_size):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
    total = images.shape[0]
    for start in range(0, total, batch_size):
        yield images[start : start + batch_size]


def _head_layer(model):
    return model_layers.find_layer(model, "head")


def _is_functional(model):
    # A Functional model: a keras.Model built from inputs and outputs, which `clone_model` can
    # rerun with other calls. Sequential models have inputs too, but clone_model takes no
    # call_function for them; subclassed models have none.
    return (
        isinstance(model, keras.Model)
        and not isinstance(model, keras.Sequential)
        and hasattr(model, "inputs")
        and hasattr(model, "outputs")
    )


def _displayable(image):
    image = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    if image.shape[-1] == 1:
        return image[..., 0], "gray"
    if image.shape[-1] == 3:
        return image, None
    raise ValueError(
        f"Images with {image.shape[-1]} channels cannot be drawn; expected 1 or 3"
    )


def _figure(width_inches, height_inches):
    # A bare Figure renders through Agg without pyplot: no global backend
    # switch, no window, safe in notebooks and on headless machines.
    from matplotlib.figure import Figure

    return Figure(figsize=(width_inches, height_inches))


def _save(figure, path, dpi):
    path = os.fspath(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path
