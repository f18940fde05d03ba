"""The paper's transfer recipe: position embeddings for a new grid, and a new head.

Section 3.2 of [the ViT paper](https://arxiv.org/abs/2010.11929): to fine-tune,
the pre-trained prediction head is replaced by a zero-initialized D x K layer,
and at a higher resolution (same patch size, longer sequence) the pre-trained
position embeddings are resized by 2-D interpolation according to their
location in the image.
"""

import keras
import numpy as np
from keras import ops

from keras_vit import interpolation as interp
from keras_vit import model_layers
from keras_vit.lora import (  # noqa: F401  (LoRA fine-tuning: public here)
    enable_lora,
    load_lora_weights,
    merge_lora,
    save_lora_weights,
)
from keras_vit.layers.position_embedding import (  # noqa: F401  (grid_of_length: public here)
    PositionEmbedding,
    grid_of_length,
    normalize_grid,
    patch_grid,
)
from keras_vit.validation import check_choice, check_int, check_positive_int


def resize_position_embeddings(
    posemb,
    new_grid,
    *,
    num_prefix_tokens=1,
    old_grid=None,
    method="bicubic",
    antialias=True,
):
    """Resizes position embeddings to another patch grid.

    The first `num_prefix_tokens` rows (the [class] token's) are copied
    unchanged; the other rows are taken as a row-major `old_grid` of
    D-vectors, resized in 2-D and flattened back in row-major order.

    The interpolation is `keras_vit.interpolation.resize_token_grid`, the
    function a `PositionEmbedding` layer uses when called on another grid, so
    both give the same numbers: float32 arithmetic whatever the input dtype,
    half-pixel centres (`align_corners=False`) for both methods, weights
    renormalized at the edges, and with `antialias=True` a widened kernel
    when shrinking; this is exactly `jax.image.resize` ("linear" / "cubic",
    Keys a = -0.5), identical on every Keras backend.

    Args:
        posemb: array of shape (1, prefix + gh * gw, D) or
            (prefix + gh * gw, D) (NumPy or a backend tensor).
        new_grid: int or (height, width). The target patch grid.
        num_prefix_tokens: int. Leading rows that belong to no grid cell
            (1 for the [class] token, 0 for mean-pooled models). Defaults
            to 1.
        old_grid: None, int or (height, width). The grid `posemb` holds;
            None infers a square grid from the length. Defaults to None.
        method: str. `"bicubic"` or `"bilinear"`. Defaults to `"bicubic"`.
        antialias: bool. Widen the kernel when shrinking. Defaults to True.

    Returns:
        A NumPy array of the input's rank and dtype holding
        prefix + new_h * new_w rows. When the grid does not change, the
        input itself (as a NumPy array), bit for bit.

    Raises:
        ValueError: if the shape is not (1, L, D) or (L, D), if the length
            fits no grid with `num_prefix_tokens` prefix rows, or if an
            argument is malformed.

    Example:

    >>> posemb = np.random.normal(size=(1, 1 + 4 * 4, 8)).astype("float32")
    >>> resize_position_embeddings(posemb, (6, 8)).shape
    (1, 49, 8)
    """
    posemb = np.asarray(ops.convert_to_numpy(posemb))
    if posemb.ndim not in (2, 3) or (posemb.ndim == 3 and posemb.shape[0] != 1):
        raise ValueError(
            f"posemb must have shape (1, length, width) or (length, width), "
            f"received shape {posemb.shape}"
        )
    check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
    interp.check_method(method)
    new_grid = normalize_grid(new_grid, name="new_grid")
    length = posemb.shape[-2]
    old_grid = grid_of_length(length, num_prefix_tokens, old_grid)
    if old_grid == new_grid:
        return posemb

    squeeze = posemb.ndim == 2
    batched = posemb[None] if squeeze else posemb
    grid = interp.resize_token_grid(
        batched[:, num_prefix_tokens:],
        old_grid,
        new_grid,
        method=method,
        antialias=antialias,
    )
    grid = ops.convert_to_numpy(grid).astype(posemb.dtype)
    out = np.concatenate([batched[:, :num_prefix_tokens], grid], axis=1)
    return out[0] if squeeze else out


