"""Probing a model: every block's tokens and attention weights from the model's own layers.

`intermediate_outputs` reruns a Functional model's own layers (`keras.models.clone_model` with
every layer reused: no second copy of the model code or of its weights) and asks the selected
`TransformerBlock`s for their attention weights. Only that call computes them: a normal
`model(images)` keeps the fused attention kernels. `transformer_blocks` and `token_layout` say
which blocks a model has and how its tokens map onto the patch grid.
"""

import weakref

import keras
import numpy as np
from keras import ops

from keras_vit import model_layers
from keras_vit.layers.position_embedding import PositionEmbedding

__all__ = ["intermediate_outputs", "token_layout", "transformer_blocks"]

def transformer_blocks(model):
    """The `TransformerBlock` layers of `model`, in the order they run.

    Args:
        model: a Functional `keras.Model` built from `keras_vit` layers, such as
            `keras_vit.ViT(...)`.

    Returns:
        list of `TransformerBlock`; block i of the other functions is item i.

    Raises:
        ValueError: if `model` is not a Functional model or has no
            `TransformerBlock` among its layers.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> [block.name for block in transformer_blocks(model)]
    ['encoder_block_0']
    """
    if not _is_functional(model):
        raise ValueError(
            f"Expected a Functional keras.Model such as keras_vit.ViT(...), "
            f"received {type(model).__name__} {getattr(model, 'name', model)!r}"
        )
    blocks = model_layers.transformer_blocks(model)
    if not blocks:
        raise ValueError(
            f"Model {model.name!r} has no TransformerBlock layer among its "
            f"layers {[layer.name for layer in model.layers]}"
        )
    return blocks


def intermediate_outputs(model, images, *, blocks=None, attention=True):
    """Runs `model` on `images` and returns every block's tokens and attention.

    The model's own layers run as in `model(images)`, in the model's own graph
    (`keras.models.clone_model` with every layer reused, so no weight is
    copied), except that the selected `TransformerBlock`s also return their
    attention weights. Whatever comes before the blocks (a patch embedding, a
    hybrid ResNet stem, ...) runs unchanged, so this works for any `keras_vit`
    model. Dropout and stochastic depth are off.

    Args:
        model: a Functional `keras.Model` with `TransformerBlock` layers, e.g.
            `keras_vit.ViT(...)`.
        images: array (B, H, W, C) of the model's input size, as the model
            takes them (float, in [-1, 1]).
        blocks: None (every block) or a list of block indices, negative
            indices counting from the end. Defaults to None.
        attention: bool. Also return the attention weights; False keeps the
            fused attention path. Defaults to True.

    Returns:
        dict of NumPy arrays: `"blocks"`, the block indices returned
        (non-negative); `"tokens"`, per selected block, its output tokens
        (B, T, D), T counting the tokens before the patch tokens ([class],
        distillation, registers: `token_layout`) if the model has them;
        `"attention"`, per selected block, its attention weights
        (B, heads, T, T) after softmax (rows sum to 1), float32, or None
        with `attention=False`; `"features"`, the input of the `head` layer
        (B, D'): the pooled representation or, with a pre-logits layer, its
        output, and the model's output when it has no `head` layer
        (`include_top=False`); `"outputs"`, the model's output (logits).

    Raises:
        ValueError: a block index out of range, or images that are not a batch
            of the model's input size.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> out = intermediate_outputs(model, np.zeros((2, 16, 16, 3)))
    >>> out["tokens"][0].shape, out["attention"][0].shape  # 1 + (16 / 4)^2 tokens
    ((2, 17, 32), (2, 2, 17, 17))
    """
    all_blocks = transformer_blocks(model)
    selected = _block_indices(model, all_blocks, blocks)
    images = _check_images(model, images)
    probe = _probe(model, tuple(selected), attention)
    values = probe(images, training=False)
    outputs = [values[f"output_{i}"] for i in range(len(model.outputs))]
    outputs = outputs[0] if len(outputs) == 1 else outputs
    return {
        "blocks": list(selected),
        "tokens": [_numpy(values[f"tokens_{i}"]) for i in selected],
        "attention": (
            [_numpy(values[f"attention_{i}"], "float32") for i in selected] if attention else None
        ),
        "features": _numpy(values["features"]) if "features" in values else _numpy(outputs),
        "outputs": _numpy(outputs),
    }


# Probe models by model, then by (selected blocks, attention). A probe calls the model's layers
# on new symbolic inputs, which each layer records, so building one per call would grow every
# layer's record with each call (attention_rollout and mean_attention_distance make one call per
# batch). Weak keys: a model's probes go with it.
_PROBES = weakref.WeakKeyDictionary()


