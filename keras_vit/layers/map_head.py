"""MAP: multi-head attention pooling of the tokens by one learned probe."""

import keras
from keras import ops

from keras_vit.layers.block_kernels import gelu
from keras_vit.layers.initializers import fused_xavier_uniform
from keras_vit.layers.quantized_sublayers import QuantizedSublayers
from keras_vit.validation import check_number, check_positive_int, known_width


@keras.saving.register_keras_serializable(package="keras_vit")
class MAPHead(QuantizedSublayers, keras.layers.Layer):
    """Pools the tokens with a learned probe query, then an MLP residual.

    Multihead attention pooling of [Zhai et al., 2022, "Scaling Vision
    Transformers"](https://arxiv.org/abs/2106.04560) (Section 3.2), big_vision's
    `MAPHead`, and the pooling of SigLIP ([Zhai et al., 2023, "Sigmoid Loss
    for Language Image Pre-Training"](https://arxiv.org/abs/2303.15343)),
    which has no [class] token. With x the tokens (B, T, D):

        y = MHA(query=probe, keys=values=x)      # (B, 1, D)
        y = y + MLP(LN(y))
        return y[:, 0]

    The MLP is Dense(mlp_dim) -> GELU -> Dense(D); the attention has biases
    on every projection and no LayerNorm before it (the encoder's final
    LayerNorm precedes the head), as in big_vision, transformers'
    `SiglipMultiheadAttentionPoolingHead` and timm's `AttentionPoolLatent`.

    Weight layout (sublayer names), chosen so each source maps with at most
    one contiguous slice: the weight `probe` (1, 1, D) (transformers
    `head.probe`, timm `attn_pool.latent`, big_vision `probe`); Dense `query`
    (D, D) and Dense `key_value` (D, 2D), keys then values, each split
    head-major into `num_heads` heads: timm's `attn_pool.q` and
    `attn_pool.kv` as they are; transformers' packed
    `head.attention.in_proj_weight` (3D, D) is rows [:D] and [D:] of it;
    big_vision's `query` and `key`|`value` kernels reshaped (D, D). Then
    Dense `attention_output` (`out_proj` / `proj` / `out`),
    LayerNormalization `norm` (`layernorm` / `norm` / `LayerNorm_0`) and
    Dense `mlp_dense_1`, `mlp_dense_2` (`mlp.fc1`, `mlp.fc2`; big_vision's
    `MlpBlock_0/Dense_0`, `Dense_1`), the names of `TransformerBlock`'s
    sublayers. Keys and values are one Dense: one matmul over the T tokens.

    Args:
        num_heads: int. Number of attention heads; must divide the width D.
        mlp_dim: int. Hidden width of the MLP (SigLIP's
            `intermediate_size`, 4D in big_vision).
        layer_norm_epsilon: float. Defaults to 1e-6 (big_vision's and
            SigLIP's).
        approximate_gelu: bool. The tanh approximation of GELU (big_vision's
            `nn.gelu`, SigLIP's `gelu_pytorch_tanh`) or, False, the exact erf
            form. Defaults to True.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).
            `dtype` may also be a `keras.dtype_policies.DTypePolicyMap` keyed
            by sublayer name (`"query"`, `"key_value"`, `"attention_output"`,
            `"norm"`, `"mlp_dense_1"`, `"mlp_dense_2"`): how `get_config`
            records the Dense sublayers that `model.quantize(...)` quantized
            (`keras_vit.layers.quantized_sublayers`), as `TransformerBlock`
            does, so that a saved quantized model reloads.

    Call arguments:
        inputs: tokens (B, T, D).

    Returns:
        The pooled features (B, D).

    Example:

    >>> head = MAPHead(num_heads=4, mlp_dim=64)
    >>> tuple(head(np.ones((2, 16, 32))).shape)
    (2, 32)
    >>> tuple(head.key_value.kernel.shape)
    (32, 64)
    """

    # What `keras_vit.ViT(pooling=...)` calls this pooling (`TokenPooling.pooling`'s counterpart).
    pooling = "map"

    _QUANTIZABLE_SUBLAYERS = (
        "query", "key_value", "attention_output", "norm", "mlp_dense_1", "mlp_dense_2",
    )

    def __init__(
        self,
        num_heads,
        mlp_dim,
        layer_norm_epsilon=1e-6,
        approximate_gelu=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("mlp_dim", mlp_dim)
        check_number("layer_norm_epsilon", layer_norm_epsilon, low=0.0, low_open=True)
        if not isinstance(approximate_gelu, bool):
            raise ValueError(
                f"approximate_gelu must be a bool, received {approximate_gelu!r}"
            )
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.approximate_gelu = approximate_gelu

    def build(self, input_shape):
        hidden_dim = known_width(input_shape, num_heads=self.num_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        # big_vision's initializers: Xavier-uniform probe and kernels; the
        # MLP biases ~ N(0, 1e-6) as in its MlpBlock.
        xavier = keras.initializers.GlorotUniform
        self.probe = self.add_weight(
            shape=(1, 1, hidden_dim), initializer=xavier(), name="probe"
        )
        policy = self._sublayer_policy
        self.query = keras.layers.Dense(
            hidden_dim, kernel_initializer=xavier(), name="query", dtype=policy("query")
        )
        # k and v each with the Xavier limit of a (D, D) kernel.
        self.key_value = keras.layers.Dense(
            2 * hidden_dim,
            kernel_initializer=fused_xavier_uniform(2),
            name="key_value",
            dtype=policy("key_value"),
        )
        self.attention_output = keras.layers.Dense(
            hidden_dim, kernel_initializer=xavier(), name="attention_output",
            dtype=policy("attention_output"),
        )
        self.norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="norm", dtype=policy("norm")
        )
        tiny = keras.initializers.RandomNormal
        self.mlp_dense_1 = keras.layers.Dense(
            self.mlp_dim,
            activation=self._gelu,
            kernel_initializer=xavier(),
            bias_initializer=tiny(stddev=1e-6),
            name="mlp_dense_1",
            dtype=policy("mlp_dense_1"),
        )
        self.mlp_dense_2 = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=xavier(),
            bias_initializer=tiny(stddev=1e-6),
            name="mlp_dense_2",
            dtype=policy("mlp_dense_2"),
        )
        token_shape = (None, hidden_dim)
        self.query.build(token_shape)
        self.key_value.build(token_shape)
        self.attention_output.build(token_shape)
        self.norm.build(token_shape)
        self.mlp_dense_1.build(token_shape)
        self.mlp_dense_2.build((None, self.mlp_dim))

    def _gelu(self, x):
        # mlp_dense_1's activation, as in TransformerBlock (see block_kernels.gelu).
        return gelu(x, self.approximate_gelu)

    def call(self, inputs):
        shape = ops.shape(inputs)
        batch, length = shape[0], shape[1]
        heads, head_dim = self.num_heads, self.head_dim
        probe = ops.cast(self.probe[0], self.compute_dtype)  # (1, D)
        # The probe is the same for every image: its query is computed once.
        query = ops.reshape(self.query(probe), (heads, 1, head_dim))
        key_value = self.key_value(ops.reshape(inputs, (-1, self.hidden_dim)))
        key_value = ops.reshape(key_value, (batch, length, 2, heads, head_dim))
        key_value = ops.transpose(key_value, (2, 0, 3, 1, 4))  # (2, B, H, T, d)
        key, value = ops.unstack(key_value, 2, axis=0)
        query = query * ops.cast(head_dim**-0.5, query.dtype)
        logits = ops.einsum("hqd,bhtd->bhqt", query, key)
        # Softmax in float32, as the block's attention does for its weights.
        probs = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), value.dtype)
        pooled = ops.einsum("bhqt,bhtd->bqhd", probs, value)
        pooled = self.attention_output(ops.reshape(pooled, (batch, self.hidden_dim)))
        return pooled + self.mlp_dense_2(self.mlp_dense_1(self.norm(pooled)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "approximate_gelu": self.approximate_gelu,
            }
        )
        return self._config_with_quantized_dtype(config)
