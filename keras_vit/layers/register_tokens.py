"""Register tokens: learned extra tokens that no output reads."""

import keras
from keras import ops

from keras_vit.validation import check_int, known_width


@keras.saving.register_keras_serializable(package="keras_vit")
class RegisterTokens(keras.layers.Layer):
    """Inserts learned register tokens between the prefix and the patch tokens.

    [Darcet et al., 2023, "Vision Transformers Need
    Registers"](https://arxiv.org/abs/2309.16588): a few extra tokens give
    the network somewhere to keep global information, instead of
    overwriting low-information patch tokens with it (the high-norm
    artifacts of their Section 2), and are discarded at the output.

    The order is that of DINOv2's reference code, transformers'
    `Dinov2WithRegistersEmbeddings` and timm's `VisionTransformer`:
    `[prefix..., registers..., patches...]`, the prefix being the [class]
    (and any distillation) token. Registers get no position embedding: the
    layer is applied after `PositionEmbedding`, and `num_prefix_tokens` says
    where they go. The weight `tokens` (1, R, D) is transformers'
    `embeddings.register_tokens` and timm's `reg_token`, as stored.

    Args:
        num_registers: int. Number of register tokens R; 0 inserts none
            (the layer then has no weight and returns its input). The
            paper uses 4 for DINOv2.
        num_prefix_tokens: int. Tokens before the patch tokens, kept in
            front of the registers. Defaults to 1 (the [class] token).
        initializer: initializer of the (1, R, D) tokens. Defaults to
            `RandomNormal(stddev=1e-6)`, DINOv2's: the tokens carry no
            position embedding, so tokens initialized equal would receive
            equal gradients and stay equal; zeros would make R registers
            one.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tokens (B, P + N, D): P = `num_prefix_tokens` prefix tokens,
            then N patch tokens.

    Returns:
        Tokens (B, P + R + N, D).

    Example:

    >>> layer = RegisterTokens(num_registers=4, num_prefix_tokens=1)
    >>> tuple(layer(np.zeros((2, 17, 32))).shape)
    (2, 21, 32)
    """

    def __init__(self, num_registers, num_prefix_tokens=1, initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_int("num_registers", num_registers, minimum=0)
        check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
        self.num_registers = num_registers
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=1e-6)
        )

    def build(self, input_shape):
        hidden_dim = known_width(input_shape)
        length = input_shape[1]
        if length is not None and length < self.num_prefix_tokens:
            raise ValueError(
                f"The tokens must number at least num_prefix_tokens "
                f"{self.num_prefix_tokens}, received input shape {tuple(input_shape)}"
            )
        if self.num_registers:
            self.tokens = self.add_weight(
                shape=(1, self.num_registers, hidden_dim),
                initializer=self.initializer,
                name="tokens",
            )

    def call(self, inputs):
        if not self.num_registers:
            return inputs
        shape = ops.shape(inputs)
        tokens = ops.broadcast_to(
            ops.cast(self.tokens, inputs.dtype),
            (shape[0], self.num_registers, shape[-1]),
        )
        prefix = inputs[:, : self.num_prefix_tokens]
        patches = inputs[:, self.num_prefix_tokens :]
        return ops.concatenate([prefix, tokens, patches], axis=1)

    def compute_output_shape(self, input_shape):
        length = input_shape[1]
        if length is not None:
            length += self.num_registers
        return (input_shape[0], length, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_registers": self.num_registers,
                "num_prefix_tokens": self.num_prefix_tokens,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
