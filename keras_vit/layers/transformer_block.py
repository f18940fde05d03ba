"""The pre-LayerNorm Transformer encoder block of ViT."""

import keras
from keras import ops

from keras_vit.layers.activations import quick_gelu, swiglu_gate
from keras_vit.layers.block_kernels import attention, gelu, layer_norm
from keras_vit.layers.block_masks import BlockMasks
from keras_vit.layers.initializers import fused_xavier_uniform
from keras_vit.layers.layer_scale import LayerScale
from keras_vit.layers.quantized_sublayers import QuantizedSublayers
from keras_vit.validation import (
    check_choice,
    check_number,
    check_positive_int,
    check_rate,
    known_width,
)

# The MLPs a block can have (`keras_vit.variants.VariantSpec.activation` takes these).
ACTIVATIONS = ("gelu", "quick_gelu", "swiglu")


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(QuantizedSublayers, keras.layers.Layer):
    """Pre-LN multi-head self-attention and MLP, each with a residual.

    Equations (2) and (3) of [the ViT paper](https://arxiv.org/abs/2010.11929):
    `x = x + MSA(LN(x))`, then `x = x + MLP(LN(x))`, the MLP being
    Dense(mlp_dim) -> GELU -> Dense(D). The later ViT families' options:
    QuickGELU (CLIP) or a SwiGLU MLP (DINOv2 giant) in place of the GELU, and
    LayerScale (DINOv2) on both residual branches,
    `x = x + gamma_1 * MSA(LN(x))`, `x = x + gamma_2 * MLP(LN(x))`.
    Dropout follows the attention output
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
        activation: str. `"gelu"` (its form set by `approximate_gelu`),
            `"quick_gelu"` (`keras_vit.layers.quick_gelu`) or `"swiglu"`:
            `mlp_dense_1` is then the packed (D, 2 * mlp_dim) gate-and-value
            projection of `keras_vit.layers.SwiGLU` and `mlp_dim` the gated
            width. Defaults to `"gelu"`.
        layer_scale: float or None. Initial value of the per-channel scales
            (`keras_vit.layers.LayerScale`, sublayers `attention_scale` and
            `mlp_scale`) of both residual branches; None for none. Defaults
            to None.
        seed: int or None. Seed of the block's random draws (dropout and
            stochastic-depth masks).
        remat: bool. Gradient checkpointing: in training, keep only the
            block's input (and its boolean dropout / stochastic-depth masks)
            for the backward pass and recompute the rest there
            (`keras.remat`), trading one more forward pass of the block for
            most of its activation memory. The gradients are those without
            remat: the random masks are drawn once, before the recomputed
            part. Also on when the block is created inside a
            `keras.RematScope` that selects it (`"full"`, `"larger_than"`
            below its output size, `"list_of_layers"` naming it); the block
            is then recomputed as one unit, its sublayers never on their
            own. Defaults to False.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).
            `dtype` may also be a `keras.dtype_policies.DTypePolicyMap` keyed
            by sublayer name (`"qkv"`, `"attention_output"`, `"mlp_dense_1"`,
            `"mlp_dense_2"`, `"attention_norm"`, `"mlp_norm"`): those
            sublayers are built with its policies, the rest with its default
            policy. That is how `get_config` records the Dense sublayers that
            `model.quantize(...)` quantized, so that a saved quantized model
            reloads with their quantized weights.

    Call arguments:
        inputs: tokens (B, T, D).
        training: bool. Whether dropout and stochastic depth are active.
        return_attention_weights: bool. Also return the attention weights
            (B, num_heads, Q, T), after softmax. Defaults to False.
        first_token_only: bool. Return the first token's output alone,
            (B, 1, D): its query attends to all T tokens' keys and values,
            and the output projection, the residuals and the MLP run for
            that token only, not for the T - 1 others. What the last block
            of a model that classifies from the [class] token needs: the
            same values as `outputs[:, :1]` of the full call, for about a
            quarter of the block's matmul work (the keys and values of all
            tokens are still projected). Defaults to False (Q = T).

    Returns:
        Tokens (B, Q, D), Q = 1 with `first_token_only` else T, or
        `(tokens, weights)` when `return_attention_weights=True`.

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
        remat=False,
        activation="gelu",
        layer_scale=None,
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
        check_choice("activation", activation, ACTIVATIONS)
        if layer_scale is not None:
            check_number("layer_scale", layer_scale, 0.0, low_open=True)
        self.activation = activation
        self.layer_scale = layer_scale
        self.seed = seed
        self.remat = bool(remat)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._remat_by_scope = False

    def build(self, input_shape):
        # The sublayers are never recomputed on their own: under a RematScope
        # the block is the unit of recomputation (`rematerialized_call`).
        with keras.RematScope(mode=None):
            self._build_sublayers(input_shape)

    def _build_sublayers(self, input_shape):
        hidden_dim = known_width(input_shape, num_heads=self.num_heads)
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // self.num_heads
        # Initializers of the reference implementation: Xavier-uniform
        # kernels; MLP biases ~ N(0, 1e-6). For the fused (D, 3D) kernel,
        # scale=2 with fan_avg gives each of q, k and v exactly the
        # Xavier-uniform limit of a (D, D) kernel.
        xavier = keras.initializers.GlorotUniform
        tiny = keras.initializers.RandomNormal
        policy = self._sublayer_policy
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm",
            dtype=policy("attention_norm"),
        )
        self.qkv = keras.layers.Dense(
            3 * hidden_dim,
            kernel_initializer=fused_xavier_uniform(3),
            name="qkv",
            dtype=policy("qkv"),
        )
        self.attention_output = keras.layers.Dense(
            hidden_dim, kernel_initializer=xavier(), name="attention_output",
            dtype=policy("attention_output"),
        )
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="mlp_norm",
            dtype=policy("mlp_norm"),
        )
        gated = self.activation == "swiglu"
        self.mlp_dense_1 = keras.layers.Dense(
            2 * self.mlp_dim if gated else self.mlp_dim,
            activation=None if gated else self._gelu,
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
        self.attention_scale = self.mlp_scale = None
        if self.layer_scale is not None:
            self.attention_scale = LayerScale(self.layer_scale, name="attention_scale",
                                              dtype=policy("attention_scale"))
            self.mlp_scale = LayerScale(self.layer_scale, name="mlp_scale",
                                        dtype=policy("mlp_scale"))
        token_shape = (None, hidden_dim)
        for scale in (self.attention_scale, self.mlp_scale):
            if scale is not None:
                scale.build(token_shape)
        self.attention_norm.build(token_shape)
        self.qkv.build(token_shape)
        self.attention_output.build(token_shape)
        self.mlp_norm.build(token_shape)
        self.mlp_dense_1.build(token_shape)
        self.mlp_dense_2.build((None, self.mlp_dim))

    def call(self, inputs, training=None, return_attention_weights=False,
             first_token_only=False):
        shape = ops.shape(inputs)
        batch, length = shape[0], shape[1]
        queries = 1 if first_token_only else length
        # Dropout and stochastic-depth masks, drawn before anything is computed so that a
        # recomputation (remat) applies the same ones.
        masks = BlockMasks(self, batch, length, queries, training)

        def eqs_2_and_3(tokens):
            # The token-wise work (LayerNorms, projections, MLP) runs on a (B * T, D) matrix:
            # one 2-D GEMM per projection is measurably faster on CPU than the batched 3-D
            # matmul a Dense does on (B, T, D).
            x = ops.reshape(tokens, (-1, self.hidden_dim))
            # Eq. (2): x' = MSA(LN(x)) + x.
            attended, weights = self._msa(
                layer_norm(self.attention_norm, x), batch, length, masks,
                return_attention_weights, first_token_only,
            )
            if first_token_only:
                x = tokens[:, 0]  # from here on, the first token of each example: (B, D)
            x = x + masks.drop_path(self._scaled(self.attention_scale, attended),
                                    "path_attention")
            # Eq. (3): x = MLP(LN(x')) + x'.
            x = x + masks.drop_path(
                self._scaled(self.mlp_scale, self._mlp(layer_norm(self.mlp_norm, x), masks)),
                "path_mlp")
            return ops.reshape(x, (batch, queries, self.hidden_dim)), weights

        return self._run(eqs_2_and_3, inputs, training, return_attention_weights)

    def _msa(self, x, batch, length, masks, return_weights, first_only):
        # Multi-head self-attention of (B * T, D) normed tokens, with the dropout that follows
        # its output projection: (B * Q, D).
        out, weights = attention(
            self.qkv(x), batch, length, self.num_heads, self.compute_dtype,
            dropout=masks.attention_dropout(), return_weights=return_weights,
            first_query_only=bool(first_only),
        )
        return masks.drop(self.attention_output(out), "attention_output"), weights

    def _mlp(self, x, masks):
        # Dense(mlp_dim) -> GELU -> Dense(D), dropout after each Dense; SwiGLU gates the
        # packed (.., 2 * mlp_dim) output of mlp_dense_1 instead.
        x = self.mlp_dense_1(x)
        if self.activation == "swiglu":
            x = swiglu_gate(x)
        x = masks.drop(x, "mlp_hidden")
        return masks.drop(self.mlp_dense_2(x), "mlp_output")

    @staticmethod
    def _scaled(scale, x):
        # LayerScale of a residual branch, where the block has it.
        return x if scale is None else scale(x)

    def _gelu(self, x):
        # mlp_dense_1's activation, so that on TensorFlow the GELU ops sit in
        # the Dense's name scope, where grappler fuses them into the matmul.
        if self.activation == "quick_gelu":
            return quick_gelu(x)
        return gelu(x, self.approximate_gelu)

    # -- Gradient checkpointing (remat) ---------------------------------------------------------

    def _run(self, forward, inputs, training, return_attention_weights):
        """`forward(inputs)`, recomputed in the backward pass when remat is on in training."""
        remat = self.remat or self._remat_by_scope
        if not (remat and training) or return_attention_weights:
            x, weights = forward(inputs)
            return (x, weights) if return_attention_weights else x
        # The recomputed function takes the tokens as its one (positional) argument; the masks
        # and the rest are fixed by the closure (TensorFlow's recompute_grad would try to
        # differentiate boolean arguments).
        return keras.remat(lambda tokens: forward(tokens)[0])(inputs)

    def rematerialized_call(self, layer_call, *args, **kwargs):
        """The block's call under a `keras.RematScope`: recomputed as a unit.

        Keras asks each layer created inside a RematScope for its call
        wrapped in `keras.remat`. Keras' own wrapper would pass `training`
        as a keyword argument, which TensorFlow's `recompute_grad` refuses
        in a traced function, and would redraw the dropout masks when it
        recomputes; so where Keras would recompute the block, the block
        runs its own `remat` path instead.
        """
        mode = getattr(self._remat_mode, "mode", None)
        if mode == "activations":
            # That mode recomputes the activation functions of layers with an `activation`
            # attribute; the block's `activation` names its MLP's form (a string), and its
            # GELU lives inside `mlp_dense_1`, which no scope selects: not this block.
            return layer_call
        if super().rematerialized_call(layer_call, *args, **kwargs) is layer_call:
            return layer_call  # the scope does not select this block
        return self._recomputed_call

    def _recomputed_call(self, *args, **kwargs):
        # `call` with remat on: the flag is read while `call` runs (traces), in Python.
        self._remat_by_scope = True
        try:
            return self.call(*args, **kwargs)
        finally:
            self._remat_by_scope = False

    # -- Quantized sublayers (`model.quantize`): recorded by `QuantizedSublayers` -------------

    _QUANTIZABLE_SUBLAYERS = (
        "attention_norm", "qkv", "attention_output", "mlp_norm",
        "mlp_dense_1", "mlp_dense_2",
    )

    # -- Shapes and config -----------------------------------------------------------------------

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None,
                            return_attention_weights=False,
                            first_token_only=False):
        batch, length, width = inputs.shape
        tokens = keras.KerasTensor(
            (batch, 1 if first_token_only else length, width),
            dtype=self.compute_dtype,
        )
        if not return_attention_weights:
            return tokens
        weights = keras.KerasTensor(
            (batch, self.num_heads, 1 if first_token_only else length, length),
            dtype="float32",
        )
        return tokens, weights

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
                "remat": self.remat,
                "activation": self.activation,
                "layer_scale": self.layer_scale,
            }
        )
        return self._config_with_quantized_dtype(config)
