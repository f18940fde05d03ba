"""`ViT(...)`: the Vision Transformer as a Functional `keras.Model`.

Three steps, each its own function: `keras_vit.model_settings.resolve` turns the arguments (and
the preset or checkpoint `weights` names) into one checked `ModelSettings`; `build(settings)`
makes the chain of layers, in the order of the paper's Eqs. 1-4; the weights are then loaded.
Layer names come from `keras_vit.model_layers.ROLES`, and every layer is called through
`keras_vit.model_layers.call_layer`, as `keras_vit.finetune.adapt` calls them.
"""

import os

import keras
import numpy as np

from keras_vit import (
    checkpoints,
    converters,
    downloads,
    finetune,
    hub,
    model_layers,
    model_settings,
    presets,
)
from keras_vit.layers import (
    ClassToken,
    MAPHead,
    PatchEmbedding,
    PositionEmbedding,
    RegisterTokens,
    TokenPooling,
    TransformerBlock,
)
from keras_vit.layers.resnet import resnet_stem


def ViT(
    variant=None,
    *,
    image_size=None,
    num_classes=None,
    pooling=None,
    representation_size=None,
    dropout=0.0,
    attention_dropout=0.0,
    drop_path_rate=0.0,
    include_top=True,
    include_preprocessing=False,
    weights=None,
    name=None,
    num_channels=3,
    approximate_gelu=None,
    dynamic_image_size=False,
    remat=False,
):
    """Builds a Vision Transformer as a Functional `keras.Model`.

    [An Image is Worth 16x16 Words](https://arxiv.org/abs/2010.11929)
    (Dosovitskiy et al., 2021): patches -> linear embedding -> [class] token
    -> position embeddings -> pre-LN Transformer encoder -> LayerNorm ->
    pooled representation -> [pre-logits Dense + tanh] -> Dense(num_classes).

    The model takes float images, channels last, scaled to [-1, 1]
    (`x / 127.5 - 1`, the reference implementation's convention), and
    returns logits; with `include_preprocessing=True` it takes raw pixel
    values in [0, 255] (any integer or float dtype) and scales them itself.

    `weights` may name a released checkpoint (`keras_vit.presets`):
    `ViT(weights="augreg_b16_i21k_i1k_224")` alone builds that checkpoint's
    architecture and loads it (downloaded once into the Keras cache, see
    `keras_vit.downloads`); `image_size` and `num_classes` then adapt it as
    for any checkpoint. So does a Hugging Face Hub checkpoint:
    `ViT(weights="hf://google/vit-base-patch16-224")` builds what its
    `config.json` states (LayerNorm epsilon, GELU form, distillation token,
    head or none) and returns what transformers' or timm's default forward
    returns: logits for a classifier, the pooled representation for a
    backbone. With `include_preprocessing=True` such a model normalizes raw
    pixels with the checkpoint's own mean and std.

    Args:
        variant: str. `"SIZE/PATCH"`: a size from `keras_vit.variants.SIZES`
            (`mu`, `Ti`, `S`, `M`, `B`, `L`, `H`) and any patch size, e.g.
            `"B/16"` or `"Ti/4"` for 32x32 images. Or a hybrid, whose tokens
            are the 1x1 patches of a ResNet feature map (Section 3.1):
            `"R50+SIZE/16"` (ResNet-50 units (3, 4, 9), stride 16),
            `"R50+SIZE/32"` (units (3, 4, 6, 3), stride 32) or `"R26+SIZE/32"`
            (units (2, 2, 2, 2)), e.g. `"R50+B/16"`; or a
            `keras_vit.variants.VariantSpec`. Defaults to the preset's
            variant when `weights` names one, else `"B/16"`; a variant that
            contradicts the preset is an error.
        image_size: int or (height, width). Both must be divisible by the
            patch size (a hybrid's stride). Defaults to the preset's, else
            224.
        num_classes: int. Outputs of the head; 0 for no head (the model
            returns the pooled representation, after the pre-logits layer if
            it has one: timm's `num_classes=0`). Defaults to the preset's or
            checkpoint's (0 for a backbone such as DINO or MAE), else 1000.
        pooling: str. `"token"` (the [class] token), `"gap"` (global
            average pooling of the patch tokens, no class token),
            `"distilled"` (DeiT's [class] and distillation tokens,
            concatenated: one head on them is the mean of DeiT's two heads)
            or `"map"` (SigLIP's learned attention probe over the tokens,
            `keras_vit.layers.MAPHead`, no class token). Defaults to the
            preset's or checkpoint's, else `"token"`.
        representation_size: int or None. Width of the pre-logits
            `Dense + tanh` layer of the paper's pre-training head; None for
            the single linear layer used when fine-tuning. With a preset,
            None keeps the preset's pre-logits when its classes are kept
            (`keras_vit.finetune.default_pre_logits`). Defaults to None.
        dropout: float. Dropout after the position embeddings and inside
            each block. Defaults to 0.
        attention_dropout: float. Dropout on attention weights. Defaults to 0.
        drop_path_rate: float. Stochastic depth rate of the last block; block
            i of `depth` uses `drop_path_rate * i / (depth - 1)`. Defaults to 0.
        include_top: bool. With False, the model returns the pooled (B, D)
            features after the final LayerNorm (for a CLIP tower, whose head
            is its projection into the joint embedding space: the pooled
            representation before it). Defaults to True.
        include_preprocessing: bool. Whether the model scales raw images in
            [0, 255] to [-1, 1] itself (a `Rescaling` layer named
            `"preprocessing"`), so that `model.predict(uint8_images)` is
            right. Defaults to False: the model takes [-1, 1] images, as the
            training binary's input pipeline and the checkpoints' own code
            produce them.
        weights: None; the name of a released checkpoint in
            `keras_vit.presets`; a Hugging Face Hub checkpoint
            `"hf://ORG/NAME[@REVISION]"` of transformers (`vit`, `deit`,
            `vit_mae`, `dinov2`, `dinov2_with_registers`, `clip`,
            `clip_vision_model`, `siglip`, `siglip_vision_model`) or timm
            (`vit_*` including `*_dinov2`, `*_clip_*`, `*_siglip_*`;
            `deit_*`), a folder holding one
            (`config.json` + safetensors), or a `.safetensors` file with its
            `config.json` beside it: the architecture is then the one its
            config states (`keras_vit.checkpoints.read_checkpoint`, whose
            result may also be passed); a path
            to a `.weights.h5` file of the same
            architecture, to a `.keras` model of the same variant and
            pooling, or to a released `.npz` checkpoint
            (`keras_vit.checkpoints.load_npz`); or an http(s):// or gs://
            URL of such a file, downloaded once (`keras_vit.downloads`). A
            `.keras` model or `.npz` checkpoint saved at another resolution
            or with another head is adapted as `keras_vit.finetune.adapt`
            does: position embeddings interpolated, and when the classes (or
            the pre-logits layer) differ, a zero-initialized head. Defaults
            to None (random init).
        name: str or None. Model name. Defaults to e.g. `"vit_b16"`.
        num_channels: int. Channels of the input images. Defaults to 3.
        approximate_gelu: bool or None. Tanh approximation of GELU (as the
            reference implementation and its released weights) or the exact
            erf form (transformers, timm). Defaults to None: the variant's
            (a Hub checkpoint's config), True for a variant name.
        dynamic_image_size: bool. Whether the model takes images of any
            size: its input is (None, None, num_channels) and each call's
            patch grid comes from its images (any height and width divisible
            by the patch size, or a hybrid's stride; square or not), the
            position embeddings, stored for `image_size`, interpolated to it
            as `keras_vit.finetune.adapt` would. Defaults to False.
        remat: bool. Gradient checkpointing: in training, each Transformer
            block keeps only its input for the backward pass and recomputes
            its activations there (`TransformerBlock(remat=True)`): most of
            the activation memory, for about one more forward pass. The
            gradients are unchanged. `ViT(...)` built inside a
            `keras.RematScope` does the same for the blocks the scope
            selects (`"full"`: all of them); the other layers are never
            recomputed. Defaults to False.

    Returns:
        A Functional `keras.Model` mapping (B, H, W, num_channels) images to
        (B, num_classes) logits, or to (B, D) features with
        `include_top=False`.

    Example:

    >>> model = ViT("mu/4", image_size=16, num_classes=10)
    >>> tuple(model(np.zeros((2, 16, 16, 3))).shape)
    (2, 10)
    """
    weights, preset, checkpoint = _resolve_weights(weights)
    settings = model_settings.resolve(
        variant, preset=preset, checkpoint=checkpoint, image_size=image_size,
        num_classes=num_classes, pooling=pooling, representation_size=representation_size,
        approximate_gelu=approximate_gelu, include_top=include_top, num_channels=num_channels,
        dropout=dropout, attention_dropout=attention_dropout, drop_path_rate=drop_path_rate,
        include_preprocessing=include_preprocessing, dynamic_image_size=dynamic_image_size,
        remat=remat, name=name,
    )
    model = build(settings)
    if checkpoint is not None:
        checkpoints.load_checkpoint(model, checkpoint)
    elif weights is not None:
        load_weights(model, weights)
    return model


