"""The Transformer block's backend-specific kernels: attention, LayerNorm, GELU.

`TransformerBlock.call` is Eqs. (2) and (3) of the ViT paper; this module
holds how three of its steps are computed, where the fastest way differs by
backend. Every path computes the same function (the tests compare each with a
float64 NumPy reference); they differ in the ops a backend runs.

- `attention`: JAX and PyTorch get `keras.ops.dot_product_attention`, which
  they dispatch to fused kernels (cuDNN, flash, SDPA) where they have them.
  TensorFlow has none, and Keras' generic path for it (einsums over
  (B, T, H, d) operands) transposes each operand inside every einsum; one
  transpose of the fused q|k|v tensor to (3, B, H, T, d) makes both products
  plain batched matmuls. The explicit path also serves every backend when the
  weights are returned or attention dropout is active.
- `softmax` of the TensorFlow path runs in the compute dtype: TensorFlow's
  softmax kernels compute bfloat16 in float32 internally, so nothing is lost
  and two casts of the (B, H, T, T) logits go away. Returned weights, and
  the other backends, take it in float32.
- `layer_norm`: without XLA, TensorFlow runs each elementwise op as its own
  pass over the tensor, and Keras' generic `layer_normalization` builds
  full-size intermediates from gamma and the mean; centring first takes fewer
  full-size passes. Elsewhere the `LayerNormalization` layer's own call
  (PyTorch's fused kernel, XLA's fusion on JAX).
- `gelu`: used as the first MLP Dense's `activation`. On TensorFlow it is
  applied as is, so that grappler's remapper (oneDNN on CPU) fuses
  MatMul + BiasAdd + GELU into one kernel; it does so only when the GELU ops
  share the BiasAdd's name scope, which is why the GELU must be the Dense's
  activation rather than a call after the layer. PyTorch also takes it
  as is: its GELU kernels compute a bfloat16 tensor in float32 internally
  and round once, so the result is bitwise that of a float32 GELU between
  two casts, and so is the gradient of the tanh form (the exact form's
  gradient since torch 2.14 within one bfloat16 rounding of the gradient's
  scale), without the two casts' passes over the
  widest tensor of the block (measured in training, 2-core CPU: 3.5x less
  time for GELU forward and backward under `mixed_bfloat16`). On JAX it runs
  in float32 between casts, which XLA fuses into the same loop.

One branch here serves another layer: `checked_quotient`, the patch grid of an image side
known only when a traced function runs. Only TensorFlow traces with unknown sides (JAX and
PyTorch always see concrete shapes), and `keras.ops` has no assertion: the check that the side
divides is a TensorFlow assertion, here so that every backend branch of the library is in this
one module (`PositionEmbedding` of a model that takes images of any size calls it).

What each of these measured, on which machine and at which commit, is in
`benchmarks/results/cpu_2core_block_kernels.md`.
"""

import keras
from keras import ops


def _tensorflow():
    return keras.backend.backend() == "tensorflow"


