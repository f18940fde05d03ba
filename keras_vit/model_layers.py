"""A ViT's layers by role: the one module that knows how `keras_vit.ViT` names its layers.

`keras_vit.ViT` builds a chain of named layers (`vit.py`); everything that reads a model back
(fine-tuning, checkpoints, explanations, few-shot features, the training binary) finds its parts
here, by role, instead of by string in each module:

| role                 | layer name           | class                      |
|----------------------|----------------------|----------------------------|
| `preprocessing`      | `preprocessing`      | `Rescaling` (raw-pixel input) |
| `patch_embedding`    | `patch_embedding`    | `PatchEmbedding`           |
| `class_token`        | `class_token`        | `ClassToken`               |
| `distillation_token` | `distillation_token` | `ClassToken` (DeiT)        |
| `position_embedding` | `position_embedding` | `PositionEmbedding`        |
| `register_tokens`    | `register_tokens`    | `RegisterTokens` (DINOv2 with registers) |
| `pre_norm`           | `pre_norm`           | `LayerNormalization` (CLIP) |
| (blocks)             | `encoder_block_{i}`  | `TransformerBlock`         |
| `encoder_norm`       | `encoder_norm`       | `LayerNormalization`       |
| `pooling`            | `pooling`            | `TokenPooling`, or `MAPHead` (SigLIP) |
| `pre_logits`         | `pre_logits`         | `Dense` (tanh)             |
| `head`               | `head`               | `Dense`                    |
| `conv_root`          | `conv_root`          | `StdConv2D` (hybrids)      |
| `gn_root`            | `gn_root`            | `GroupNormalization` (hybrids) |

`token_prefix` says which tokens come before the patch tokens ([class], distillation, registers).

`call_layer` is how the chain is called (a dynamic-size `PositionEmbedding` also takes the
images; the last block of a "token"-pooling model computes the [class] token alone): `ViT` builds
through it and `keras_vit.finetune.adapt` rebuilds through it.

Only public Keras APIs are used: `model.layers` (topological order), `get_layer`, and each
layer's `input` / `output` (the tensors of its first call).
"""

import dataclasses

import keras

from keras_vit.layers.class_token import ClassToken
from keras_vit.layers.map_head import MAPHead
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.pooling import TokenPooling
from keras_vit.layers.position_embedding import PositionEmbedding
from keras_vit.layers.register_tokens import RegisterTokens
from keras_vit.layers.std_conv import StdConv2D
from keras_vit.layers.transformer_block import TransformerBlock

# role -> (layer name, class the layer must be an instance of).
ROLES = {
    "preprocessing": ("preprocessing", keras.layers.Rescaling),
    "patch_embedding": ("patch_embedding", PatchEmbedding),
    "class_token": ("class_token", ClassToken),
    "distillation_token": ("distillation_token", ClassToken),
    "position_embedding": ("position_embedding", PositionEmbedding),
    "register_tokens": ("register_tokens", RegisterTokens),
    "pre_norm": ("pre_norm", keras.layers.LayerNormalization),
    "encoder_norm": ("encoder_norm", keras.layers.LayerNormalization),
    "pooling": ("pooling", (TokenPooling, MAPHead)),
    "pre_logits": ("pre_logits", keras.layers.Dense),
    "head": ("head", keras.layers.Dense),
    "conv_root": ("conv_root", StdConv2D),
    "gn_root": ("gn_root", keras.layers.GroupNormalization),
}


def block_name(index):
    """The name of Transformer block `index` (0-based) in a model `keras_vit.ViT` builds."""
    return f"encoder_block_{index}"


def find_layer(model, role):
    """The layer of `model` playing `role` (a key of `ROLES`), or None if it has none.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> find_layer(model, "head").units, find_layer(model, "pre_logits")
    (10, None)
    """
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}: expected one of {', '.join(ROLES)}")
    name, cls = ROLES[role]
    try:
        layer = model.get_layer(name)
    except ValueError:
        return None
    return layer if isinstance(layer, cls) else None


def transformer_blocks(model):
    """The `TransformerBlock` layers of `model`, in the order they run."""
    # Functional models list their layers in topological order.
    return [layer for layer in model.layers if isinstance(layer, TransformerBlock)]


