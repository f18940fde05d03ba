"""A 2-D convolution with weight standardization (the hybrid ViT's ResNet)."""

import keras
from keras import ops

from keras_vit.validation import check_choice, check_number, check_positive_int

PADDINGS = ("same", "valid")


def check_epsilon(epsilon):
    """A number > 0: the epsilon of a weight standardization or a GroupNorm."""
    check_number("epsilon", epsilon, low=0.0, low_open=True)


@keras.saving.register_keras_serializable(package="keras_vit")
class StdConv2D(keras.layers.Layer):
    """`Conv2D` without bias whose kernel is standardized at every call.

    [Weight Standardization](https://arxiv.org/abs/1903.10520) (Qiao et al.,
    2019), used with GroupNorm in the ResNets of BiT and of the paper's hybrid
    models. Each output channel's kernel slice (kh, kw, in) is shifted to zero
    mean and divided by its standard deviation plus `epsilon`:
    `w = (w - mean(w)) / (std(w) + epsilon)`, std with divisor n (not n - 1).
    This is the reference implementation's formula (`vit_jax/models_resnet.py`,
    `weight_standardize(w, axis=[0, 1, 2], eps=1e-5)`), with epsilon added to
    the standard deviation, not to the variance as some ports do; the released
    hybrid checkpoints were trained with it.

    The stored kernel is the raw (unstandardized) one, as in the reference
    checkpoints. Under a mixed dtype policy the standardization is computed in
    the variable dtype (float32) and only the result is cast to the compute
    dtype.

    Args:
        filters: int. Output channels.
        kernel_size: int. Side of the square kernel.
        strides: int. Stride along both axes. Defaults to 1.
        padding: str. `"same"` (the reference implementation's: TensorFlow/XLA
            "SAME", extra padding at the bottom/right) or `"valid"`.
            Defaults to `"same"`.
        epsilon: float. Added to the standard deviation. Defaults to 1e-5.
        kernel_initializer: initializer for the (k, k, in, filters) kernel.
            Defaults to `"lecun_normal"` (Flax `nn.Conv`'s default; the scale
            is irrelevant after standardization).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (B, H, W, C) feature maps, channels last.

    Returns:
        (B, H', W', filters), H' = ceil(H / strides) with `"same"` padding.

    Example:

    >>> conv = StdConv2D(filters=8, kernel_size=3, strides=2)
    >>> tuple(conv(np.zeros((2, 9, 16, 3))).shape)
    (2, 5, 8, 8)
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        epsilon=1e-5,
        kernel_initializer="lecun_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("strides", strides)
        check_choice("padding", padding, PADDINGS)
        check_epsilon(epsilon)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.epsilon = epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{self.__class__.__name__} expects inputs of shape (batch, "
                f"height, width, channels) with known channels, received "
                f"shape {tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            name="kernel",
            # Read uncast under a mixed policy, so that the standardization
            # runs in float32; `call` casts its result.
            autocast=False,
        )

    def standardized_kernel(self):
        """The kernel the convolution uses, in the variable dtype."""
        kernel = ops.convert_to_tensor(self.kernel)
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        centred = kernel - mean
        std = ops.sqrt(ops.mean(ops.square(centred), axis=(0, 1, 2), keepdims=True))
        return centred / (std + self.epsilon)

    def call(self, inputs):
        kernel = ops.cast(self.standardized_kernel(), self.compute_dtype)
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)

    def compute_output_shape(self, input_shape):
        def length(size):
            if size is None:
                return None
            if self.padding == "same":
                return -(-size // self.strides)
            return (size - self.kernel_size) // self.strides + 1

        return (input_shape[0], length(input_shape[1]), length(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "epsilon": self.epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config