def attention(qkv, batch, length, num_heads, compute_dtype, dropout=None,
              return_weights=False, first_query_only=False):
    """Multi-head scaled dot-product attention of fused q|k|v projections.

    Args:
        qkv: tensor (B * T, 3 * D). Queries, keys and values of B sequences of
            T tokens, concatenated along the last axis in that order, each
            (B * T, D) split into `num_heads` heads of D / num_heads.
        batch: int or scalar tensor. B.
        length: int or scalar tensor. T.
        num_heads: int. Number of heads.
        compute_dtype: str. The calling layer's compute dtype; the dtype of
            the output.
        dropout: callable or None. Applied to the attention probabilities
            (B, H, T, T), e.g. an active `keras.layers.Dropout`. None for no
            dropout, which lets JAX and PyTorch use their fused kernels.
            Defaults to None.
        return_weights: bool. Also return the attention weights. Defaults to
            False.
        first_query_only: bool. Attend from the first token only (the
            [class] token): its query against all T keys and values.
            Defaults to False.

    Returns:
        `(out, weights)`: out (B * Q, D), the heads' outputs concatenated per
        token (before the output projection), Q = 1 with `first_query_only`
        else T; weights (B, H, Q, T), float32, after softmax, or None unless
        `return_weights`.

    Example:

    >>> qkv = np.random.default_rng(0).standard_normal((2 * 5, 3 * 8))
    >>> out, weights = attention(qkv.astype("float32"), 2, 5, num_heads=2,
    ...                          compute_dtype="float32", return_weights=True)
    >>> tuple(out.shape), tuple(weights.shape)
    ((10, 8), (2, 2, 5, 5))
    """
    hidden_dim = qkv.shape[-1] // 3
    head_dim = hidden_dim // num_heads
    # q, k and v are split with unstack, whose gradient is one stack, not
    # three zero-padded slice gradients.
    qkv = ops.reshape(qkv, (batch, length, 3, num_heads, head_dim))
    explicit = return_weights or dropout is not None
    if not explicit and not _tensorflow():
        query, key, value = ops.unstack(qkv, 3, axis=2)
        if first_query_only:
            query = query[:, :1]
        out = ops.dot_product_attention(query, key, value)
        weights = None
    else:
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))
        query, key, value = ops.unstack(qkv, 3, axis=0)
        if first_query_only:
            query = query[:, :, :1]
        # The scale goes on the queries, the smaller tensor.
        query = query * ops.cast(head_dim**-0.5, query.dtype)
        logits = ops.einsum("bhtd,bhsd->bhts", query, key)
        if return_weights or not _tensorflow():
            weights = ops.softmax(ops.cast(logits, "float32"), axis=-1)
            probs = ops.cast(weights, compute_dtype)
        else:
            weights = None
            probs = ops.softmax(logits, axis=-1)
        if dropout is not None:
            probs = dropout(probs)
        out = ops.einsum("bhts,bhsd->bhtd", probs, value)
        out = ops.transpose(out, (0, 2, 1, 3))
    out = ops.reshape(out, (-1, hidden_dim))
    return out, (weights if return_weights else None)


def layer_norm(norm, x):
    """The LayerNorm of `norm`'s weights, computed fastest for the backend.

    Args:
        norm: a built `keras.layers.LayerNormalization` over the last axis,
            with scale and centre (its gamma, beta and epsilon are used).
        x: tensor (N, D) in `norm`'s compute dtype.

    Returns:
        Tensor (N, D) in `norm`'s compute dtype: `norm(x)` up to float32
        rounding.

    Example:

    >>> norm = keras.layers.LayerNormalization(epsilon=1e-6)
    >>> norm.build((None, 4))
    >>> out = layer_norm(norm, np.array([[1.0, 1.0, 3.0, 3.0]], "float32"))
    >>> np.round(keras.ops.convert_to_numpy(out), 4)
    array([[-1., -1.,  1.,  1.]], dtype=float32)
    """
    if not _tensorflow():
        return norm(x)
    x = ops.cast(x, "float32")
    centred = x - ops.mean(x, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
    out = centred * ops.rsqrt(variance + norm.epsilon)
    out = out * ops.cast(norm.gamma, "float32") + ops.cast(norm.beta, "float32")
    return ops.cast(out, norm.compute_dtype)


def gelu(x, approximate):
    """GELU for use as a Dense layer's activation, in the output's dtype.

    Args:
        x: tensor, the Dense layer's pre-activation output.
        approximate: bool. The tanh approximation (True) or the exact erf
            form (False).

    Returns:
        GELU(x), same shape and dtype as x.

    Example:

    >>> out = gelu(np.array([-1.0, 0.0, 2.0], "float32"), approximate=False)
    >>> np.round(keras.ops.convert_to_numpy(out), 4)
    array([-0.1587,  0.    ,  1.9545], dtype=float32)
    """
    if keras.backend.backend() in ("tensorflow", "torch"):
        return ops.gelu(x, approximate=approximate)
    out = ops.gelu(ops.cast(x, "float32"), approximate=approximate)
    return ops.cast(out, x.dtype)


def checked_quotient(side, step, message):
    """`side // step` of a traced image side, failing when the function runs if it does not divide.

    Args:
        side: scalar tensor. An image side unknown when the function was traced (TensorFlow).
        step: int. The patch size (a hybrid's feature-map stride).
        message: str. The error when `side % step != 0`.

    Returns:
        Scalar tensor `side // step`.
    """
    if not _tensorflow():
        # JAX and PyTorch trace with concrete sides: the caller divides ints.
        return side // step
    import tensorflow as tf

    check = tf.debugging.assert_equal(side % step, 0, message=message)
    with tf.control_dependencies([check]):
        return tf.identity(side // step)
