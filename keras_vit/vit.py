"""`ViT(...)`: the Vision Transformer as a Functional `keras.Model`."""

import dataclasses
import os

import keras
import numpy as np

from keras_vit import checkpoints, downloads, finetune, hub, model_layers, presets, variants
from keras_vit.layers import (
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    TransformerBlock,
)
from keras_vit.layers.pooling import check_pooling
from keras_vit.layers.position_embedding import patch_grid
from keras_vit.layers.resnet import resnet_stem
from keras_vit.validation import check_int, check_positive_int, check_rate


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
            average pooling of the patch tokens, no class token) or
            `"distilled"` (DeiT's [class] and distillation tokens,
            concatenated: one head on them is the mean of DeiT's two heads).
            Defaults to the preset's or checkpoint's, else `"token"`.
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
            features after the final LayerNorm. Defaults to True.
        include_preprocessing: bool. Whether the model scales raw images in
            [0, 255] to [-1, 1] itself (a `Rescaling` layer named
            `"preprocessing"`), so that `model.predict(uint8_images)` is
            right. Defaults to False: the model takes [-1, 1] images, as the
            training binary's input pipeline and the checkpoints' own code
            produce them.
        weights: None; the name of a released checkpoint in
            `keras_vit.presets`; a Hugging Face Hub checkpoint
            `"hf://ORG/NAME[@REVISION]"` of transformers (`vit`, `deit`,
            `vit_mae`) or timm (`vit_*`, `deit_*`), a folder holding one
            (`config.json` + safetensors), or a `.safetensors` file with its
            `config.json` beside it: the architecture is then the one its
            config states (`keras_vit.checkpoints.read_checkpoint`); a path
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
    if checkpoint is not None:
        variant, image_size, pooling, num_classes, representation_size, preprocessing = (
            _settings_from_checkpoint(checkpoint, variant, image_size, pooling, num_classes,
                                      representation_size, include_top))
        num_channels = checkpoint.architecture.num_channels
    else:
        preprocessing = None
    if preset is not None:
        if variant is not None and variants.parse_variant(variant).name != (
            variants.parse_variant(preset.variant).name
        ):
            raise ValueError(
                f"variant {variant!r} contradicts weights {preset.name!r}, a "
                f"{preset.variant!r} checkpoint; leave variant unset or pass "
                f"{preset.variant!r}"
            )
        variant = preset.variant
        image_size, pooling, num_classes, representation_size = _unset_from(
            preset, image_size, pooling, num_classes, representation_size, include_top)
    variant = "B/16" if variant is None else variant
    image_size = 224 if image_size is None else image_size
    num_classes = 1000 if num_classes is None else num_classes
    pooling = "token" if pooling is None else pooling
    spec = variants.parse_variant(variant)
    if approximate_gelu is not None and bool(approximate_gelu) != spec.approximate_gelu:
        spec = dataclasses.replace(spec, approximate_gelu=bool(approximate_gelu))
    grid = patch_grid(
        image_size,
        spec.stride,
        requirement=(
            f"divisible by {spec.stride}, the feature-map stride of hybrid variant "
            f"{spec.name!r}"
            if spec.is_hybrid
            else f"divisible by patch_size {spec.patch_size} of variant {spec.name!r}"
        ),
    )
    height, width = grid[0] * spec.stride, grid[1] * spec.stride
    check_pooling(pooling)
    if spec.distillation_token != (pooling == "distilled") and pooling != "token":
        raise ValueError(
            f"pooling {pooling!r} needs a distillation token (a DeiT checkpoint's variant), "
            f"and a distillation token needs pooling 'token' or 'distilled'"
            if pooling == "distilled" else
            f"pooling {pooling!r} cannot be used with a distillation token: expected 'token' "
            f"or 'distilled'")
    if include_top:
        check_int("num_classes", num_classes, minimum=0)
    check_positive_int("representation_size", representation_size, allow_none=True)
    check_positive_int("num_channels", num_channels)
    for arg, value in (
        ("dropout", dropout),
        ("attention_dropout", attention_dropout),
        ("drop_path_rate", drop_path_rate),
    ):
        check_rate(arg, value)
    if spec.hidden_dim % spec.num_heads != 0:
        raise ValueError(
            f"Variant {variant!r}: width {spec.hidden_dim} is not divisible "
            f"by num_heads {spec.num_heads}"
        )

    num_prefix_tokens = (1 if pooling != "gap" else 0) + int(spec.distillation_token)

    # Under a keras.RematScope around ViT(...), the Transformer blocks are created in the
    # caller's scope, so that it selects them; they are recomputed as units
    # (`TransformerBlock.rematerialized_call`). The other layers and the model itself are
    # created outside any RematScope: their activations are a small part of the total, and
    # Keras' recomputation of a whole Functional model, or of a layer called with keyword
    # arguments, fails on TensorFlow.
    with keras.RematScope(mode=None):
        if dynamic_image_size:
            images = keras.Input(shape=(None, None, num_channels), name="images")
        else:
            images = keras.Input(shape=(height, width, num_channels), name="images")
        x = images
        if include_preprocessing:
            x = _preprocessing_layer(preprocessing, num_channels)(x)
        if spec.is_hybrid:
            x = resnet_stem(x, spec.resnet_units, spec.resnet_width)
        x = PatchEmbedding(spec.patch_size, spec.hidden_dim, name="patch_embedding")(x)
        if spec.distillation_token:
            # DeiT's distillation token, prepended before the [class] token is, so that the
            # sequence is [class, distillation, patches] as in DeiT.
            x = ClassToken(name="distillation_token")(x)
        if pooling != "gap":
            x = ClassToken(name="class_token")(x)
        if dynamic_image_size:
            # The grid of each call comes from the images' shape; the embeddings are stored for
            # `grid` and interpolated to it.
            x = PositionEmbedding(
                grid, num_prefix_tokens=num_prefix_tokens, stride=spec.stride,
                name="position_embedding",
            )(x, images=images)
        else:
            x = PositionEmbedding(
                grid, num_prefix_tokens=num_prefix_tokens, name="position_embedding"
            )(x)
        x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(spec.depth):
        # A model that classifies from the [class] token uses only that token
        # of the last block's output: the last block computes it alone
        # (`first_token_only`), 6.3% of a ViT-S/16 or B/16 training step's matmul FLOPs
        # saved, in training and inference, the outputs unchanged.
        x = TransformerBlock(
            spec.num_heads,
            spec.mlp_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            drop_path_rate=drop_path_rate * i / max(spec.depth - 1, 1),
            layer_norm_epsilon=spec.layer_norm_epsilon,
            approximate_gelu=spec.approximate_gelu,
            remat=remat,
            name=f"encoder_block_{i}",
        )(x, first_token_only=(pooling == "token" and i == spec.depth - 1))
    with keras.RematScope(mode=None):
        x = keras.layers.LayerNormalization(epsilon=spec.layer_norm_epsilon,
                                            name="encoder_norm")(x)
        x = TokenPooling(pooling, num_prefix_tokens=num_prefix_tokens, name="pooling")(x)
        if include_top:
            if representation_size is not None:
                x = keras.layers.Dense(
                    representation_size, activation="tanh", name="pre_logits"
                )(x)
            # Zero-initialized (the paper's fine-tuning head); float32 logits
            # under mixed precision. num_classes=0: a backbone, no head (timm's convention).
            if num_classes:
                x = model_layers.head_layer(num_classes)(x)
        model = keras.Model(images, x, name=_default_name(spec) if name is None else name)
    if checkpoint is not None:
        checkpoints.load_checkpoint(model, checkpoint)
    elif weights is not None:
        load_weights(model, weights)
    return model


def _settings_from_checkpoint(checkpoint, variant, image_size, pooling, num_classes,
                              representation_size, include_top):
    """The arguments of a Hub checkpoint's architecture, where the call leaves them unset.

    `image_size`, `num_classes`, `pooling` and `representation_size` adapt it as they adapt a
    preset; a `variant` that contradicts it is an error.
    """
    arch = checkpoint.architecture
    if variant is not None:
        given, own = variants.parse_variant(variant), arch.spec
        fields = ("patch_size", "hidden_dim", "depth", "mlp_dim", "num_heads")
        if any(getattr(given, f) != getattr(own, f) for f in fields):
            raise ValueError(
                f"variant {variant!r} contradicts weights {checkpoint.name!r}, whose config "
                f"states " + ", ".join(f"{f} {getattr(own, f)}" for f in fields)
                + "; leave variant unset"
            )
    image_size, pooling, num_classes, representation_size = _unset_from(
        arch, image_size, pooling, num_classes, representation_size, include_top)
    preprocessing = (arch.mean, arch.std) if arch.mean is not None else None
    return arch.spec, image_size, pooling, num_classes, representation_size, preprocessing


def _unset_from(source, image_size, pooling, num_classes, representation_size, include_top):
    """The arguments left unset, from a `Preset` or a checkpoint's `Architecture`.

    The pre-logits layer stays only with the source's head (`finetune.default_pre_logits`).
    """
    image_size = source.image_size if image_size is None else image_size
    pooling = source.pooling if pooling is None else pooling
    num_classes = source.num_classes if num_classes is None else num_classes
    if representation_size is None and include_top:
        representation_size = finetune.default_pre_logits(
            source_classes=source.num_classes,
            source_pre_logits=source.representation_size,
            target_classes=num_classes,
        )
    return image_size, pooling, num_classes, representation_size


def _preprocessing_layer(mean_std, num_channels):
    """Raw [0, 255] pixels -> the model's input: `x / 127.5 - 1`, or a checkpoint's mean/std."""
    if mean_std is None or all(
            m == 0.5 and s == 0.5 for m, s in zip(*mean_std)):
        # The paper's checkpoints' input range [-1, 1].
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocessing")
    mean, std = (np.broadcast_to(np.asarray(v, "float64"), (num_channels,)) for v in mean_std)
    # (x / 255 - mean) / std = x * scale + offset, per channel.
    return keras.layers.Rescaling(
        [float(v) for v in 1.0 / (255.0 * std)],
        offset=[float(v) for v in -mean / std],
        name="preprocessing",
    )


def _default_name(spec):
    """e.g. "vit_b16", or "vit_r50_b16" for a hybrid (Keras names allow no "+" or "/")."""
    if not spec.is_hybrid:
        return f"vit_{spec.size.lower()}{spec.patch_size}"
    return "vit_" + "_".join(
        "".join(c for c in part if c.isalnum())
        for part in spec.name.lower().replace("/", "").split("+")
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