def build(settings):
    """The Functional `keras.Model` of a `keras_vit.model_settings.ModelSettings`, initialized.

    The paper's Eqs. 1-4, one function each: `_embed` (Eq. 1), `_encode` (Eqs. 2-3),
    `_represent` (Eq. 4 and the head).
    """
    # Under a keras.RematScope around ViT(...), the Transformer blocks are created in the
    # caller's scope, so that it selects them; they are recomputed as units
    # (`TransformerBlock.rematerialized_call`). The other layers and the model itself are
    # created outside any RematScope: their activations are a small part of the total, and
    # Keras' recomputation of a whole Functional model, or of a layer called with keyword
    # arguments, fails on TensorFlow.
    with keras.RematScope(mode=None):
        images = keras.Input(shape=_input_shape(settings), name="images")
        x = _embed(images, settings)
    x = _encode(x, images, settings)
    with keras.RematScope(mode=None):
        x = _represent(x, settings)
        return keras.Model(images, x, name=settings.model_name)


def _embed(images, settings):
    """Eq. 1: z0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos, then dropout.

    The later families' additions, each a step where its option is on: register tokens after
    the position embeddings (DINOv2 with registers), a LayerNorm before the encoder (CLIP).
    """
    spec, x = settings.spec, images
    if settings.include_preprocessing:
        x = _preprocessing_layer(settings.mean_std, settings.num_channels)(x)
    if spec.is_hybrid:
        # Section 3.1: the patches are the 1x1 cells of a ResNet feature map.
        x = resnet_stem(x, spec.resnet_units, spec.resnet_width)
    x = PatchEmbedding(spec.patch_size, spec.hidden_dim, use_bias=spec.patch_bias,
                       name=_name("patch_embedding"))(x)
    if spec.distillation_token:
        # DeiT's distillation token, prepended before the [class] token is, so that the
        # sequence is [class, distillation, patches] as in DeiT.
        x = ClassToken(name=_name("distillation_token"))(x)
    if settings.class_token:
        x = ClassToken(name=_name("class_token"))(x)
    # With dynamic_image_size, the grid of each call comes from the images' shape (the
    # layer's stride); the embeddings are stored for `settings.grid` and interpolated to it.
    position_embedding = PositionEmbedding(
        settings.grid, num_prefix_tokens=settings.num_prefix_tokens,
        stride=spec.stride if settings.dynamic_image_size else None,
        interpolation=spec.position_interpolation, name=_name("position_embedding"),
    )
    x = model_layers.call_layer(position_embedding, x, images)
    if spec.num_registers:
        # Darcet et al., 2023: learned tokens without position embeddings, after the prefix.
        x = RegisterTokens(spec.num_registers, num_prefix_tokens=settings.num_prefix_tokens,
                           name=_name("register_tokens"))(x)
    x = keras.layers.Dropout(settings.dropout, name="embedding_dropout")(x)
    if spec.pre_norm:
        x = keras.layers.LayerNormalization(epsilon=spec.layer_norm_epsilon,
                                            name=_name("pre_norm"))(x)
    return x


