"""Activations that some ViT checkpoints were trained with, beyond Keras' own."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_vit")
def quick_gelu(x):
    """QuickGELU, `x * sigmoid(1.702 x)`: the sigmoid approximation of GELU.

    OpenAI's CLIP ([Radford et al., 2021](https://arxiv.org/abs/2103.00020))
    trained its towers with it, so their weights need it to reproduce their
    outputs (OpenCLIP's LAION models use exact GELU instead). 1.702 is the
    slope for which `sigmoid(1.702 x)` best approximates the normal CDF of
    GELU ([Hendrycks & Gimpel, 2016](https://arxiv.org/abs/1606.08415),
    Section 2). It is registered with Keras, so a layer given
    `activation=quick_gelu` survives `get_config` / `from_config` and
    `.keras` files.

    Args:
        x: tensor.

    Returns:
        Tensor of the shape and dtype of `x`.

    Example:

    >>> out = quick_gelu(np.array([-1.0, 0.0, 2.0], "float32"))
    >>> np.round(keras.ops.convert_to_numpy(out), 4)
    array([-0.1542,  0.    ,  1.9357], dtype=float32)
    >>> layer = keras.layers.Dense(4, activation=quick_gelu)
    >>> keras.layers.Dense.from_config(layer.get_config()).activation is quick_gelu
    True
    """
    x = ops.convert_to_tensor(x)
    return x * ops.sigmoid(ops.cast(1.702, x.dtype) * x)


def swiglu_gate(gate_value):
    """`silu(gate) * value` of a packed (..., 2H) tensor whose first half is the gate.

    The gating of `keras_vit.layers.SwiGLU` and of a `TransformerBlock` with
    `activation="swiglu"`, on the output of their packed input projection
    (gate first, as DINOv2, transformers and timm store it).

    Example:

    >>> out = swiglu_gate(np.array([[0.0, 2.0, 3.0, 5.0]], "float32"))
    >>> np.round(keras.ops.convert_to_numpy(out), 4)
    array([[0.   , 8.808]], dtype=float32)
    """
    hidden = ops.shape(gate_value)[-1] // 2
    return ops.silu(gate_value[..., :hidden]) * gate_value[..., hidden:]
