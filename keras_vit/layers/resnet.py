"""The ResNet of the paper's hybrid models: bottleneck units and the stem.

Section 3.1 of [the ViT paper](https://arxiv.org/abs/2010.11929), "Hybrid
Architecture": the input sequence is taken from a CNN feature map instead of
raw image patches. The CNN is the ResNet of BiT (Kolesnikov et al., 2020):
weight-standardized convolutions (`StdConv2D`) and GroupNorm instead of
BatchNorm. `resnet_stem` applies it inside a Functional model; `ViT("R50+B/16")`
calls it (see `keras_vit.variants`).

Layer names, fixed so that the reference checkpoints map onto them (the
`.npz` keys of `vit_jax`, whose ResNet modules sit at the top level of the
model, beside `embedding` and `Transformer`):

| `.npz` key                        | Keras weight                                       |
|-----------------------------------|----------------------------------------------------|
| `conv_root/kernel`                | `model.get_layer("conv_root").kernel`              |
| `gn_root/scale`, `gn_root/bias`   | `model.get_layer("gn_root").gamma`, `.beta`        |
| `block{s}/unit{u}/conv{i}/kernel` | `model.get_layer("block{s}_unit{u}").conv{i}.kernel` |
| `block{s}/unit{u}/gn{i}/scale`    | `model.get_layer("block{s}_unit{u}").gn{i}.gamma`  |
| `block{s}/unit{u}/gn{i}/bias`     | `model.get_layer("block{s}_unit{u}").gn{i}.beta`   |
| `block{s}/unit{u}/conv_proj/kernel` | `...("block{s}_unit{u}").conv_proj.kernel` (first unit of a stage only) |
| `block{s}/unit{u}/gn_proj/{scale,bias}` | `...("block{s}_unit{u}").gn_proj.gamma`, `.beta` |

with s and u 1-based and i in 1, 2, 3. Kernels have the same (kh, kw, in,
out) layout in both and are stored raw (standardized at every call). Some
released files store GroupNorm scales and biases with extra leading 1-dims,
(1, 1, 1, C) instead of (C,): reshape them to (C,). The ResNet convolutions
have no bias; the patch embedding on the feature map (`embedding/kernel`,
(1, 1, 1024, D) for the R50 stride-16 map) is the `patch_embedding` layer as
in plain ViTs.
"""

import keras
from keras import ops

from keras_vit.layers.std_conv import StdConv2D, check_epsilon
from keras_vit.validation import check_positive_int