def computes_class_token_only(pooling, index, depth):
    """Whether block `index` of `depth` computes its first token only, under `pooling`.

    The last block of a model that pools the [class] token (`"token"`): nothing after it reads
    its other tokens, so it computes the [class] token alone (`first_token_only`), 6.3% of a
    ViT-S/16 or B/16 training step's matmul FLOPs saved, the outputs unchanged.
    """
    return pooling == "token" and index == depth - 1


def last_block_computes_class_token_only(model):
    """Whether `model`'s last block computes its first token only (`computes_class_token_only`).

    True when the model pools the [class] token (`TokenPooling("token")`): `ViT` calls its
    last block with `first_token_only=True`, and a rebuilt chain (`keras_vit.finetune.adapt`)
    should too.
    """
    pooling = find_layer(model, "pooling")
    depth = len(transformer_blocks(model))
    return pooling is not None and depth > 0 and computes_class_token_only(
        pooling.pooling, depth - 1, depth)


@dataclasses.dataclass(frozen=True)
class TokenPrefix:
    """The tokens before the patch tokens of a ViT's sequence, in this order.

    `[class] (if any), distillation (DeiT, if any), registers (R), patches...`: `keras_vit.ViT`
    prepends the distillation token and then the [class] token, then inserts the registers
    after both (`RegisterTokens`), so that the patch tokens start at `num_tokens`.

    Attributes:
        class_token: bool. Token 0 is the [class] token ("gap" and "map" models have none).
        distillation_token: bool. The token after the [class] token is DeiT's distillation
            token.
        num_registers: int. Register tokens (DINOv2 with registers) after those.
    """

    class_token: bool
    distillation_token: bool
    num_registers: int

    @property
    def num_tokens(self):
        """All tokens before the patch tokens: the index of the first patch token."""
        return int(self.class_token) + int(self.distillation_token) + self.num_registers

    @property
    def registers(self):
        """The slice of the register tokens in the sequence."""
        start = int(self.class_token) + int(self.distillation_token)
        return slice(start, start + self.num_registers)


def token_prefix(model):
    """The `TokenPrefix` of `model`: its tokens before the patch tokens.

    Read from the layers: the `PositionEmbedding`'s prefix (the tokens it embeds before the
    patches: the [class] token, then a distillation token if the model has one, as
    `keras_vit.ViT` orders them) and the `RegisterTokens` layer's count.

    Raises:
        ValueError: `model` has no `PositionEmbedding` layer, or a prefix keras_vit does not
            build (more than [class] and distillation tokens, or registers placed elsewhere).

    Example:

    >>> spec = dataclasses.replace(keras_vit.variants.parse_variant("mu/4"), num_registers=4)
    >>> prefix = token_prefix(keras_vit.ViT(spec, image_size=16, num_classes=0))
    >>> prefix.class_token, prefix.num_registers, prefix.num_tokens
    (True, 4, 5)
    """
    position = [layer for layer in model.layers if isinstance(layer, PositionEmbedding)]
    if not position:
        raise ValueError(
            f"Model {model.name!r} has no PositionEmbedding layer, so its patch "
            f"grid is unknown"
        )
    embedded = position[0].num_prefix_tokens
    registers = [layer for layer in model.layers if isinstance(layer, RegisterTokens)]
    num_registers = sum(layer.num_registers for layer in registers)
    if embedded > 2 or len(registers) > 1 or any(
            layer.num_prefix_tokens != embedded for layer in registers):
        raise ValueError(
            f"Model {model.name!r} has a token prefix keras_vit does not build: "
            f"{embedded} position-embedded prefix token(s) (expected [class] and at most a "
            f"distillation token) and register tokens after "
            f"{[layer.num_prefix_tokens for layer in registers]} token(s)"
        )
    return TokenPrefix(class_token=embedded >= 1, distillation_token=embedded == 2,
                       num_registers=num_registers)


def call_layer(layer, x, images, *, first_token_only=False, **kwargs):
    """Calls one layer of a ViT's chain on `x` as `keras_vit.ViT` calls it.

    The one place that knows the chain's two calls with more than the previous output: a
    `PositionEmbedding` with a `stride` (`ViT(dynamic_image_size=True)`) also takes the
    model's `images`, whose shape gives each call's patch grid; a `TransformerBlock` called
    with `first_token_only` (the last block, `computes_class_token_only`) returns the [class]
    token alone. `keras_vit.vit.build` and `keras_vit.finetune.adapt` call every layer through
    it.

    Args:
        layer: a layer of the chain.
        x: the previous layer's output.
        images: the model's input images.
        first_token_only: bool. For a `TransformerBlock`: compute the first token only.
            Defaults to False.
        **kwargs: further call arguments (`training`, ...).

    Returns:
        The layer's output.
    """
    if isinstance(layer, PositionEmbedding) and layer.stride is not None:
        return layer(x, images=images, **kwargs)
    if isinstance(layer, TransformerBlock):
        return layer(x, first_token_only=bool(first_token_only), **kwargs)
    return layer(x, **kwargs)


