"""The table of ViT model sizes and the parser for variant names.

Plain ViTs are `"SIZE/PATCH"` (`"B/16"`); the paper's hybrids, which take
their tokens from a ResNet feature map, are `"R50+SIZE/16"`, `"R50+SIZE/32"`
and `"R26+SIZE/32"` (see `HYBRID_STAGES`).
"""

import dataclasses
import re

from keras_vit.interpolation import check_method
from keras_vit.layers.resnet import check_units, check_width, stem_stride
from keras_vit.layers.transformer_block import ACTIVATIONS
from keras_vit.validation import check_choice, check_int, check_number


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """The hyper-parameters a variant name resolves to.

    Args:
        size: str. The size name, e.g. `"B"`.
        patch_size: int. Side of the square image patches, in pixels.
        hidden_dim: int. Width D of the token embeddings.
        depth: int. Number of Transformer blocks.
        mlp_dim: int. Hidden width of each block's MLP.
        num_heads: int. Number of self-attention heads.
        resnet_units: tuple of ints. Units per stage of the ResNet whose
            feature map a hybrid embeds (`keras_vit.layers.resnet`); empty
            for a plain ViT. Defaults to ().
        resnet_width: int. Filters of the ResNet's root conv (64 is
            "x1"); a multiple of 32. Ignored for a plain ViT. Defaults to 64.
        layer_norm_epsilon: float. Epsilon of every LayerNorm: 1e-6 in the
            paper's code and timm, 1e-12 in transformers' ViT, DeiT and MAE.
            Defaults to 1e-6.
        approximate_gelu: bool. The MLP's GELU in the tanh form (the paper's
            JAX code and its checkpoints) or the exact erf form (transformers,
            timm). Defaults to True.
        distillation_token: bool. A second learnable token after the [class]
            token, as DeiT's distilled models (Touvron et al., 2021,
            https://arxiv.org/abs/2012.12877) have. Defaults to False.
        activation: str. The MLP of each block: `"gelu"` (Dense -> GELU ->
            Dense, the form `approximate_gelu` says), `"quick_gelu"` (OpenAI
            CLIP's `x * sigmoid(1.702 x)`) or `"swiglu"` (DINOv2 giant's gated
            MLP, `keras_vit.layers.SwiGLU`, whose hidden width is `mlp_dim`).
            Defaults to `"gelu"`.
        layer_scale: float or None. Initial value of a learned per-channel
            scale on both residual branches of each block (LayerScale, Touvron
            et al., 2021, https://arxiv.org/abs/2103.17239; DINOv2: 1e-5);
            None for none. Defaults to None.
        num_registers: int. Register tokens (Darcet et al., 2023,
            https://arxiv.org/abs/2309.16588): learned tokens after the prefix
            tokens, added after the position embeddings and left out of the
            pooled output. Defaults to 0.
        pre_norm: bool. A LayerNorm on the embedded tokens before the first
            block (CLIP's `ln_pre`). Defaults to False.
        patch_bias: bool. Whether the patch embedding has a bias (CLIP's has
            none). Defaults to True.
        position_interpolation: str. How the position embeddings are resized
            to another grid (`keras_vit.interpolation`): `"bicubic"` (the
            paper's code, timm) or `"pytorch_bicubic"` (transformers' DINOv2,
            so that a model loaded at another size equals it). Defaults to
            `"bicubic"`.

    Every field after `resnet_width` describes a difference of a family of
    checkpoints made by other libraries (`keras_vit.converters`); a variant
    name gives the paper's values.

    For a hybrid, `patch_size` is the patch side on the feature map (1 for
    the paper's hybrids) and `stride` the side in pixels of the image area
    each token covers. A custom hybrid (e.g. a narrow one for tests) is a
    `VariantSpec` passed to `keras_vit.ViT` in place of a name:

    >>> spec = dataclasses.replace(parse_variant("mu/1"), resnet_units=(1, 1, 1),
    ...                            resnet_width=32)
    >>> spec.stride, spec.name
    (16, 'R[1, 1, 1]w32+mu/16')
    """

    size: str
    patch_size: int
    hidden_dim: int
    depth: int
    mlp_dim: int
    num_heads: int
    resnet_units: tuple = ()
    resnet_width: int = 64
    layer_norm_epsilon: float = 1e-6
    approximate_gelu: bool = True
    distillation_token: bool = False
    activation: str = "gelu"
    layer_scale: float | None = None
    num_registers: int = 0
    pre_norm: bool = False
    patch_bias: bool = True
    position_interpolation: str = "bicubic"

    def __post_init__(self):
        # A list would make the spec unhashable and compare unequal to the
        # table's tuples.
        object.__setattr__(self, "resnet_units", tuple(self.resnet_units))
        if self.resnet_units:
            check_units(self.resnet_units)
            check_width(self.resnet_width)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_int("num_registers", self.num_registers, minimum=0)
        if self.layer_scale is not None:
            check_number("layer_scale", self.layer_scale, 0.0, low_open=True)
        check_method(self.position_interpolation)

    @property
    def is_hybrid(self):
        return bool(self.resnet_units)

    @property
    def stride(self):
        """Side, in image pixels, of the square each token stands for."""
        if not self.is_hybrid:
            return self.patch_size
        return stem_stride(self.resnet_units) * self.patch_size

    @property
    def name(self):
        if not self.is_hybrid:
            return f"{self.size}/{self.patch_size}"
        for (resnet, stride), units in HYBRID_STAGES.items():
            if (units, 1, 64) == (self.resnet_units, self.patch_size, self.resnet_width):
                return f"{resnet}+{self.size}/{stride}"
        return (f"R{list(self.resnet_units)}w{self.resnet_width}+{self.size}/"
                f"{self.stride}")


