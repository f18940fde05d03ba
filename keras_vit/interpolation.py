"""Backend-independent 2-D interpolation of token grids.

Position embeddings are resized when a model runs on, or is fine-tuned at,
another resolution (Section 3.2 of the ViT paper). `keras.ops.image.resize`
is not the same function on every backend (PyTorch's bicubic uses a = -0.75,
TensorFlow and JAX a = -0.5; JAX always antialiases when downsampling), so a
model would give different numbers on each. Instead, each axis is resampled
by a small interpolation matrix computed here in NumPy (float64, then
float32) and applied with one `keras.ops.einsum`: the same numbers on every
backend.

Convention, for the first two methods: half-pixel centres (output sample i sits at
input coordinate (i + 0.5) * in / out - 0.5, the convention of
`tf.image.resize`, `jax.image.resize` and PyTorch's `align_corners=False`),
the weights of each output sample normalized to sum to one (so edges are
handled by renormalizing over the samples inside the grid), and, with
`antialias=True`, the kernel stretched by in / out when downsampling. This
is exactly `jax.image.resize` (`"linear"` / `"cubic"`, Keys' cubic kernel
with a = -0.5), which big_vision uses to resample position embeddings, and
PyTorch's `F.interpolate(mode="bicubic", antialias=True)`.

A third method, `"pytorch_bicubic"`, is PyTorch's `F.interpolate(mode="bicubic",
align_corners=False)` without antialiasing, the function transformers' DINOv2
(`Dinov2Model.interpolate_pos_encoding`) resizes its position embeddings with:
Keys' kernel with a = -0.75, the four taps around each source coordinate
clamped into the grid (the edge samples repeated, weights not renormalized),
and never widened (`antialias` does not apply).
"""

import functools

import numpy as np
from keras import ops

from keras_vit.validation import check_choice

METHODS = ("bilinear", "bicubic", "pytorch_bicubic")


def _linear_kernel(x):
    return np.maximum(0.0, 1.0 - np.abs(x))


def _keys_cubic_kernel(x):
    # Keys (1981) cubic convolution with a = -0.5.
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_KERNELS = {"bilinear": _linear_kernel, "bicubic": _keys_cubic_kernel}


def _pytorch_cubic_weights(t):
    """The weights of taps floor - 1 .. floor + 2 for fractions `t`: Keys' kernel, a = -0.75."""
    a = -0.75

    def near(x):
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


def _pytorch_bicubic_matrix(in_size, out_size):
    # PyTorch's source coordinate for bicubic is not clamped; its taps are.
    source = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(source)
    weights = np.zeros((out_size, in_size))
    for offset, weight in zip((-1, 0, 1, 2), _pytorch_cubic_weights(source - floor)):
        taps = np.clip(floor + offset, 0, in_size - 1).astype(int)
        np.add.at(weights, (np.arange(out_size), taps), weight)
    return weights


def check_method(method):
    check_choice("interpolation method", method, METHODS)


@functools.lru_cache(maxsize=256)
def resize_matrix(in_size, out_size, method="bicubic", antialias=True):
    """The (out_size, in_size) float32 matrix that resamples one axis.

    Args:
        in_size: int. Number of input samples.
        out_size: int. Number of output samples.
        method: str. `"bilinear"`, `"bicubic"` or `"pytorch_bicubic"`. Defaults
            to `"bicubic"`.
        antialias: bool. Stretch the kernel when downsampling (not for
            `"pytorch_bicubic"`). Defaults to True.

    Returns:
        A read-only NumPy float32 array whose rows sum to one.
    """
    check_method(method)
    if in_size <= 0 or out_size <= 0:
        raise ValueError(
            f"Grid sizes must be positive, received in_size={in_size}, "
            f"out_size={out_size}"
        )
    if method == "pytorch_bicubic":
        weights = _pytorch_bicubic_matrix(in_size, out_size)
    else:
        scale = out_size / in_size
        kernel_scale = min(scale, 1.0) if antialias else 1.0
        source = (np.arange(out_size, dtype=np.float64) + 0.5) / scale - 0.5
        offsets = np.arange(in_size, dtype=np.float64)[None, :] - source[:, None]
        weights = _KERNELS[method](offsets * kernel_scale)
        weights /= weights.sum(axis=1, keepdims=True)
    matrix = weights.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def _is_static(size):
    return isinstance(size, (int, np.integer)) and not isinstance(size, bool)