def _encode(x, images, settings):
    """Eqs. 2-3: `depth` pre-LN blocks, z' = MSA(LN(z)) + z, then z = MLP(LN(z')) + z'."""
    spec = settings.spec
    for i in range(spec.depth):
        block = TransformerBlock(
            spec.num_heads,
            spec.mlp_dim,
            dropout=settings.dropout,
            attention_dropout=settings.attention_dropout,
            drop_path_rate=settings.block_drop_path_rate(i),
            layer_norm_epsilon=spec.layer_norm_epsilon,
            approximate_gelu=spec.approximate_gelu,
            remat=settings.remat,
            activation=spec.activation,
            layer_scale=spec.layer_scale,
            name=model_layers.block_name(i),
        )
        x = model_layers.call_layer(block, x, images, first_token_only=(
            model_layers.computes_class_token_only(settings.pooling, i, spec.depth)))
    return x


def _represent(x, settings):
    """Eq. 4: y = LN(z_L), pooled; then the optional pre-logits and head.

    The pooling is `TokenPooling` (the [class] token, the mean of the patch tokens, DeiT's
    pair), or SigLIP's attention probe (`MAPHead`, "map"). A CLIP tower's projection is its
    head.
    """
    spec = settings.spec
    x = keras.layers.LayerNormalization(epsilon=spec.layer_norm_epsilon,
                                        name=_name("encoder_norm"))(x)
    if settings.pooling == "map":
        x = MAPHead(spec.num_heads, spec.mlp_dim, layer_norm_epsilon=spec.layer_norm_epsilon,
                    approximate_gelu=spec.approximate_gelu, name=_name("pooling"))(x)
    else:
        x = TokenPooling(settings.pooling, num_prefix_tokens=settings.num_tokens_before_patches,
                         name=_name("pooling"))(x)
    if not settings.include_top:
        return x
    if settings.representation_size is not None:
        x = keras.layers.Dense(
            settings.representation_size, activation="tanh", name=_name("pre_logits")
        )(x)
    # Zero-initialized (the paper's fine-tuning head); float32 logits under mixed precision.
    # num_classes=0: a backbone, no head (timm's convention).
    if settings.num_classes:
        x = model_layers.head_layer(settings.num_classes)(x)
    return x