# GroupNorm as in the reference ResNet (`flax.linen.GroupNorm` defaults):
# 32 groups, epsilon 1e-6 added to the variance.
GROUPS = 32
GN_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="keras_vit")
class BottleneckUnit(keras.layers.Layer):
    """A ResNet bottleneck unit with weight-standardized convs and GroupNorm.

    The reference hybrid's `ResidualUnit` (He et al., 2016, with BiT's
    normalization; the stride sits on the 3x3 conv, "ResNet v1.5"):

        y = ReLU(GN1(conv1 1x1(x)))
        y = ReLU(GN2(conv2 3x3, stride(y)))
        y = GN3(conv3 1x1, 4 * filters(y))
        out = ReLU(shortcut(x) + y)

    The shortcut is `GN_proj(conv_proj 1x1, stride(x))` when the unit changes
    the shape (input channels != 4 * filters, or stride > 1), the identity
    otherwise. GN3's scale starts at zero, as in the reference, so each unit
    starts close to its shortcut.

    Args:
        filters: int. Bottleneck width; the unit outputs 4 * filters channels.
        strides: int. Stride of the 3x3 conv and of the projection.
            Defaults to 1.
        groups: int. GroupNorm groups; must divide `filters`. Defaults to 32.
        epsilon: float. GroupNorm epsilon. Defaults to 1e-6.
        kernel_initializer: initializer of the conv kernels. Defaults to
            `"lecun_normal"`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (B, H, W, C) feature maps.

    Returns:
        (B, ceil(H / strides), ceil(W / strides), 4 * filters).

    Example:

    >>> unit = BottleneckUnit(filters=32, strides=2)
    >>> tuple(unit(np.zeros((2, 8, 6, 64))).shape)
    (2, 4, 3, 128)
    >>> unit.conv_proj is not None
    True
    """

    def __init__(
        self,
        filters,
        strides=1,
        groups=GROUPS,
        epsilon=GN_EPSILON,
        kernel_initializer="lecun_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("filters", filters)
        check_positive_int("strides", strides)
        check_positive_int("groups", groups)
        check_epsilon(epsilon)
        if filters % groups != 0:
            raise ValueError(
                f"filters {filters} is not divisible by groups {groups}: "
                f"GroupNorm needs whole groups of channels"
            )
        self.filters = filters
        self.strides = strides
        self.groups = groups
        self.epsilon = epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv_proj = None
        self.gn_proj = None

    def _conv(self, filters, kernel_size, strides, name):
        return StdConv2D(
            filters,
            kernel_size,
            strides=strides,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name, gamma_initializer="ones"):
        return keras.layers.GroupNormalization(
            groups=self.groups,
            epsilon=self.epsilon,
            gamma_initializer=gamma_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"{self.__class__.__name__} expects inputs of shape (batch, "
                f"height, width, channels) with known channels, received "
                f"shape {tuple(input_shape)}"
            )
        out_channels = 4 * self.filters
        self.conv1 = self._conv(self.filters, 1, 1, "conv1")
        self.conv2 = self._conv(self.filters, 3, self.strides, "conv2")
        self.conv3 = self._conv(out_channels, 1, 1, "conv3")
        self.gn1 = self._norm("gn1")
        self.gn2 = self._norm("gn2")
        self.gn3 = self._norm("gn3", gamma_initializer="zeros")
        shape = input_shape
        for conv, norm in ((self.conv1, self.gn1), (self.conv2, self.gn2),
                           (self.conv3, self.gn3)):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            norm.build(shape)
        if input_shape[-1] != out_channels or self.strides != 1:
            self.conv_proj = self._conv(out_channels, 1, self.strides, "conv_proj")
            self.conv_proj.build(input_shape)
            self.gn_proj = self._norm("gn_proj")
            self.gn_proj.build(self.conv_proj.compute_output_shape(input_shape))

    def call(self, inputs):
        shortcut = inputs
        if self.conv_proj is not None:
            shortcut = self.gn_proj(self.conv_proj(inputs))
        y = ops.relu(self.gn1(self.conv1(inputs)))
        y = ops.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return ops.relu(shortcut + y)

    def compute_output_shape(self, input_shape):
        def length(size):
            return None if size is None else -(-size // self.strides)

        return (input_shape[0], length(input_shape[1]), length(input_shape[2]),
                4 * self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "groups": self.groups,
                "epsilon": self.epsilon,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config


def stem_stride(units):
    """Pixels per feature-map cell after the root and `len(units)` stages.

    The root halves the resolution twice (7x7 stride-2 conv, 3x3 stride-2
    max pool); every stage after the first halves it once more.
    """
    return 4 * 2 ** (len(units) - 1)


def resnet_stem(inputs, units, width=64):
    """Applies the hybrid ViT's ResNet to a Functional tensor of images.

    Root (`conv_root`: 7x7 stride-2 `StdConv2D` with `width` filters,
    `gn_root`, ReLU, 3x3 stride-2 max pool with "same" padding), then one
    stage per entry of `units`: stage s (1-based) has `units[s - 1]`
    `BottleneckUnit`s of bottleneck width `width * 2 ** (s - 1)`, the first
    with stride 2 except in stage 1; units are named `block{s}_unit{u}`.
    With `units=(3, 4, 9)` (R50 with its fourth stage folded into the third,
    the paper's stride-16 hybrid) a 384x384 image becomes a 24x24x1024 map.

    Args:
        inputs: a (B, H, W, C) `keras.KerasTensor`.
        units: sequence of positive ints. Units per stage, at least one
            stage.
        width: int. Filters of the root conv; a multiple of 32 (GroupNorm
            groups). Defaults to 64 (ResNet-50 "x1").

    Returns:
        The (B, H / s, W / s, 4 * width * 2 ** (len(units) - 1)) feature map,
        s = `stem_stride(units)`.

    Example:

    >>> images = keras.Input((32, 32, 3))
    >>> tuple(resnet_stem(images, units=(1, 1, 1), width=32).shape)
    (None, 2, 2, 512)
    """
    check_units(units)
    check_width(width)
    x = StdConv2D(width, 7, strides=2, name="conv_root")(inputs)
    x = keras.layers.GroupNormalization(
        groups=GROUPS, epsilon=GN_EPSILON, name="gn_root"
    )(x)
    x = keras.layers.ReLU(name="root_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="root_pool")(x)
    for s, num_units in enumerate(units, start=1):
        for u in range(1, num_units + 1):
            x = BottleneckUnit(
                width * 2 ** (s - 1),
                strides=2 if (u == 1 and s > 1) else 1,
                name=f"block{s}_unit{u}",
            )(x)
    return x


def check_units(units):
    if (
        isinstance(units, (str, bytes))
        or not hasattr(units, "__len__")
        or len(units) == 0
        or any(not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in units)
    ):
        raise ValueError(
            f"ResNet units must be a non-empty sequence of positive integers "
            f"(units per stage), received {units!r}"
        )


def check_width(width):
    if not isinstance(width, int) or isinstance(width, bool) or width <= 0 or width % GROUPS:
        raise ValueError(
            f"ResNet width must be a positive multiple of {GROUPS} (the "
            f"GroupNorm groups), received {width!r}"
        )
