"""LayerScale: a learned per-channel scale of a residual branch's output."""

import keras
from keras import ops

from keras_vit.validation import check_number, known_width


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerScale(keras.layers.Layer):
    """Multiplies each channel by its own learned factor, `gamma * x`.

    Section 3 of CaiT, [Touvron et al., 2021, "Going deeper with Image
    Transformers"](https://arxiv.org/abs/2103.17239): each residual branch of
    a block is scaled per channel before it is added, `x + gamma * f(x)`,
    with gamma initialized small so that a deep network starts close to the
    identity. DINOv2 ([Oquab et al., 2023](https://arxiv.org/abs/2304.07193))
    uses it on both branches of every block. The weight `gamma` (D,) is
    timm's and DINOv2's `ls1.gamma` / `ls2.gamma`, and transformers'
    `layer_scale1.lambda1` / `layer_scale2.lambda1`, as stored.

    Args:
        init_value: float. The initial value of every channel's factor.
            Defaults to 1e-5 (DINOv2's and timm's `init_values` for
            training; CaiT uses 0.1 to 1e-6 by depth).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor (..., D).

    Returns:
        Tensor of the inputs' shape, `inputs * gamma`.

    Example:

    >>> out = LayerScale(init_value=0.5)(np.ones((2, 3, 4)))
    >>> keras.ops.convert_to_numpy(out)[0, 0]
    array([0.5, 0.5, 0.5, 0.5], dtype=float32)
    """

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        check_number("init_value", init_value)
        self.init_value = init_value

    def build(self, input_shape):
        hidden_dim = known_width(input_shape, "inputs")
        self.gamma = self.add_weight(
            shape=(hidden_dim,),
            initializer=keras.initializers.Constant(self.init_value),
            name="gamma",
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"init_value": self.init_value})
        return config