def _name(role):
    return model_layers.ROLES[role][0]


def _input_shape(settings):
    if settings.dynamic_image_size:
        return (None, None, settings.num_channels)
    return (*settings.image_size, settings.num_channels)


def _preprocessing_layer(mean_std, num_channels):
    """Raw [0, 255] pixels -> the model's input: `x / 127.5 - 1`, or a checkpoint's mean/std."""
    if mean_std is None or all(
            m == 0.5 and s == 0.5 for m, s in zip(*mean_std)):
        # The paper's checkpoints' input range [-1, 1].
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=_name("preprocessing"))
    mean, std = (np.broadcast_to(np.asarray(v, "float64"), (num_channels,)) for v in mean_std)
    # (x / 255 - mean) / std = x * scale + offset, per channel.
    return keras.layers.Rescaling(
        [float(v) for v in 1.0 / (255.0 * std)],
        offset=[float(v) for v in -mean / std],
        name=_name("preprocessing"),
    )


def _resolve_weights(weights):
    """(local path or None, `Preset` or None, `Checkpoint` or None) of a `weights` argument.

    An `hf://` reference, a checkpoint folder or a `.safetensors` file is read
    (`keras_vit.checkpoints.read_checkpoint`); pickled weights are refused
    there. A URL is downloaded (once); a string that is neither a URL nor an
    existing file nor a weights file name (`.npz`, `.keras`, `.weights.h5`)
    is a preset name, and an unknown one is a ValueError listing the closest.
    """
    if weights is None:
        return None, None, None
    if isinstance(weights, converters.Checkpoint):
        return None, None, weights  # already read (`keras_vit.checkpoints.read_checkpoint`)
    if hub.is_reference(weights) or (
            isinstance(weights, (str, os.PathLike))
            and os.fspath(weights).endswith(hub.PICKLE_SUFFIXES)):
        return None, None, checkpoints.read_checkpoint(weights)
    if isinstance(weights, str) and downloads.is_url(weights):
        return downloads.fetch(weights), None, None
    path = os.fspath(weights)
    if os.path.exists(path) or path.endswith(_WEIGHT_SUFFIXES) or os.sep in path:
        return path, None, None
    preset = presets.get(path)
    if preset.hub_reference is not None:
        # A preset of the later families names a Hub checkpoint, whose config states the
        # architecture.
        return None, None, checkpoints.read_checkpoint(preset.hub_reference)
    return (
        downloads.fetch(preset.url, sha256=preset.sha256, size_bytes=preset.size_bytes),
        preset,
        None,
    )


_WEIGHT_SUFFIXES = (".npz", ".keras", ".weights.h5", ".h5")


def load_weights(model, path):
    """Fills `model` from a `.weights.h5`, `.keras` or released `.npz` file.

    A `.keras` model of another input size or class count is adapted to
    `model` first (`keras_vit.finetune.adapt`).

    Raises:
        ValueError: if the file does not exist, has an unsupported suffix or
            holds weights that no adaptation makes fit.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist")
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return
    if path.endswith(".npz"):
        checkpoints.load_npz(model, path)
        return
    if path.endswith(".keras"):
        source = keras.saving.load_model(path, compile=False)
        if _weight_shapes(source) != _weight_shapes(model):
            source = _adapt_to(source, model, path)
        model.set_weights(source.get_weights())
        return
    raise ValueError(
        f"Unsupported weights file {path!r}: expected a '.weights.h5' or "
        f"'.keras' path, or a released '.npz' checkpoint"
    )


def _weight_shapes(model):
    return [tuple(w.shape) for w in model.weights]


def _adapt_to(source, model, path):
    """`source` adapted to `model`'s input size and classes, the fine-tuning way."""
    plan = finetune.model_head_plan(source, model)
    try:
        adapted = finetune.adapt(
            source,
            image_size=tuple(model.input_shape[1:3]),
            num_classes=model_layers.num_classes(model) if plan == "zero_init" else None,
        )
    except ValueError as error:
        raise ValueError(f"Cannot load {path!r} into {model.name}: {error}") from None
    expected, found = _weight_shapes(model), _weight_shapes(adapted)
    if expected != found:
        mismatch = next(
            (i for i, (e, f) in enumerate(zip(expected, found)) if e != f),
            min(len(expected), len(found)),
        )
        raise ValueError(
            f"{path!r} holds a model of another architecture than {model.name}: "
            f"after adapting it to the input size and classes, it has {len(found)} "
            f"weights and {model.name} {len(expected)}; the first difference is "
            f"weight {mismatch}: {found[mismatch] if mismatch < len(found) else None} "
            f"found, {expected[mismatch] if mismatch < len(expected) else None} expected"
        )
    return adapted
