"""What `keras_vit.ViT` builds: one frozen `ModelSettings`, resolved before any layer exists.

`ViT(...)` takes its settings from three places, in this order of precedence: the call's own
arguments, then the checkpoint named by `weights` (a preset of `keras_vit.presets`, or a Hub
checkpoint's config read into a `keras_vit.converters.Architecture`), then the paper's defaults.
`resolve` merges them and checks the result; `keras_vit.vit.build` turns it into layers. The
architecture of the family (width, depth, LayerNorm epsilon, GELU form, tokens, ...) is the
`VariantSpec` in `spec`; this object adds what one model makes of it (image grid, head, pooling,
regularization, input handling). A new option is a field here or in `VariantSpec`, checked in
`__post_init__`, and one step of `vit.build`.
"""

import dataclasses

from keras_vit import finetune, variants
from keras_vit.layers.pooling import MODEL_POOLINGS, check_pooling
from keras_vit.layers.position_embedding import normalize_grid, patch_grid
from keras_vit.validation import check_int, check_positive_int, check_rate

# The paper's defaults, for what neither the call nor a checkpoint sets.
DEFAULTS = dict(variant="B/16", image_size=224, num_classes=1000, pooling="token")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Everything `keras_vit.vit.build` needs, checked; the arguments of `ViT` once resolved.

    Args:
        spec: `keras_vit.variants.VariantSpec`. The architecture (sizes, LayerNorm epsilon,
            GELU form, distillation token, hybrid ResNet).
        image_size: int or (height, width). Input size in pixels (for a model of any size:
            the size its position embeddings are stored for); kept as (height, width).
        num_classes: int. Outputs of the head; 0 for none.
        pooling: str. `"token"`, `"gap"`, `"distilled"` or `"map"`.
        representation_size: int or None. Width of the pre-logits layer, None for none.
        dropout, attention_dropout, drop_path_rate: float. Rates in [0, 1).
        include_top: bool. Pre-logits and head after the pooling.
        include_preprocessing: bool. A `Rescaling` layer from raw [0, 255] pixels first.
        mean_std: None or (mean, std). The checkpoint's input normalization on [0, 1] pixels;
            None for the paper's `x / 127.5 - 1`.
        num_channels: int. Channels of the input images.
        dynamic_image_size: bool. Input of any size, each call's patch grid read from it.
        remat: bool. Gradient checkpointing of each Transformer block.
        name: str or None. Model name; None for the variant's (`"vit_b16"`).
    """

    spec: variants.VariantSpec
    image_size: tuple
    num_classes: int
    pooling: str
    representation_size: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path_rate: float = 0.0
    include_top: bool = True
    include_preprocessing: bool = False
    mean_std: tuple | None = None
    num_channels: int = 3
    dynamic_image_size: bool = False
    remat: bool = False
    name: str | None = None

    def __post_init__(self):
        # The checks run in this order (a call with several bad arguments names the first).
        spec = self.spec
        patch_grid(self.image_size, spec.stride, requirement=_stride_requirement(spec))
        object.__setattr__(self, "image_size", normalize_grid(self.image_size, "image_size"))
        check_pooling(self.pooling, MODEL_POOLINGS)
        _check_distillation(spec, self.pooling)
        if self.include_top:
            check_int("num_classes", self.num_classes, minimum=0)
        check_positive_int("representation_size", self.representation_size, allow_none=True)
        check_positive_int("num_channels", self.num_channels)
        for arg in ("dropout", "attention_dropout", "drop_path_rate"):
            check_rate(arg, getattr(self, arg))
        if spec.hidden_dim % spec.num_heads != 0:
            raise ValueError(
                f"Variant {spec.name!r}: width {spec.hidden_dim} is not divisible "
                f"by num_heads {spec.num_heads}"
            )

    @property
    def grid(self):
        """(height, width) of the patch grid of `image_size`."""
        return (self.image_size[0] // self.spec.stride, self.image_size[1] // self.spec.stride)

    @property
    def class_token(self):
        """Whether the model has a [class] token: all but "gap" and "map" pooling."""
        return self.pooling not in ("gap", "map")

    @property
    def num_prefix_tokens(self):
        """Tokens with a position embedding before the patches: [class], distillation."""
        return int(self.class_token) + int(self.spec.distillation_token)

    @property
    def num_tokens_before_patches(self):
        """The prefix tokens and the register tokens after them (`dense_features` keeps apart)."""
        return self.num_prefix_tokens + self.spec.num_registers

    @property
    def model_name(self):
        return default_name(self.spec) if self.name is None else self.name

    def block_drop_path_rate(self, index):
        """Stochastic depth of block `index`: 0 for the first, linear up to `drop_path_rate`."""
        return self.drop_path_rate * index / max(self.spec.depth - 1, 1)


def resolve(variant=None, *, preset=None, checkpoint=None, image_size=None, num_classes=None,
            pooling=None, representation_size=None, approximate_gelu=None, include_top=True,
            num_channels=3, **options):
    """The `ModelSettings` of a `ViT(...)` call.

    `variant`, `image_size`, `num_classes`, `pooling`, `representation_size`,
    `approximate_gelu`, `include_top` and `num_channels` are `ViT`'s arguments, None where the
    call leaves them unset.

    Args:
        preset: `keras_vit.presets.Preset` or None. The preset `weights` names.
        checkpoint: `keras_vit.checkpoints.Checkpoint` or None. The Hub checkpoint `weights`
            names; its config's architecture fills what the call leaves unset.
        **options: the other `ModelSettings` fields (`dropout`, `remat`, `name`, ...), as given.

    Raises:
        ValueError: a setting out of range, or a `variant` that contradicts the checkpoint.
    """
    mean_std = None
    if checkpoint is not None:
        arch = checkpoint.architecture
        _check_against_checkpoint(variant, checkpoint)
        variant, num_channels = arch.spec, arch.num_channels
        mean_std = (arch.mean, arch.std) if arch.mean is not None else None
        source = arch
    if preset is not None:
        _check_against_preset(variant, preset)
        variant, source = preset.variant, preset
    if checkpoint is not None or preset is not None:
        image_size, pooling, num_classes, representation_size = _unset_from(
            source, image_size, pooling, num_classes, representation_size, include_top)
    given = dict(variant=variant, image_size=image_size, num_classes=num_classes,
                 pooling=pooling)
    given = {key: DEFAULTS[key] if value is None else value for key, value in given.items()}
    spec = variants.parse_variant(given.pop("variant"))
    if approximate_gelu is not None and bool(approximate_gelu) != spec.approximate_gelu:
        spec = dataclasses.replace(spec, approximate_gelu=bool(approximate_gelu))
    return ModelSettings(spec, **given, representation_size=representation_size,
                         include_top=include_top, mean_std=mean_std,
                         num_channels=num_channels, **options)


def default_name(spec):
    """e.g. "vit_b16", or "vit_r50_b16" for a hybrid (Keras names allow no "+" or "/")."""
    if not spec.is_hybrid:
        return f"vit_{spec.size.lower()}{spec.patch_size}"
    return "vit_" + "_".join(
        "".join(c for c in part if c.isalnum())
        for part in spec.name.lower().replace("/", "").split("+")
    )


def _check_against_preset(variant, preset):
    if variant is not None and variants.parse_variant(variant).name != (
        variants.parse_variant(preset.variant).name
    ):
        raise ValueError(
            f"variant {variant!r} contradicts weights {preset.name!r}, a "
            f"{preset.variant!r} checkpoint; leave variant unset or pass "
            f"{preset.variant!r}"
        )


def _check_against_checkpoint(variant, checkpoint):
    if variant is None:
        return
    given, own = variants.parse_variant(variant), checkpoint.architecture.spec
    fields = ("patch_size", "hidden_dim", "depth", "mlp_dim", "num_heads")
    if any(getattr(given, f) != getattr(own, f) for f in fields):
        raise ValueError(
            f"variant {variant!r} contradicts weights {checkpoint.name!r}, whose config "
            f"states " + ", ".join(f"{f} {getattr(own, f)}" for f in fields)
            + "; leave variant unset"
        )


def _unset_from(source, image_size, pooling, num_classes, representation_size, include_top):
    """The arguments left unset, from a `Preset` or a checkpoint's `Architecture`.

    `image_size`, `num_classes`, `pooling` and `representation_size` given in the call adapt the
    checkpoint (as `keras_vit.finetune.adapt` does). The pre-logits layer stays only with the
    source's head (`finetune.default_pre_logits`).
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


def _stride_requirement(spec):
    """What `patch_grid`'s error says an image side must be divisible by."""
    if spec.is_hybrid:
        return (f"divisible by {spec.stride}, the feature-map stride of hybrid variant "
                f"{spec.name!r}")
    return f"divisible by patch_size {spec.patch_size} of variant {spec.name!r}"


def _check_distillation(spec, pooling):
    """"distilled" pooling needs a distillation token; a distillation token, "token" or it."""
    if spec.distillation_token != (pooling == "distilled") and pooling != "token":
        raise ValueError(
            f"pooling {pooling!r} needs a distillation token (a DeiT checkpoint's variant), "
            f"and a distillation token needs pooling 'token' or 'distilled'"
            if pooling == "distilled" else
            f"pooling {pooling!r} cannot be used with a distillation token: expected 'token' "
            f"or 'distilled'")