# Width, depth, MLP width and heads of each size: Ti and S from DeiT
# (Touvron et al., 2021, Table 1), B, L and H from the ViT paper (Dosovitskiy
# et al., 2021, Table 1), mu (a 1-block micro model for tests and toy data)
# and M from big_vision's `decode_variant`.
SIZES = {
    "mu": dict(hidden_dim=32, depth=1, mlp_dim=128, num_heads=2),
    "Ti": dict(hidden_dim=192, depth=12, mlp_dim=768, num_heads=3),
    "S": dict(hidden_dim=384, depth=12, mlp_dim=1536, num_heads=6),
    "M": dict(hidden_dim=512, depth=12, mlp_dim=2048, num_heads=8),
    "B": dict(hidden_dim=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": dict(hidden_dim=1024, depth=24, mlp_dim=4096, num_heads=16),
    "H": dict(hidden_dim=1280, depth=32, mlp_dim=5120, num_heads=16),
}

# The ResNets of the hybrids, as `(name, token stride in pixels): units per
# stage`, from the reference configs (`vit_jax/configs/models.py`). R50 is
# ResNet-50 with BiT's normalization; for a stride of 16 its fourth stage is
# removed and its 3 units added to the third (the paper's option (ii),
# Section 3.1 / Appendix D.3), for 32 it is the regular (3, 4, 6, 3). R26
# (2, 2, 2, 2) is the AugReg paper's (Steiner et al., 2021) R26+S/32. The
# tokens are the 1x1 patches of the feature map, so the stride is the
# ResNet's: 4 (root) * 2 per stage after the first.
HYBRID_STAGES = {
    ("R50", 16): (3, 4, 9),
    ("R50", 32): (3, 4, 6, 3),
    ("R26", 32): (2, 2, 2, 2),
}

_VARIANT_RE = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)$")
_HYBRID_RE = re.compile(r"^(?P<resnet>R\d+)\+(?P<size>[A-Za-z]+)/(?P<stride>\d+)$")


def parse_variant(variant):
    """Resolves a variant name such as `"B/16"`, `"Ti/4"` or `"R50+B/16"`.

    Args:
        variant: str or `VariantSpec`. `"SIZE/PATCH"`: a size from `SIZES`
            and a positive patch size, separated by a slash; or a hybrid
            `"RESNET+SIZE/STRIDE"` from `HYBRID_STAGES` (`"R50+B/16"`,
            `"R50+L/32"`, `"R26+S/32"`, any size). A `VariantSpec` is
            returned as it is.

    Returns:
        A `VariantSpec`.

    Raises:
        ValueError: if the string is not of that form, names no size, or
            names a hybrid with no ResNet configuration.

    Example:

    >>> parse_variant("B/16").hidden_dim
    768
    >>> spec = parse_variant("R50+B/16")
    >>> spec.resnet_units, spec.patch_size, spec.stride
    ((3, 4, 9), 1, 16)
    """
    if isinstance(variant, VariantSpec):
        return variant
    if not isinstance(variant, str):
        raise ValueError(
            f"variant must be a string like 'B/16', received {variant!r} "
            f"of type {type(variant).__name__} (or pass a VariantSpec)"
        )
    hybrid = _HYBRID_RE.match(variant.strip())
    if hybrid is not None:
        return _parse_hybrid(variant, hybrid)
    match = _VARIANT_RE.match(variant.strip())
    if match is None:
        raise ValueError(
            f"Unknown variant {variant!r}: expected 'SIZE/PATCH' with SIZE "
            f"one of {sorted(SIZES)} and PATCH a positive integer, "
            f"e.g. 'B/16'"
        )
    size, patch = match.group("size"), int(match.group("patch"))
    if size not in SIZES:
        raise ValueError(
            f"Unknown variant {variant!r}: size {size!r} is not one of "
            f"{sorted(SIZES)}"
        )
    if patch <= 0:
        raise ValueError(
            f"Unknown variant {variant!r}: patch size must be a positive "
            f"integer, received {patch}"
        )
    return VariantSpec(size=size, patch_size=patch, **SIZES[size])


def _parse_hybrid(variant, match):
    resnet, size = match.group("resnet"), match.group("size")
    stride = int(match.group("stride"))
    resnets = sorted({name for name, _ in HYBRID_STAGES})
    if resnet not in resnets:
        raise ValueError(
            f"Unknown variant {variant!r}: ResNet {resnet!r} is not one of "
            f"{resnets}"
        )
    if size not in SIZES:
        raise ValueError(
            f"Unknown variant {variant!r}: size {size!r} is not one of "
            f"{sorted(SIZES)}"
        )
    strides = sorted({s for _, s in HYBRID_STAGES})
    if stride not in strides:
        raise ValueError(
            f"Unknown variant {variant!r}: the patch size of a hybrid is the "
            f"stride of its ResNet feature map and must be one of {strides}, "
            f"received {stride}"
        )
    if (resnet, stride) not in HYBRID_STAGES:
        known = ", ".join(f"{r}+SIZE/{s}" for r, s in HYBRID_STAGES)
        raise ValueError(
            f"Unknown variant {variant!r}: no stage configuration of {resnet} "
            f"gives stride {stride}; known hybrids: {known}"
        )
    return VariantSpec(
        size=size,
        patch_size=1,
        resnet_units=HYBRID_STAGES[(resnet, stride)],
        **SIZES[size],
    )
