"""The paper's transfer recipe: position embeddings for a new grid, and a new head.

Section 3.2 of [the ViT paper](https://arxiv.org/abs/2010.11929): to fine-tune,
the pre-trained prediction head is replaced by a zero-initialized D x K layer,
and at a higher resolution (same patch size, longer sequence) the pre-trained
position embeddings are resized by 2-D interpolation according to their
location in the image.
"""

import math

import numpy as np
from keras import ops

from keras_vit import interpolation as interp
from keras_vit.layers.position_embedding import normalize_grid


def resize_position_embeddings(
    posemb,
    new_grid,
    *,
    num_prefix_tokens=1,
    old_grid=None,
    method="bicubic",
    antialias=True,
):
    """Resizes position embeddings to another patch grid.

    The first `num_prefix_tokens` rows (the [class] token's) are copied
    unchanged; the other rows are taken as a row-major `old_grid` of
    D-vectors, resized in 2-D and flattened back in row-major order.

    The interpolation is `keras_vit.interpolation.resize_token_grid`, the
    function a `PositionEmbedding` layer uses when called on another grid, so
    both give the same numbers: float32 arithmetic whatever the input dtype,
    half-pixel centres (`align_corners=False`) for both methods, weights
    renormalized at the edges, and with `antialias=True` a widened kernel
    when shrinking; this is exactly `jax.image.resize` ("linear" / "cubic",
    Keys a = -0.5), identical on every Keras backend.

    Args:
        posemb: array of shape (1, prefix + gh * gw, D) or
            (prefix + gh * gw, D) (NumPy or a backend tensor).
        new_grid: int or (height, width). The target patch grid.
        num_prefix_tokens: int. Leading rows that belong to no grid cell
            (1 for the [class] token, 0 for mean-pooled models). Defaults
            to 1.
        old_grid: None, int or (height, width). The grid `posemb` holds;
            None infers a square grid from the length. Defaults to None.
        method: str. `"bicubic"` or `"bilinear"`. Defaults to `"bicubic"`.
        antialias: bool. Widen the kernel when shrinking. Defaults to True.

    Returns:
        A NumPy array of the input's rank and dtype holding
        prefix + new_h * new_w rows. When the grid does not change, the
        input itself (as a NumPy array), bit for bit.

    Raises:
        ValueError: if the shape is not (1, L, D) or (L, D), if the length
            fits no grid with `num_prefix_tokens` prefix rows, or if an
            argument is malformed.

    Example:

    >>> posemb = np.random.normal(size=(1, 1 + 4 * 4, 8)).astype("float32")
    >>> resize_position_embeddings(posemb, (6, 8)).shape
    (1, 49, 8)
    """
    posemb = np.asarray(ops.convert_to_numpy(posemb))
    if posemb.ndim not in (2, 3) or (posemb.ndim == 3 and posemb.shape[0] != 1):
        raise ValueError(
            f"posemb must have shape (1, length, width) or (length, width), "
            f"received shape {posemb.shape}"
        )
    if (
        not isinstance(num_prefix_tokens, int)
        or isinstance(num_prefix_tokens, bool)
        or num_prefix_tokens < 0
    ):
        raise ValueError(
            f"num_prefix_tokens must be a non-negative integer, received "
            f"{num_prefix_tokens!r}"
        )
    interp.check_method(method)
    new_grid = normalize_grid(new_grid, name="new_grid")
    length = posemb.shape[-2]
    old_grid = grid_of_length(length, num_prefix_tokens, old_grid)
    if old_grid == new_grid:
        return posemb

    squeeze = posemb.ndim == 2
    batched = posemb[None] if squeeze else posemb
    grid = interp.resize_token_grid(
        batched[:, num_prefix_tokens:],
        old_grid,
        new_grid,
        method=method,
        antialias=antialias,
    )
    grid = ops.convert_to_numpy(grid).astype(posemb.dtype)
    out = np.concatenate([batched[:, :num_prefix_tokens], grid], axis=1)
    return out[0] if squeeze else out


def grid_of_length(length, num_prefix_tokens, grid=None):
    """The (height, width) patch grid of a sequence of `length` embeddings.

    Args:
        length: int. Rows of the position embeddings.
        num_prefix_tokens: int. Rows before the grid.
        grid: None, int or (height, width). With None a square grid is
            inferred; otherwise it is checked against `length`.

    Returns:
        A (height, width) tuple.

    Raises:
        ValueError: if the length holds no such grid.
    """
    num_patches = length - num_prefix_tokens
    if grid is not None:
        grid = normalize_grid(grid, name="old_grid")
        if grid[0] * grid[1] != num_patches:
            raise ValueError(
                f"Position embeddings of length {length} with "
                f"{num_prefix_tokens} prefix tokens hold {num_patches} grid "
                f"positions, but old_grid {grid} has {grid[0] * grid[1]}"
            )
        return grid
    side = math.isqrt(max(num_patches, 0))
    if num_patches <= 0 or side * side != num_patches:
        raise ValueError(
            f"Position embeddings of length {length} with {num_prefix_tokens} "
            f"prefix tokens hold {num_patches} grid positions, which is not a "
            f"square grid: pass old_grid=(height, width), or check "
            f"num_prefix_tokens (1 with a [class] token, 0 without)"
        )
    return (side, side)
