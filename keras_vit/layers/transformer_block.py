"""The pre-LayerNorm Transformer encoder block of ViT."""

import functools

import keras
from keras import ops

from keras_vit.layers.block_kernels import attention, gelu, layer_norm
from keras_vit.validation import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """Pre-LN multi-head self-attention and MLP, each with a residual.

    Equations (2) and (3) of [the ViT paper](https://arxiv.org/abs/2010.11929):
    `x = x + MSA(LN(x))`, then `x = x + MLP(LN(x))`, the MLP being
    Dense(mlp_dim) -> GELU -> Dense(D). Dropout follows the attention output
    and each MLP Dense, as in the reference implementation; stochastic depth
    ([Huang et al., 2016](https://arxiv.org/abs/1603.09382)) drops each
    residual branch per example.

    Queries, keys and values come from one fused (D, 3D) projection with
    biases: one matmul instead of three. Attention, the LayerNorms and the
    GELU are computed by `keras_vit.layers.block_kernels`, which says how
    and why each differs by backend: attention goes through
    `keras.ops.dot_product_attention` on JAX and PyTorch, so a backend's
    fused kernel is used where it has one, except when attention weights are
    requested or attention dropout is active in training, which need the
    weights explicitly.

    Args:
        num_heads: int. Number of attention heads; must divide the width D
            of the inputs.
        mlp_dim: int. Hidden width of the MLP.
        dropout: float. Dropout rate after the attention and each MLP Dense.
            Defaults to 0.
        attention_dropout: float. Dropout rate on the attention weights.
            Defaults to 0.
        drop_path_rate: float. Probability of dropping each residual branch
            per example in training. Defaults to 0.
        layer_norm_epsilon: float. Defaults to 1e-6, the reference
            implementation's value.
        approximate_gelu: bool. Use the tanh approximation of GELU, as the
            reference JAX implementation (`flax.linen.gelu`) and therefore the
            released checkpoints do; False gives the exact erf form (timm,
            PyTorch). Defaults to True.
        seed: int or None. Seed of the stochastic-depth draws.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tokens (B, T, D).
        training: bool. Whether dropout and stochastic depth are active.
        return_attention_weights: bool. Also return the attention weights
            (B, num_heads, T, T), after softmax. Defaults to False.

    Returns:
        Tokens (B, T, D), or `(tokens, weights)` when
        `return_attention_weights=True`.

    Example:

    >>> block = TransformerBlock(num_heads=2, mlp_dim=64)
    >>> tuple(block(np.zeros((2, 17, 32))).shape)
    (2, 17, 32)
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout=0.0,
        attention_dropout=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        approximate_gelu=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_heads", num_heads)
        check_positive_int("mlp_dim", mlp_dim)
        check_rate("dropout", dropout)
        check_rate("attention_dropout", attention_dropout)
        check_rate("drop_path_rate", drop_path_rate)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.approximate_gelu = approximate_gelu
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if hidden_dim is None:
            raise ValueError(
                f"The last (width) dimension of the tokens must be known, "
                f"received input shape {tuple(input_shape)}"
            )
        if hidden_dim % self.num_heads != 0:
            raise ValueError(
                f"The width {hidden_dim} of the tokens is not divisible by "
                f"num_heads {self.num_heads}"
            )
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        # Initializers of the reference implementation: Xavier-uniform
        # kernels; MLP biases ~ N(0, 1e-6). For the fused (D, 3D) kernel,
        # scale=2 with fan_avg gives each of q, k and v exactly the
        # Xavier-uniform limit of a (D, D) kernel.
        xavier = keras.initializers.GlorotUniform
        tiny = keras.initializers.RandomNormal
        common = dict(dtype=self.dtype_policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", **common
        )
        self.qkv = keras.layers.Dense(
            3 * hidden_dim,
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=2.0, mode="fan_avg", distribution="uniform"
            ),
            name="qkv",
            **common,
        )
        self.attention_output = keras.layers.Dense(
            hidden_dim, kernel_initializer=xavier(), name="attention_output",
            **common,
        )
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="mlp_norm", **common
        )
        self.mlp_dense_1 = keras.layers.Dense(
            self.mlp_dim,
            activation=self._gelu,
            kernel_initializer=xavier(),
            bias_initializer=tiny(stddev=1e-6),
            name="mlp_dense_1",
            **common,
        )
        self.mlp_dense_2 = keras.layers.Dense(
            hidden_dim,
            kernel_initializer=xavier(),
            bias_initializer=tiny(stddev=1e-6),
            name="mlp_dense_2",
            **common,
        )
        self.dropout_layer = keras.layers.Dropout(self.dropout, **common)
        self.attention_dropout_layer = keras.layers.Dropout(
            self.attention_dropout, **common
        )
        token_shape = (None, hidden_dim)
        self.attention_norm.build(token_shape)
        self.qkv.build(token_shape)
        self.attention_output.build(token_shape)
        self.mlp_norm.build(token_shape)
        self.mlp_dense_1.build(token_shape)
        self.mlp_dense_2.build((None, self.mlp_dim))

    def _gelu(self, x):
        # mlp_dense_1's activation, so that on TensorFlow the GELU ops sit in
        # the Dense's name scope, where grappler fuses them into the matmul.
        return gelu(x, self.approximate_gelu)

    def _msa(self, x, batch, length, training, return_weights):
        # Multi-head self-attention of (B * T, D) normed tokens, with the
        # dropout that follows its output projection.
        dropout = None
        if training and self.attention_dropout > 0:
            dropout = functools.partial(self.attention_dropout_layer, training=True)
        out, weights = attention(
            self.qkv(x), batch, length, self.num_heads, self.compute_dtype,
            dropout=dropout, return_weights=return_weights,
        )
        out = self.dropout_layer(self.attention_output(out), training=training)
        return out, weights

    def _mlp(self, x, training):
        # Dense(mlp_dim) -> GELU -> Dense(D), dropout after each Dense.
        x = self.dropout_layer(self.mlp_dense_1(x), training=training)
        return self.dropout_layer(self.mlp_dense_2(x), training=training)

    def _drop_path(self, branch, batch, training):
        # branch: (B * T, D); one keep/drop draw per example, shared by its
        # T tokens.
        if not training or self.drop_path_rate == 0.0:
            return branch
        keep = 1.0 - self.drop_path_rate
        noise = keras.random.uniform((batch, 1, 1), seed=self.seed_generator)
        mask = ops.cast(noise < keep, branch.dtype) / ops.cast(keep, branch.dtype)
        branch = ops.reshape(branch, (batch, -1, self.hidden_dim)) * mask
        return ops.reshape(branch, (-1, self.hidden_dim))

    def call(self, inputs, training=None, return_attention_weights=False):
        shape = ops.shape(inputs)
        batch, length = shape[0], shape[1]
        # The token-wise work (LayerNorms, projections, MLP) runs on a
        # (B * T, D) matrix: one 2-D GEMM per projection is measurably faster
        # on CPU than the batched 3-D matmul a Dense does on (B, T, D).
        x = ops.reshape(inputs, (-1, self.hidden_dim))
        # Eq. (2): x = x + MSA(LN(x)).
        attended, weights = self._msa(
            layer_norm(self.attention_norm, x), batch, length, training,
            return_attention_weights,
        )
        x = x + self._drop_path(attended, batch, training)
        # Eq. (3): x = x + MLP(LN(x)).
        x = x + self._drop_path(
            self._mlp(layer_norm(self.mlp_norm, x), training), batch, training
        )
        x = ops.reshape(x, (batch, length, self.hidden_dim))
        if return_attention_weights:
            return x, weights
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "approximate_gelu": self.approximate_gelu,
                "seed": self.seed,
            }
        )
        return config