POSITION_EMBEDDING_MODES = ("interpolate", "reinitialize")


def adapt(
    model,
    *,
    image_size=None,
    num_classes=None,
    method=None,
    antialias=None,
    position_embeddings="interpolate",
):
    """A copy of a ViT for another resolution and/or another set of classes.

    The paper's fine-tuning recipe (Section 3.2) as one call. The returned
    model has the same layers as `model`, rebuilt for `image_size`; its
    position embeddings are `model`'s resized to the new patch grid with
    `resize_position_embeddings`. With `num_classes`, the prediction head is
    replaced: the pre-logits layer (if any) is dropped and a new
    `Dense(num_classes)` head with zero kernel and zero bias is attached to
    the pooled features (to them directly when `model` has no head). Every
    other weight is copied exactly. `model` itself is not changed.

    Works on any model built by `keras_vit.ViT`, hybrids included: the patch
    grid is derived from the model's own input size and the grid of its
    `PositionEmbedding` (the patch size, or the feature-map stride of a
    hybrid).

    Args:
        model: a Functional model built by `keras_vit.ViT` (or loaded from
            one's `.keras` file).
        image_size: None, int or (height, width). The new input size; None
            keeps the model's. Must be a multiple of the patch stride.
        num_classes: None or int >= 1. Classes of the new zero-initialized
            head; None keeps the head (and pre-logits) as they are.
        method: None, `"bicubic"` or `"bilinear"`. Interpolation of the
            position embeddings; None uses the one the model's
            `PositionEmbedding` layer uses for dynamic resizing (so the
            adapted model computes what the original computes on the new
            grid). Defaults to None.
        antialias: None or bool. None uses the `PositionEmbedding` layer's.
        position_embeddings: `"interpolate"` (the paper's recipe) or
            `"reinitialize"` (fresh embeddings from the layer's initializer,
            an ablation baseline). Defaults to `"interpolate"`.

    Returns:
        A new Functional `keras.Model` with the same name.

    Raises:
        ValueError: if `model` is not a keras_vit ViT, if `image_size` does
            not divide into the patch grid, if `num_classes` is not a
            positive integer, or if an argument is malformed.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10,
    ...                       representation_size=8)
    >>> tuned = adapt(model, image_size=24, num_classes=3)
    >>> tuned.input_shape, tuned.output_shape
    ((None, 24, 24, 3), (None, 3))
    >>> "pre_logits" in [layer.name for layer in tuned.layers]
    False
    >>> float(np.abs(tuned.get_layer("head").kernel).max())
    0.0
    """
    layers = model_layers.layer_chain(model)
    posemb_layer = next(l for l in layers if isinstance(l, PositionEmbedding))
    old_height, old_width, channels = model.input_shape[1:]
    old_grid = posemb_layer.grid_size
    # A model of any image size keeps that: `image_size` then sets the stored grid.
    dynamic = old_height is None
    if dynamic:
        stride = posemb_layer.stride
        old_height, old_width = old_grid[0] * stride[0], old_grid[1] * stride[1]
    else:
        stride = (old_height // old_grid[0], old_width // old_grid[1])
    new_grid = patch_grid(
        (old_height, old_width) if image_size is None else image_size,
        stride,
        requirement=(
            f"a multiple of {stride[0] if stride[0] == stride[1] else stride}, the patch "
            f"stride of "
            f"{model.name!r} (its {old_height}x{old_width} input makes a "
            f"{old_grid[0]}x{old_grid[1]} patch grid)"
        ),
    )
    height, width = new_grid[0] * stride[0], new_grid[1] * stride[1]
    if num_classes is not None:
        check_positive_int("num_classes", num_classes)
    check_choice("position_embeddings", position_embeddings, POSITION_EMBEDDING_MODES)
    method = posemb_layer.interpolation if method is None else method
    interp.check_method(method)
    antialias = posemb_layer.antialias if antialias is None else bool(antialias)

    inputs = keras.Input(
        shape=(None, None, channels) if dynamic else (height, width, channels),
        name=layers[0].name,
    )
    x = inputs
    replaced = (
        {model_layers.find_layer(model, "pre_logits"), model_layers.find_layer(model, "head")}
        if num_classes is not None else set()
    )
    copies = []  # (new layer, old layer or None)
    first_token_block = (
        model_layers.transformer_blocks(model)[-1]
        if model_layers.last_block_computes_class_token_only(model) else None
    )
    for layer in layers[1:]:
        if layer in replaced:
            continue
        config = layer.get_config()
        if layer is posemb_layer:
            config["grid_size"] = list(new_grid)
        new_layer = layer.__class__.from_config(config)
        x = model_layers.call_layer(
            new_layer, x, inputs, first_token_only=layer is first_token_block)
        copies.append((new_layer, layer))
    if num_classes is not None:
        old_head = model_layers.find_layer(model, "head")
        head = model_layers.head_layer(
            num_classes, dtype=old_head.dtype_policy if old_head is not None else None
        )
        x = head(x)
        copies.append((head, None))
    adapted = keras.Model(inputs, x, name=model.name)

    for new_layer, old_layer in copies:
        if old_layer is None:
            new_layer.set_weights([np.zeros(w.shape, w.dtype) for w in new_layer.weights])
        elif old_layer is posemb_layer:
            if position_embeddings == "interpolate":
                resized = resize_position_embeddings(
                    posemb_layer.embeddings,
                    new_grid,
                    num_prefix_tokens=posemb_layer.num_prefix_tokens,
                    old_grid=old_grid,
                    method=method,
                    antialias=antialias,
                )
                new_layer.embeddings.assign(resized)
            # "reinitialize": the new layer keeps its freshly initialized weights.
        else:
            new_layer.set_weights(old_layer.get_weights())
    return adapted


def fold_input_normalization(model, mean, std):
    """Makes a model trained on `(x / 255 - mean) / std` inputs take `x / 127.5 - 1` instead.

    Checkpoints of other libraries (DeiT, DINO, MAE: ImageNet's mean and std) were trained on
    inputs normalized per channel; keras_vit's training binary feeds `[-1, 1]` pixels. The
    change of input is affine per channel, `z_c = a_c x_c + b_c` with `a_c = 1 / (2 std_c)`
    and `b_c = (0.5 - mean_c) / std_c`, and the patch embedding is linear on non-overlapping
    patches, so it is folded into its kernel and bias (`K' = K a`, `bias' = bias + sum K b`):
    the model computes on `[-1, 1]` inputs what it computed on normalized ones, before any
    training. Changes `model` in place.

    Args:
        model: a plain (not hybrid) ViT built by `keras_vit.ViT`.
        mean, std: sequences of floats, one per input channel: the normalization the model
            was trained with, on [0, 1] pixels.

    Raises:
        ValueError: a hybrid (its first layer is a ResNet convolution with padding, not a
            patch projection), `mean` / `std` of the wrong length or a non-positive std, or
            a mean other than 0.5 and a patch embedding without bias (CLIP's).

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=0)  # pooled features
    >>> x = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 3)).astype("float32")
    >>> before = keras.ops.convert_to_numpy(model(((x + 1) / 2 - 0.45) / 0.25))
    >>> fold_input_normalization(model, mean=[0.45] * 3, std=[0.25] * 3)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(model(x)), before, atol=1e-4))
    True
    """
    if model_layers.find_layer(model, "conv_root") is not None:
        raise ValueError(
            f"Model {model.name!r} is a hybrid: its ResNet's padded convolution cannot take "
            f"the input normalization folded in")
    patches = model_layers.find_layer(model, "patch_embedding")
    if patches is None:
        raise ValueError(f"Model {model.name!r} has no patch embedding")
    channels = patches.num_channels
    mean, std = (np.asarray(v, "float64").reshape(-1) for v in (mean, std))
    if mean.shape != (channels,) or std.shape != (channels,) or (std <= 0).any():
        raise ValueError(
            f"mean {mean.tolist()} and std {std.tolist()} must have {channels} values each "
            f"(the model's input channels), std positive")
    kernel = np.asarray(ops.convert_to_numpy(patches.projection.kernel), "float64")
    scale, shift = 1.0 / (2.0 * std), (0.5 - mean) / std
    if not patches.use_bias and np.any(shift != 0):
        # CLIP's patch embedding has no bias (`patch_bias=False`): the shift has nowhere to go.
        raise ValueError(
            f"Model {model.name!r} has a patch embedding without bias: its input normalization "
            f"mean {mean.tolist()} (other than 0.5) cannot be folded into it; give the model "
            f"inputs normalized with that mean and std instead")
    patches.projection.kernel.assign((kernel * scale[:, None]).astype("float32"))
    if patches.use_bias:
        bias = np.asarray(ops.convert_to_numpy(patches.projection.bias), "float64")
        patches.projection.bias.assign(
            (bias + np.einsum("pqcd,c->d", kernel, shift)).astype("float32"))


HEAD_PLANS = ("keep", "zero_init", "none")


def head_plan(*, source_classes, target_classes, source_pre_logits=None, target_pre_logits=None):
    """What a model built from another model's weights does with that model's head.

    The one rule every loader follows (`ViT(weights=...)` of a `.keras` file, `load_npz`,
    `training.train --init_from`, `training.convert`), from Section 3.2 of the paper: the
    pre-trained head is reused only when it computes exactly what the new model's head must
    (same classes, same pre-logits layer); otherwise the new model gets a zero-initialized
    D x K head, and the source's pre-logits are dropped unless the new model has a pre-logits
    layer of the same width.

    Args:
        source_classes: int or None. Classes of the source's head; None when it has none.
        target_classes: int or None. Classes of the new model's head; None when it has none
            (`include_top=False`).
        source_pre_logits: int or None. Width of the source's pre-logits layer.
        target_pre_logits: int or None. Width of the new model's pre-logits layer.

    Returns:
        str: `"keep"` (load the source's head and pre-logits as they are), `"zero_init"` (a
        zero head; the source's head, and pre-logits the target lacks, are dropped) or
        `"none"` (the target has no head: the source's head and pre-logits are dropped).

    Example:

    >>> head_plan(source_classes=21843, target_classes=10, source_pre_logits=768)
    'zero_init'
    >>> head_plan(source_classes=1000, target_classes=1000)
    'keep'
    """
    if target_classes is None:
        return "none"
    if source_classes == target_classes and source_pre_logits == target_pre_logits:
        return "keep"
    return "zero_init"


def default_pre_logits(*, source_classes, source_pre_logits, target_classes):
    """The pre-logits width of a model built from another's weights, when none is asked for.

    The companion of `head_plan` for builders that choose the new model's architecture
    (`training.convert`): the source's pre-logits layer stays only together with its head, i.e.
    when the new model keeps the source's classes. For other classes the paper's transfer
    replaces the whole pre-training head, pre-logits included, by one zero-initialized linear
    layer.

    Args:
        source_classes: int or None. Classes of the source's head.
        source_pre_logits: int or None. Width of the source's pre-logits layer.
        target_classes: int or None. Classes of the new model's head.

    Returns:
        int or None: the new model's `representation_size`.

    Example:

    >>> default_pre_logits(source_classes=21843, source_pre_logits=768, target_classes=21843)
    768
    >>> default_pre_logits(source_classes=21843, source_pre_logits=768, target_classes=10) is None
    True
    """
    return source_pre_logits if target_classes == source_classes else None


def model_head_plan(source, target):
    """`head_plan` of two models: `source`'s weights loaded into `target`'s architecture."""
    return head_plan(
        source_classes=model_layers.num_classes(source),
        target_classes=model_layers.num_classes(target),
        source_pre_logits=model_layers.representation_size(source),
        target_pre_logits=model_layers.representation_size(target),
    )
