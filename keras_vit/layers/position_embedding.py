"""Learnable 1-D position embeddings that resize to any patch grid."""

import math

import keras
from keras import ops

from keras_vit import interpolation as interp
from keras_vit.layers.block_kernels import checked_quotient
from keras_vit.validation import check_int, known_width


def normalize_grid(grid_size, name="grid_size"):
    """Returns `grid_size` (an int or a pair) as a tuple of two positive ints."""
    if isinstance(grid_size, int) and not isinstance(grid_size, bool):
        grid_size = (grid_size, grid_size)
    try:
        height, width = (int(v) for v in grid_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be an int or a pair of ints (height, width), "
            f"received {grid_size!r}"
        ) from None
    if height <= 0 or width <= 0 or (height, width) != tuple(grid_size):
        raise ValueError(
            f"{name} must hold positive integers, received {grid_size!r}"
        )
    return (height, width)


def grid_of_length(length, num_prefix_tokens, grid=None):
    """The (height, width) patch grid of a sequence of `length` embeddings.

    The one rule for the grid a token count holds: `grid` when given
    (checked against `length`), else a square grid.

    Args:
        length: int. Rows of the position embeddings (or tokens).
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
            f"square grid: give the grid's (height, width), or check "
            f"num_prefix_tokens (1 with a [class] token, 0 without)"
        )
    return (side, side)


def patch_grid(image_size, stride, *, requirement):
    """The (height, width) patch grid of `image_size` images cut with `stride`.

    The one rule for which image sizes a ViT takes: both sides divisible by
    the patch size (a hybrid's feature-map stride).

    Args:
        image_size: int or (height, width).
        stride: int or (height, width). Pixels per patch along each axis.
        requirement: str. What the error says a side must be, e.g.
            `"divisible by patch_size 16 of variant 'B/16'"`.

    Returns:
        A (height, width) tuple of patches.

    Raises:
        ValueError: a malformed size, or a side not divisible by the stride.
    """
    size = normalize_grid(image_size, name="image_size")
    stride = normalize_grid(stride, name="stride")
    for axis, value, step in zip(("height", "width"), size, stride):
        if value % step != 0:
            raise ValueError(
                f"image_size {image_size!r}: {axis} {value} is not {requirement}"
            )
    return (size[0] // stride[0], size[1] // stride[1])


@keras.saving.register_keras_serializable(package="keras_vit")
class PositionEmbedding(keras.layers.Layer):
    """Adds learnable 1-D position embeddings to a token sequence.

    Section 3.1 of [the ViT paper](https://arxiv.org/abs/2010.11929): one
    learned D-vector per position, the first `num_prefix_tokens` rows for
    the prefix tokens (the [class] token) and then one row per patch of a
    `grid_size` patch grid in row-major order.

    When called on a sequence for another grid, the grid rows are resized by
    2-D interpolation on the fly (the paper's recipe for fine-tuning at a
    higher resolution, Section 3.2), in float32, identically on every
    backend (see `keras_vit.interpolation`); the prefix rows are never
    interpolated. The stored weights keep their built shape.

    Args:
        grid_size: int or (height, width). The patch grid the embeddings are
            learned for.
        num_prefix_tokens: int. Tokens before the grid (1 for the [class]
            token, 0 with global average pooling). Defaults to 1.
        initializer: initializer of the (1, prefix + h * w, D) embeddings.
            Defaults to a normal distribution with stddev 0.02, as in the
            reference implementation.
        interpolation: str. `"bicubic"`, `"bilinear"` or `"pytorch_bicubic"`
            (PyTorch's non-antialiased bicubic, as transformers' DINOv2
            resizes; `keras_vit.interpolation`), used when the grid differs.
            Defaults to `"bicubic"`.
        antialias: bool. Widen the kernel when shrinking the grid. Defaults
            to True.
        stride: None, int or (height, width). Pixels per patch of the
            `images` call argument (the patch size; a hybrid's feature-map
            stride): with it, the grid of each call is read from the images'
            shape, known or not (a model that takes images of any size).
            Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tokens (B, num_prefix_tokens + h * w, D).
        grid_size: optional (h, w) of the tokens' grid. When omitted it is
            the built grid if the length matches, otherwise the square grid
            the length implies.
        images: optional (B, H, W, C) tensor the tokens were cut from (needs
            `stride`): the grid is (H / stride, W / stride), also when H and
            W are only known when the call runs (TensorFlow tracing images
            of unknown size). Sides not divisible by the stride raise a
            ValueError (an InvalidArgumentError naming them when traced).

    Returns:
        Tokens of the same shape with the position embeddings added.

    Example:

    >>> layer = PositionEmbedding(grid_size=(4, 4))
    >>> tuple(layer(np.zeros((2, 17, 32))).shape)
    (2, 17, 32)
    >>> tuple(layer(np.zeros((2, 37, 32))).shape)  # a 6x6 grid, resized
    (2, 37, 32)
    """

    def __init__(
        self,
        grid_size,
        num_prefix_tokens=1,
        initializer=None,
        interpolation="bicubic",
        antialias=True,
        stride=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.grid_size = normalize_grid(grid_size)
        self.stride = None if stride is None else normalize_grid(stride, name="stride")
        check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        interp.check_method(interpolation)
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.02)
        )
        self.interpolation = interpolation
        self.antialias = bool(antialias)

    @property
    def sequence_length(self):
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def build(self, input_shape):
        hidden_dim = known_width(input_shape)
        self.embeddings = self.add_weight(
            shape=(1, self.sequence_length, hidden_dim),
            initializer=self.initializer,
            name="embeddings",
        )

    def grid_for_length(self, length):
        """The patch grid a sequence of `length` tokens is taken to hold."""
        if length == self.sequence_length:
            return self.grid_size
        try:
            return grid_of_length(length, self.num_prefix_tokens)
        except ValueError as error:
            raise ValueError(
                f"{self.name}: cannot infer the patch grid of a sequence of "
                f"{length} tokens (built for {self.grid_size}): {error} "
                f"(the call's grid_size argument)"
            ) from None

    def embeddings_for_grid(self, grid_size):
        """The (1, prefix + h * w, D) embeddings for a `grid_size` grid.

        The built weights unchanged for the built grid; otherwise their grid
        rows resized in float32 (and returned in float32).
        """
        if all(isinstance(side, int) for side in grid_size):
            grid_size = normalize_grid(grid_size)
            if grid_size == self.grid_size:
                return self.embeddings
        # A grid known only when the call runs is resized too: to the built grid, the
        # interpolation matrices are the identity, so the numbers are the weights'.
        prefix = self.embeddings[:, : self.num_prefix_tokens]
        grid = interp.resize_token_grid(
            self.embeddings[:, self.num_prefix_tokens :],
            self.grid_size,
            grid_size,
            method=self.interpolation,
            antialias=self.antialias,
        )
        return ops.concatenate([ops.cast(prefix, "float32"), grid], axis=1)

    def grid_of_images(self, images):
        """The (h, w) patch grid of `images` (ints, or scalar tensors when unknown)."""
        if self.stride is None:
            raise ValueError(
                f"{self.name}: the images argument needs the layer's stride (the "
                f"patch size), which is None"
            )
        shape = ops.shape(images)
        grid = []
        for axis, side, step in zip(("height", "width"), shape[1:3], self.stride):
            if isinstance(side, int):
                if side % step:
                    raise ValueError(
                        f"Image {axis} {side} (input shape {tuple(images.shape)}) is "
                        f"not divisible by {step}, the patch size (a hybrid's "
                        f"feature-map stride)"
                    )
                grid.append(side // step)
            else:
                # Only TensorFlow traces with unknown sides (JAX and PyTorch always see
                # concrete shapes); the check then runs with the function.
                grid.append(checked_quotient(
                    side, step,
                    message=f"Image {axis} is not divisible by {step}, the patch size (a "
                    f"hybrid's feature-map stride)"))
        return tuple(grid)

    def call(self, inputs, grid_size=None, images=None):
        if images is not None:
            grid_size = self.grid_of_images(images)
            if not all(isinstance(side, int) for side in grid_size):
                return inputs + ops.cast(self.embeddings_for_grid(grid_size), inputs.dtype)
        length = inputs.shape[1]
        if grid_size is None:
            grid_size = (
                self.grid_size if length is None else self.grid_for_length(length)
            )
        grid_size = normalize_grid(grid_size)
        expected = self.num_prefix_tokens + grid_size[0] * grid_size[1]
        if length is not None and length != expected:
            raise ValueError(
                f"{self.name}: a {grid_size} grid with "
                f"{self.num_prefix_tokens} prefix tokens needs {expected} "
                f"tokens, received input shape {tuple(inputs.shape)}"
            )
        embeddings = self.embeddings_for_grid(grid_size)
        return inputs + ops.cast(embeddings, inputs.dtype)

    def compute_output_shape(self, inputs_shape, images_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "grid_size": list(self.grid_size),
                "num_prefix_tokens": self.num_prefix_tokens,
                "initializer": keras.initializers.serialize(self.initializer),
                "interpolation": self.interpolation,
                "antialias": self.antialias,
                "stride": None if self.stride is None else list(self.stride),
            }
        )
        return config
