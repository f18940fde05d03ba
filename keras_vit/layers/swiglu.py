"""SwiGLU: the gated MLP of DINOv2's giant model."""

import keras

from keras_vit.layers.activations import swiglu_gate
from keras_vit.validation import check_positive_int, known_width


@keras.saving.register_keras_serializable(package="keras_vit")
class SwiGLU(keras.layers.Layer):
    """The gated MLP `fc2(silu(x W_gate + b_gate) * (x W_value + b_value))`.

    SwiGLU is the SiLU-gated linear unit of [Shazeer, 2020, "GLU Variants
    Improve Transformer"](https://arxiv.org/abs/2002.05202); DINOv2's giant
    model ([Oquab et al., 2023](https://arxiv.org/abs/2304.07193)) uses it in
    place of the ViT MLP.

    Weight layout: the two input projections are one packed Dense `fc1`
    (D, 2H), gate first, then value, both with bias; `fc2` (H, output_dim)
    with bias. That is the layout of all three sources, so each of their
    tensors maps to one Keras weight (kernels transposed) with no
    splitting: DINOv2's `mlp.w12` / `mlp.w3`, transformers'
    `Dinov2SwiGLUFFN` `mlp.weights_in` / `mlp.weights_out` and timm's
    `SwiGLUPacked` (`GluMlp`, gate first) `mlp.fc1` / `mlp.fc2`. One (D, 2H)
    matmul is also faster than two (D, H) ones.

    `hidden_dim` is H, the gated width (`fc2`'s input), as stored in the
    checkpoint: 4096 for DINOv2-g (D = 1536). transformers derives it from
    `mlp_ratio` 4 as `(int(4 D * 2 / 3) + 7) // 8 * 8`, timm passes
    `mlp_ratio` 2.66667 * 2 for `fc1`'s width 2H; both give 4096 there.

    Args:
        hidden_dim: int. H, the width of the gated hidden layer.
        output_dim: int or None. Width of the output; None for the input's
            width D. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor (..., D).

    Returns:
        Tensor (..., output_dim).

    Example:

    >>> mlp = SwiGLU(hidden_dim=64)
    >>> tuple(mlp(np.zeros((2, 5, 32))).shape)
    (2, 5, 32)
    >>> tuple(mlp.fc1.kernel.shape), tuple(mlp.fc2.kernel.shape)
    ((32, 128), (64, 32))
    """

    def __init__(self, hidden_dim, output_dim=None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("hidden_dim", hidden_dim)
        check_positive_int("output_dim", output_dim, allow_none=True)
        self.hidden_dim = hidden_dim
        self.output_dim = output_dim

    def build(self, input_shape):
        width = known_width(input_shape, "inputs")
        self.fc1 = keras.layers.Dense(
            2 * self.hidden_dim, name="fc1", dtype=self.dtype_policy
        )
        self.fc2 = keras.layers.Dense(
            self.output_dim or width, name="fc2", dtype=self.dtype_policy
        )
        self.fc1.build((None, width))
        self.fc2.build((None, self.hidden_dim))

    def call(self, inputs):
        return self.fc2(swiglu_gate(self.fc1(inputs)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({"hidden_dim": self.hidden_dim, "output_dim": self.output_dim})
        return config