def num_classes(model):
    """Outputs of the model's `head` layer; None for a model without one."""
    head = find_layer(model, "head")
    return None if head is None else head.units


def representation_size(model):
    """Width of the model's `pre_logits` layer; None for a model without one."""
    pre_logits = find_layer(model, "pre_logits")
    return None if pre_logits is None else pre_logits.units


def head_layer(num_classes, *, dtype=None):
    """A new zero-initialized prediction head: `Dense(num_classes)` named `head`.

    Zero kernel and bias (Section 3.2 of the paper: the fine-tuning head is a zero-initialized
    D x K layer). Its dtype defaults to float32 under a mixed-precision global policy, so that
    the logits, the softmax and the loss are computed in float32.
    """
    if dtype is None:
        policy = keras.config.dtype_policy()
        dtype = "float32" if policy.compute_dtype != policy.variable_dtype else None
    return keras.layers.Dense(
        num_classes, kernel_initializer="zeros", name=ROLES["head"][0], dtype=dtype)


def layer_chain(model):
    """`model`'s layers in call order, checked to be the chain `keras_vit.ViT` builds.

    Every keras_vit model is a chain: one image input, each layer called once on the previous
    layer's output, the last layer's output the model's output (hybrids too: their ResNet stem
    is a chain of units).

    Returns:
        list of layers, the `InputLayer` first.

    Raises:
        ValueError: `model` is not a Functional model, has not exactly one input and one output,
            has no `PositionEmbedding` or no `TransformerBlock`, is not a chain, or takes images
            of an unknown size without reading each call's grid from them (its
            `PositionEmbedding` also takes the images: `ViT(dynamic_image_size=True)`).
    """
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise ValueError(
            f"Expected a keras_vit ViT (a Functional keras.Model), received "
            f"{type(model).__name__}"
        )
    layers = list(model.layers)
    kinds = [type(layer).__name__ for layer in layers[:6]]
    if (
        not layers
        or not isinstance(layers[0], keras.layers.InputLayer)
        or len(model.inputs) != 1
        or len(model.outputs) != 1
        or sum(isinstance(l, PositionEmbedding) for l in layers) != 1
        or not any(isinstance(l, TransformerBlock) for l in layers)
    ):
        raise ValueError(
            f"Model {model.name!r} is not a keras_vit ViT: expected one image input, "
            f"one PositionEmbedding and TransformerBlocks, found layers {kinds}..."
        )
    # `layer.input` / `layer.output` are the tensors of a layer's first call. If each layer's
    # first call takes the previous layer's first output and the model's output is the last
    # layer's, the path from input to output is this chain, whatever other calls (a layer reused
    # in another model) a layer has.
    previous = layers[0]
    dynamic = False
    for layer in layers[1:]:
        inputs = layer.input
        if isinstance(layer, PositionEmbedding) and isinstance(inputs, (list, tuple)):
            # A model of any image size (`ViT(dynamic_image_size=True)`): the layer also takes
            # the model's images, whose shape gives each call's patch grid.
            dynamic = len(inputs) == 2 and inputs[1] is layers[0].output
            inputs = inputs[0]
        if inputs is not previous.output:
            raise ValueError(
                f"Model {model.name!r} is not a keras_vit ViT: layer {layer.name!r} "
                f"does not take the output of {previous.name!r} (keras_vit models are "
                f"a chain of layers)"
            )
        previous = layer
    if model.outputs[0] is not previous.output:
        raise ValueError(
            f"Model {model.name!r} is not a keras_vit ViT: its output is not the output of "
            f"its last layer {previous.name!r} (keras_vit models are a chain of layers)"
        )
    if len(model.input_shape) != 4 or (None in model.input_shape[1:] and not dynamic):
        raise ValueError(
            f"Model {model.name!r} must take images of a fixed size, its input "
            f"shape is {model.input_shape}"
        )
    return layers
