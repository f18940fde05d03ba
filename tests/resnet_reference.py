"""NumPy (float64) references of the hybrid ViT's ResNet, written from the
formulas of the reference implementation (`vit_jax/models_resnet.py`)."""

import numpy as np
from layer_testing import to_numpy


def numpy_standardize(kernel, eps):
    """The reference formula: per output channel over (kh, kw, in), eps on the std."""
    mean = kernel.mean(axis=(0, 1, 2))
    std = kernel.std(axis=(0, 1, 2))  # divisor n, as jnp.std
    return (kernel - mean) / (std + eps)


def numpy_conv_same(x, kernel, stride):
    """Cross-correlation with TF/XLA "SAME" padding (extra row/column at the end)."""
    batch, height, width, _ = x.shape
    k = kernel.shape[0]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pads = []
    for size, out in ((height, out_h), (width, out_w)):
        total = max((out - 1) * stride + k - size, 0)
        pads.append((total // 2, total - total // 2))
    padded = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out = np.zeros((batch, out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j] = np.tensordot(window, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return out


def numpy_group_norm(x, gamma, beta, groups, eps):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta


def numpy_unit(unit, x):
    """The reference ResidualUnit, from the layer's weights, in float64."""
    def conv(layer, y):
        kernel = to_numpy(layer.kernel).astype("float64")
        return numpy_conv_same(y, numpy_standardize(kernel, layer.epsilon), layer.strides)

    def norm(layer, y):
        return numpy_group_norm(y, to_numpy(layer.gamma), to_numpy(layer.beta),
                                unit.groups, unit.epsilon)

    relu = lambda y: np.maximum(y, 0)  # noqa: E731
    shortcut = x
    if unit.conv_proj is not None:
        shortcut = norm(unit.gn_proj, conv(unit.conv_proj, x))
    y = relu(norm(unit.gn1, conv(unit.conv1, x)))
    y = relu(norm(unit.gn2, conv(unit.conv2, y)))
    y = norm(unit.gn3, conv(unit.conv3, y))
    return relu(shortcut + y)
