"""Prepends the learnable [class] token to a token sequence."""

import keras
from keras import ops

from keras_vit.validation import known_width


@keras.saving.register_keras_serializable(package="keras_vit")
class ClassToken(keras.layers.Layer):
    """Prepends one learnable token, whose final state is the image summary.

    Section 3.1 of [the ViT paper](https://arxiv.org/abs/2010.11929), like
    BERT's [class] token. It is initialized to zeros, as in the reference
    implementation.

    Args:
        initializer: initializer of the (1, 1, D) token. Defaults to
            `"zeros"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tokens of shape (B, N, D).

    Returns:
        Tokens of shape (B, 1 + N, D), the class token first.

    Example:

    >>> tuple(ClassToken()(np.zeros((2, 16, 32))).shape)
    (2, 17, 32)
    """

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        hidden_dim = known_width(input_shape)
        self.token = self.add_weight(
            shape=(1, 1, hidden_dim), initializer=self.initializer, name="token"
        )

    def call(self, inputs):
        token = ops.cast(self.token, inputs.dtype)
        token = ops.broadcast_to(
            token, (ops.shape(inputs)[0], 1, ops.shape(inputs)[-1])
        )
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        length = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"initializer": keras.initializers.serialize(self.initializer)}
        )
        return config
