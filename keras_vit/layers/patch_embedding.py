"""Cuts images into non-overlapping patches and embeds each linearly."""

import keras
from keras import ops

from keras_vit.validation import check_positive_int


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEmbedding(keras.layers.Layer):
    """Linear projection of non-overlapping `P x P` image patches to `D` dims.

    Section 3.1 of [the ViT paper](https://arxiv.org/abs/2010.11929): the
    image (H, W, C) is reshaped into N = HW / P^2 flattened patches, each
    mapped to D dims by one trainable linear projection. A convolution with
    kernel size and stride P is exactly that projection applied to every
    patch, and is how the reference implementation computes it.

    Args:
        patch_size: int. Side P of the square patches, in pixels.
        hidden_dim: int. Output width D.
        kernel_initializer: initializer for the projection kernel
            (P, P, C, D). Defaults to `"lecun_normal"`, the reference
            implementation's (Flax `nn.Conv`) default.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        use_bias: bool. Whether the projection has a bias; CLIP's
            ([Radford et al., 2021](https://arxiv.org/abs/2103.00020)) has
            none. Defaults to True.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: images of shape (B, H, W, C), channels last; H and W must be
            divisible by `patch_size`.

    Returns:
        Tokens of shape (B, (H / P) * (W / P), D), patches in row-major
        order.

    Example:

    >>> layer = PatchEmbedding(patch_size=4, hidden_dim=32)
    >>> tuple(layer(np.zeros((2, 16, 24, 3))).shape)
    (2, 24, 32)
    """

    def __init__(
        self,
        patch_size,
        hidden_dim,
        kernel_initializer="lecun_normal",
        bias_initializer="zeros",
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("patch_size", patch_size)
        check_positive_int("hidden_dim", hidden_dim)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.use_bias = bool(use_bias)
        self.num_channels = None

    def _check_image_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"{self.__class__.__name__} expects images of shape "
                f"(batch, height, width, channels), received shape "
                f"{tuple(shape)}"
            )
        height, width, channels = shape[1], shape[2], shape[3]
        for axis, value in (("height", height), ("width", width)):
            if value is not None and value % self.patch_size != 0:
                raise ValueError(
                    f"Image {axis} {value} (input shape {tuple(shape)}) is not "
                    f"divisible by patch_size {self.patch_size}"
                )
        if self.num_channels is not None and channels != self.num_channels:
            raise ValueError(
                f"{self.name} was built for images with {self.num_channels} "
                f"channels, received input shape {tuple(shape)} with "
                f"{channels} channels"
            )
        return channels

    def build(self, input_shape):
        channels = self._check_image_shape(input_shape)
        if channels is None:
            raise ValueError(
                f"The channel dimension of the images must be known, received "
                f"input shape {tuple(input_shape)}"
            )
        self.num_channels = int(channels)
        self.projection = keras.layers.Conv2D(
            self.hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            use_bias=self.use_bias,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection.build(input_shape)

    def call(self, inputs):
        self._check_image_shape(inputs.shape)
        x = self.projection(inputs)
        shape = ops.shape(x)
        return ops.reshape(x, (-1, shape[1] * shape[2], self.hidden_dim))

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]
        if height is None or width is None:
            num_patches = None
        else:
            num_patches = (height // self.patch_size) * (width // self.patch_size)
        return (batch, num_patches, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "use_bias": self.use_bias,
            }
        )
        return config