def _probe(model, selected, attention):
    """A Functional model sharing `model`'s layers that returns what intermediate_outputs needs.

    Its outputs are a dict: `output_{i}` (the model's outputs), `tokens_{b}` and, with
    `attention`, `attention_{b}` for each selected block b, and `features` (the input of the
    `head` layer) when the model has a head.
    """
    probes = _PROBES.setdefault(model, {})
    key = (selected, attention)
    if key in probes:
        return probes[key]
    position = {id(block): i for i, block in enumerate(transformer_blocks(model))}
    last_only = model_layers.last_block_computes_class_token_only(model)
    head = _head_layer(model)
    wanted = set(selected)
    captured = {}

    def call_function(layer, *args, **kwargs):
        index = position.get(id(layer))
        if layer is head:
            captured["features"] = args[0]
        if index is None:
            return layer(*args, **kwargs)
        if index in wanted and attention:
            out, captured[f"attention_{index}"] = _WithAttentionWeights(layer)(args[0])
        else:
            # The chain's own call (`model_layers.call_layer`), except that a selected block
            # returns all its tokens, also a model's last block, which otherwise computes the
            # [class] token alone.
            out = model_layers.call_layer(
                layer, args[0], None, training=False,
                first_token_only=last_only and index == len(position) - 1 and index not in wanted)
        if index in wanted:
            captured[f"tokens_{index}"] = out
        return out

    # Every layer is reused (`clone_function` returns it), so the clone runs the model's own
    # weights; only the calls of the selected blocks differ. `call_function` sees each layer
    # with the arguments it was called with when the model was built. The graph is cloned from
    # a new uncompiled Functional model over the same tensors: clone_model would compile the
    # clone of a compiled model again (and build its optimizer's slots for every weight).
    graph = keras.Model(model.inputs, model.outputs)
    clone = keras.models.clone_model(
        graph, clone_function=lambda layer: layer, call_function=call_function
    )
    outputs = {f"output_{i}": output for i, output in enumerate(clone.outputs)}
    outputs.update(captured)
    probes[key] = keras.Model(clone.inputs, outputs, name=f"{model.name}_intermediates")
    return probes[key]


class _WithAttentionWeights(keras.layers.Layer):
    """Calls a `TransformerBlock` (its weights, not a copy) asking for its attention weights.

    Calling the block itself with `return_attention_weights=True` inside `clone_model`'s
    `call_function` gives the right (tokens, weights) specs (`compute_output_spec`), yet the
    probe model then fails to build: "Output with path `attention_0` is not connected to
    `inputs`" (tried on all three backends, 2026-12-03). Called through this layer, whose
    output spec Keras traces, both outputs stay connected.
    """

    def __init__(self, block, **kwargs):
        super().__init__(name=f"{block.name}_with_attention", dtype=block.dtype_policy, **kwargs)
        self.block = block

    def call(self, inputs):
        return model_layers.call_layer(
            self.block, inputs, None, training=False, return_attention_weights=True)


def token_layout(model, image_size=None):
    """The number of prefix tokens and the patch grid of `model`'s tokens.

    The prefix is every token before the patch tokens: the [class] token, a distillation
    token (DeiT) and register tokens (DINOv2 with registers, which carry no position
    embedding), as `keras_vit.model_layers.token_prefix` reads them; so the patch tokens of
    `intermediate_outputs`' `"tokens"` are `tokens[:, num_prefix_tokens:]`, in row-major
    order on the grid. The grid is the `PositionEmbedding` layer's stored grid, or for a
    model of any image size (`ViT(dynamic_image_size=True)`) given `image_size`, the grid of
    such images.

    Args:
        model: a `keras_vit` model.
        image_size: None or (height, width) of the images the tokens come from.

    Returns:
        (num_prefix_tokens, (grid_height, grid_width)).

    Example:

    >>> token_layout(keras_vit.ViT("mu/4", image_size=(16, 32), num_classes=10))
    (1, (4, 8))
    """
    num_prefix = model_layers.token_prefix(model).num_tokens
    layer = next(layer for layer in model.layers if isinstance(layer, PositionEmbedding))
    if layer.stride is not None and image_size is not None:
        grid = (image_size[0] // layer.stride[0], image_size[1] // layer.stride[1])
        return num_prefix, grid
    return num_prefix, tuple(layer.grid_size)


# -- Helpers, also of `analyses` ----------------------------------------------------------


def _numpy(value, dtype=None):
    array = ops.convert_to_numpy(value)
    return array.astype(dtype) if dtype is not None else array


def _check_images(model, images):
    expected = tuple(model.inputs[0].shape)
    shape = tuple(getattr(images, "shape", np.shape(images)))
    fits = len(shape) == len(expected) and all(
        e is None or e == s for e, s in zip(expected[1:], shape[1:])
    )
    if not fits:
        raise ValueError(
            f"Images of shape {shape} do not fit model {model.name!r}, which takes "
            f"{expected} (batch, height, width, channels); resize them to the "
            f"model's input size first"
        )
    return ops.convert_to_tensor(images, dtype=model.inputs[0].dtype)


# -- Helpers ------------------------------------------------------------------------------


def _block_indices(model, blocks, requested):
    depth = len(blocks)
    if requested is None:
        return list(range(depth))
    if isinstance(requested, int):
        requested = [requested]
    indices = []
    for index in requested:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not (
            -depth <= index < depth
        ):
            raise ValueError(
                f"Block index {index!r} is out of range: model {model.name!r} has "
                f"{depth} TransformerBlock(s), valid indices are 0..{depth - 1} "
                f"(or -{depth}..-1)"
            )
        indices.append(int(index) % depth)
    return indices


def _head_layer(model):
    return model_layers.find_layer(model, "head")


def _is_functional(model):
    # A Functional model: a keras.Model built from inputs and outputs, which `clone_model` can
    # rerun with other calls. Sequential models have inputs too, but clone_model takes no
    # call_function for them; subclassed models have none.
    return (
        isinstance(model, keras.Model)
        and not isinstance(model, keras.Sequential)
        and hasattr(model, "inputs")
        and hasattr(model, "outputs")
    )