def resize_matrix_tensor(in_size, out_size, method="bicubic", antialias=True):
    """`resize_matrix` for an `out_size` that may be a symbolic scalar tensor.

    A static `out_size` (a Python int: always on JAX and PyTorch, and on TensorFlow when the
    shape is known) gives `resize_matrix`'s cached array. A symbolic one (TensorFlow tracing
    images of unknown size) computes the same formula with `keras.ops` in float64, then casts
    to float32: the same numbers as `resize_matrix` within float32 rounding.

    Args:
        in_size: int. Number of input samples (the stored grid: always static).
        out_size: int or scalar integer tensor. Number of output samples.
        method, antialias: as for `resize_matrix`.

    Returns:
        An (out_size, in_size) float32 array or tensor.
    """
    if _is_static(out_size):
        return ops.convert_to_tensor(resize_matrix(in_size, int(out_size), method, antialias))
    check_method(method)
    if method == "pytorch_bicubic":
        source = ((ops.cast(ops.arange(out_size), "float64") + 0.5)
                  * (float(in_size) / ops.cast(out_size, "float64")) - 0.5)
        floor = ops.floor(source)
        columns = ops.arange(in_size, dtype="float64")[None, :]
        weights = 0.0
        for offset, weight in zip((-1, 0, 1, 2), _pytorch_cubic_weights(source - floor)):
            taps = ops.clip(floor + offset, 0.0, float(in_size - 1))
            weights = weights + weight[:, None] * ops.cast(
                ops.equal(taps[:, None], columns), "float64")
        return ops.cast(weights, "float32")
    out_float = ops.cast(out_size, "float64")
    scale = out_float / float(in_size)
    source = (ops.cast(ops.arange(out_size), "float64") + 0.5) / scale - 0.5
    offsets = ops.arange(in_size, dtype="float64")[None, :] - source[:, None]
    if antialias:
        offsets = offsets * ops.minimum(scale, 1.0)
    magnitude = ops.abs(offsets)
    if method == "bilinear":
        weights = ops.maximum(0.0, 1.0 - magnitude)
    else:
        near = ((1.5 * magnitude - 2.5) * magnitude) * magnitude + 1.0
        far = ((-0.5 * magnitude + 2.5) * magnitude - 4.0) * magnitude + 2.0
        weights = ops.where(magnitude < 1.0, near, ops.where(magnitude < 2.0, far, 0.0))
    weights = weights / ops.sum(weights, axis=1, keepdims=True)
    return ops.cast(weights, "float32")


def resize_token_grid(tokens, old_grid, new_grid, method="bicubic", antialias=True):
    """Resizes row-major grid tokens (B, gh * gw, D) to (B, nh * nw, D).

    The computation is done in float32 whatever the input dtype, and the
    result is returned in float32.

    Args:
        tokens: tensor of shape (B, gh * gw, D).
        old_grid: (gh, gw) ints.
        new_grid: (nh, nw) ints, or scalar tensors when the grid is only known when the
            function runs (TensorFlow tracing images of unknown size).
        method: str. `"bilinear"`, `"bicubic"` or `"pytorch_bicubic"`.
        antialias: bool. See `resize_matrix`.

    Returns:
        A float32 tensor of shape (B, nh * nw, D).
    """
    (old_h, old_w), (new_h, new_w) = tuple(old_grid), tuple(new_grid)
    rows = resize_matrix_tensor(old_h, new_h, method, antialias)
    cols = resize_matrix_tensor(old_w, new_w, method, antialias)
    tokens = ops.cast(tokens, "float32")
    width = ops.shape(tokens)[-1]
    grid = ops.reshape(tokens, (-1, old_h, old_w, width))
    grid = ops.einsum("ih,bhwd,jw->bijd", rows, grid, cols)
    return ops.reshape(grid, (-1, new_h * new_w, width))
