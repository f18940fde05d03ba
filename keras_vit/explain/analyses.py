"""The paper's analyses of a trained ViT (Section 4.5, Appendix D.7), as NumPy arrays.

- `attention_rollout` (Figure 6; `rollout_from_weights` on given weights): which parts of the
  image the representation attends to.
- `patch_embedding_components` (Figure 7, left): principal components of the patch-embedding
  filters.
- `position_embedding_similarity` (Figure 7, centre) and `similarity_by_relation`: how the
  position embeddings encode the 2-D grid.
- `mean_attention_distance` (Figure 7, right; `patch_distances`): how far each head looks.

The ones that need attention weights get them from `probe.intermediate_outputs`.
"""

import numpy as np

from keras_vit import interpolation, model_layers
from keras_vit.explain.probe import _check_images, _numpy, intermediate_outputs, token_layout
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.position_embedding import PositionEmbedding

__all__ = [
    "HEAD_FUSIONS",
    "attention_rollout",
    "mean_attention_distance",
    "patch_distances",
    "patch_embedding_components",
    "position_embedding_similarity",
    "rollout_from_weights",
    "similarity_by_relation",
]

HEAD_FUSIONS = ("mean", "max", "min")


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

    The rollout of all blocks (`rollout_from_weights`); the map is, over the
    patch tokens only, the rollout row of the token(s) the model's
    representation is read from:

    - a model with a [class] token (`pooling="token"`): the [class] token's
      row; with DeiT's `pooling="distilled"`, the mean of the [class] and
      distillation tokens' rows (the representation is the pair);
    - a model without one (`pooling="gap"`, and SigLIP's `pooling="map"`): the
      mean of the patch tokens' rows, the representation of "gap" pooling.
      A "map" model's attention probe weighs the tokens itself; its weights
      are not part of this map, which says where the patch tokens as a whole
      draw from.

    Tokens before the patches that are not read (a distillation token under
    "token" pooling, register tokens) pass attention on like any token but
    get no place on the map. The patch-grid map is upsampled bilinearly to
    the image size and scaled to [0, 1] per image (min to 0, max to 1; a map
    constant up to float rounding, 1e-6 relative, is all ones).

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
    read = _represented_tokens(model)
    up_rows = interpolation.resize_matrix(grid_h, height, "bilinear", antialias=False)
    up_cols = interpolation.resize_matrix(grid_w, width, "bilinear", antialias=False)
    maps = []
    for batch in _batches(images, batch_size):
        out = intermediate_outputs(model, batch, attention=True)
        rollout = rollout_from_weights(
            out["attention"], head_fusion=head_fusion, discard_ratio=discard_ratio
        )
        rows = rollout[:, read] if read is not None else rollout[:, num_prefix:]
        grid = rows[:, :, num_prefix:].mean(axis=1).reshape(-1, grid_h, grid_w)
        maps.append(np.einsum("ih,bhw,jw->bij", up_rows, grid, up_cols))
    maps = np.concatenate(maps, axis=0)
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    # Differences at rounding level are no structure: scaling them up to [0, 1] would draw
    # float noise, so such maps count as constant.
    varies = (high - low) > 1e-6 * np.abs(high)
    scaled = np.where(varies, (maps - low) / np.where(varies, high - low, 1.0), 1.0)
    return scaled.astype("float32")


def _represented_tokens(model):
    """The rollout rows `attention_rollout` reads: a slice, or None for the patch tokens' mean."""
    prefix = model_layers.token_prefix(model)
    if not prefix.class_token:
        return None
    pooling = model_layers.find_layer(model, "pooling")
    if prefix.distillation_token and getattr(pooling, "pooling", None) == "distilled":
        return slice(0, 2)
    return slice(0, 1)


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
    the [class], distillation and register tokens has no location); then
    the mean over query patches and images. The analogue of a CNN's
    receptive-field size.

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
    images = _check_images(model, images)
    # The images' own grid: a model of any image size (`dynamic_image_size`) has one per size.
    num_prefix, grid = token_layout(model, (images.shape[1], images.shape[2]))
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


def _batches(images, batch_size):
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
    total = images.shape[0]
    for start in range(0, total, batch_size):
        yield images[start : start + batch_size]
