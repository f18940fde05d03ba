"""Reduces the encoder's token sequence to one vector per image."""

import keras
from keras import ops

POOLINGS = ("token", "gap", "distilled")
# A model's poolings: TokenPooling's, and SigLIP's attention probe (`keras_vit.layers.MAPHead`).
MODEL_POOLINGS = POOLINGS + ("map",)


def check_pooling(pooling, choices=POOLINGS):
    if pooling not in choices:
        raise ValueError(
            f"Unknown pooling {pooling!r}: expected one of {list(choices)} "
            f"('token' takes the [class] token, 'gap' averages the patch "
            f"tokens, 'distilled' takes the [class] and distillation tokens"
            + (", 'map' attends over the tokens with a learned probe)"
               if "map" in choices else ")")
        )


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Takes the [class] token's state, or the mean of the patch tokens.

    The two image representations of the ViT paper: the final state of the
    [class] token (Section 3.1), or global average pooling of the patch
    tokens (Appendix D.3). DeiT's distilled models
    ([Touvron et al., 2021](https://arxiv.org/abs/2012.12877)) add a third:
    `"distilled"` concatenates the [class] and distillation tokens (the
    first two) into (B, 2D). One linear head on that pair is the mean of
    DeiT's two heads, `(W_cls x_cls + W_dist x_dist) / 2`, with the kernel
    `[W_cls; W_dist] / 2` (`keras_vit.converters` loads them so).

    Args:
        pooling: str. `"token"` (the first token), `"gap"` (the mean of
            the tokens after the prefix) or `"distilled"` (the first two
            tokens, concatenated). Defaults to `"token"`.
        num_prefix_tokens: int. Tokens before the patch tokens, excluded
            from the mean with `"gap"`. Defaults to 0.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: tokens (B, T, D).

    Returns:
        (B, D) features; (B, 2D) with `"distilled"`.

    Example:

    >>> tuple(TokenPooling("gap")(np.ones((2, 16, 32))).shape)
    (2, 32)
    """

    def __init__(self, pooling="token", num_prefix_tokens=0, **kwargs):
        super().__init__(**kwargs)
        check_pooling(pooling)
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens

    def call(self, inputs):
        if self.pooling == "token":
            return inputs[:, 0]
        if self.pooling == "distilled":
            return ops.concatenate([inputs[:, 0], inputs[:, 1]], axis=-1)
        return ops.mean(inputs[:, self.num_prefix_tokens :], axis=1)

    def compute_output_shape(self, input_shape):
        width = input_shape[-1]
        if self.pooling == "distilled" and width is not None:
            width = 2 * width
        return (input_shape[0], width)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pooling": self.pooling, "num_prefix_tokens": self.num_prefix_tokens}
        )
        return config
