"""Dense features: a ViT's patch tokens as spatial maps, for segmentation, depth or matching.

DINOv2's `get_intermediate_layers(..., reshape=True)` and timm's `forward_intermediates` are the
pattern: the tokens of chosen blocks, each block's patch tokens laid out on the patch grid
(B, h, w, D), and the tokens before the patches ([class], distillation, registers) apart.
`dense_features` reads the tokens through `keras_vit.explain.intermediate_outputs`, which runs
the model's own layers and asks the selected blocks for all their tokens (also the last block
of a "token" model, which otherwise computes the [class] token alone).
"""

import numpy as np
from keras import ops

from keras_vit import model_layers
from keras_vit.explain.probe import intermediate_outputs, token_layout

__all__ = ["dense_features"]


def dense_features(model, images, *, blocks=-1, norm=True):
    """The tokens of chosen blocks of `model`, the patch tokens as (B, h, w, D) maps.

    With `norm=True` (the default, as in DINOv2's
    `get_intermediate_layers`; timm's `forward_intermediates(norm=True)` is
    the same and defaults to False) each block's tokens go through the
    model's own final LayerNorm (`encoder_norm`): the features of the last
    block are then exactly what the model's pooling reads (the [class] token
    of a "token" model is its `include_top=False` output; the mean of the
    patch maps of a "gap" model is; a "map" model's probe attends over them),
    and every block's features are on the scale a head trained on the
    model's output expects. `norm=False` gives the residual stream itself,
    whose scale grows with depth.

    The blocks run in inference mode (no dropout or stochastic depth) and the
    result is NumPy: features for a frozen backbone, e.g. computed once to
    fit a linear segmentation head on.

    Args:
        model: a `keras_vit` model (`keras_vit.ViT(...)`, any pooling,
            registers, hybrid or any image size).
        images: array (B, H, W, C) as the model takes them (float, in
            [-1, 1]): of the model's input size, or of any size divisible by
            the patch size (a hybrid's stride) for a model built with
            `dynamic_image_size=True`, whose grid is then read from them.
        blocks: int or list of int. The blocks whose tokens are returned,
            negative indices counting from the end (as
            `keras_vit.explain.intermediate_outputs` takes them). Defaults to
            -1, the last block.
        norm: bool. Apply the model's final LayerNorm to each block's tokens.
            Defaults to True.

    Returns:
        dict: `"blocks"`, the block indices (non-negative), and for each
        of the following a list of float32 NumPy arrays (also under mixed
        precision), one per selected block, or
        None where the model has no such token: `"patch_tokens"`, the patch
        tokens as maps (B, h, w, D): entry [b, i, j] is the token of the
        patch in grid row i, column j (the sequence's row-major order);
        `"class_token"` (B, D), None for a model without one ("gap" and
        "map" pooling); `"distillation_token"` (B, D), DeiT's;
        `"registers"` (B, R, D).

    Raises:
        ValueError: a block index out of range, or images that the model does
            not take (another size, for a model of a fixed size).

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=0)
    >>> features = dense_features(model, np.zeros((2, 16, 16, 3)))
    >>> features["blocks"], features["patch_tokens"][0].shape  # a 4x4 grid of width 32
    ([0], (2, 4, 4, 32))
    >>> features["class_token"][0].shape, features["registers"]
    ((2, 32), None)
    """
    out = intermediate_outputs(model, images, blocks=blocks, attention=False)
    prefix = model_layers.token_prefix(model)
    shape = tuple(getattr(images, "shape", np.shape(images)))
    num_prefix, (grid_h, grid_w) = token_layout(model, shape[1:3])
    encoder_norm = model_layers.find_layer(model, "encoder_norm") if norm else None
    if norm and encoder_norm is None:
        raise ValueError(
            f"Model {model.name!r} has no 'encoder_norm' LayerNormalization layer to apply: "
            f"pass norm=False for its blocks' tokens as they are"
        )
    parts = {"patch_tokens": True, "class_token": prefix.class_token,
             "distillation_token": prefix.distillation_token,
             "registers": prefix.num_registers > 0}
    features = {key: [] if present else None for key, present in parts.items()}
    for tokens in out["tokens"]:
        if tokens.shape[1] != num_prefix + grid_h * grid_w:
            raise ValueError(
                f"Model {model.name!r}: a block returned {tokens.shape[1]} tokens, expected "
                f"{num_prefix} before the patches and a {grid_h}x{grid_w} grid"
            )
        if encoder_norm is not None:
            tokens = ops.convert_to_numpy(encoder_norm(ops.convert_to_tensor(tokens)))
        # A mixed-precision model computes in bfloat16 or float16; NumPy users get float32.
        tokens = tokens.astype("float32")
        batch, width = tokens.shape[0], tokens.shape[-1]
        features["patch_tokens"].append(
            tokens[:, num_prefix:].reshape(batch, grid_h, grid_w, width))
        if prefix.class_token:
            features["class_token"].append(tokens[:, 0])
        if prefix.distillation_token:
            features["distillation_token"].append(tokens[:, 1])
        if prefix.num_registers:
            features["registers"].append(tokens[:, prefix.registers])
    return {"blocks": out["blocks"], **features}
