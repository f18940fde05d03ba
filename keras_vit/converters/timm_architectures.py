"""The timm architecture names keras_vit reads, and the `model_args` timm registers for each.

A timm checkpoint's `config.json` names a registered architecture (`vit_base_patch14_dinov2`)
and, at most, the `model_args` it was built with on top of those the name registers; real Hub
configs often have none. `registered_args(name)` is what timm's `@register_model` function of
that name passes to the model (timm 1.0's `models/vision_transformer.py` and `models/deit.py`),
so `{**registered_args(name), **model_args}` is the whole of the model's arguments.

Two of timm's arguments are Python objects no config holds; the table names them as strings:
`norm_eps` stands for `norm_layer=partial(LayerNorm, eps=...)` (timm's LayerNorm has 1e-6
otherwise) and `mlp_layer="swiglu_packed"` for `SwiGLUPacked`, whose `act_layer` is `nn.SiLU`
(`"silu"`). `img_size` is the input size of the name's default pretrained config (the number in
the name; 518 for DINOv2, whose names have none). tests/families_timm_test.py checks every
entry against timm's own registry.

`written_name(spec, pooling)` is the other direction: the registered name a model is written
under, the one that carries what its `model_args` cannot.
"""

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of timm architecture names.

    Attributes:
        name: str. The family, for messages.
        pattern: str. A regex of the whole name; its groups `size`, `patch` and (where the name
            has one) `image`; an optional group `plus` joins the size (`base_plus`).
        sizes: dict. Size name -> `embed_dim`, `depth`, `num_heads` (and `mlp_ratio` where it
            is not 4).
        args: dict. The `model_args` every name of the family registers.
        variations: tuple of (regex, dict). `model_args` registered by the names the regex
            matches (searched), on top of `args`.
        image_size: int or None. Input size of names without one.
    """

    name: str
    pattern: str
    sizes: dict
    args: dict = dataclasses.field(default_factory=dict)
    variations: tuple = ()
    image_size: int | None = None


def _size(embed_dim, depth, num_heads, mlp_ratio=4.0):
    return dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)


# The paper's sizes (Ti is DeiT's), as timm registers them.
_VIT_SIZES = {"tiny": _size(192, 12, 3), "small": _size(384, 12, 6), "base": _size(768, 12, 12),
              "large": _size(1024, 24, 16), "huge": _size(1280, 32, 16)}

FAMILIES = (
    Family("ViT", r"vit_(?P<size>tiny|small|base|large|huge)_patch(?P<patch>\d+)_(?P<image>\d+)",
           _VIT_SIZES),
    # DeiT; its `_distilled_` names have a distillation token and a second head.
    Family("DeiT", r"deit_(?P<size>tiny|small|base)_(?:distilled_)?patch(?P<patch>\d+)_"
                   r"(?P<image>\d+)", _VIT_SIZES),
    # DINOv2 (Oquab et al., 2023) and its registers (Darcet et al., 2023): LayerScale; the
    # register models keep the class token out of the position embedding. Giant's MLP is a
    # SwiGLU packed in one fc1, its hidden width int(1536 * 5.33334) = 8192 before the gate.
    Family("DINOv2", r"vit_(?P<size>small|base|large|giant)_patch(?P<patch>14)_(?:reg4_)?dinov2",
           {"small": _size(384, 12, 6), "base": _size(768, 12, 12),
            "large": _size(1024, 24, 16), "giant": _size(1536, 40, 24, 2.66667 * 2)},
           args=dict(init_values=1e-5),
           variations=((r"_reg4_", dict(reg_tokens=4, no_embed_class=True)),
                       (r"^vit_giant_", dict(mlp_layer="swiglu_packed", act_layer="silu"))),
           image_size=518),
    # CLIP image towers (OpenAI, LAION OpenCLIP, DFN, MetaCLIP): a LayerNorm before the blocks
    # (and so no patch bias), epsilon 1e-5; OpenAI's weights want QuickGELU.
    Family("CLIP", r"vit_(?P<size>xsmall|medium|betwixt|base|large|huge|giant|gigantic)_"
                   r"patch(?P<patch>\d+)(?P<plus>_plus)?_clip_(?:quickgelu_)?(?P<image>\d+)",
           {"xsmall": _size(256, 10, 4), "medium": _size(512, 12, 8),
            "betwixt": _size(640, 12, 10), "base": _size(768, 12, 12),
            "base_plus": _size(896, 12, 14), "large": _size(1024, 24, 16),
            "huge": _size(1280, 32, 16), "giant": _size(1408, 40, 16, 48 / 11),
            "gigantic": _size(1664, 48, 16, 64 / 13)},
           args=dict(pre_norm=True, norm_eps=1e-5),
           variations=((r"_quickgelu_", dict(act_layer="quick_gelu")),)),
    # SigLIP image towers: no class token, attention-probe ("map") pooling; the `_gap_` names
    # mean-pool the normed tokens instead. timm registers the tanh GELU for some names only.
    Family("SigLIP", r"vit_(?P<size>base|large|so400m|giantopt)_patch(?P<patch>\d+)_siglip_"
                     r"(?:gap_)?(?P<image>\d+)",
           {"base": _size(768, 12, 12), "large": _size(1024, 24, 16),
            "so400m": _size(1152, 27, 16, 3.7362), "giantopt": _size(1536, 40, 16)},
           args=dict(class_token=False, global_pool="map"),
           variations=((r"_gap_", dict(global_pool="avg", fc_norm=False)),
                       (r"^vit_base_patch32_|^vit_large_patch16_siglip_(gap_)?512$|"
                        r"^vit_so400m_patch16_|^vit_giantopt_", dict(act_layer="gelu_tanh")))),
)

# The names of each family, in words, for messages.
ARCHITECTURES = (
    "vit_{tiny,small,base,large,huge}_patch{P}_{IMAGE}",
    "deit_{tiny,small,base}[_distilled]_patch16_{IMAGE}",
    "vit_{small,base,large,giant}_patch14[_reg4]_dinov2",
    "vit_{xsmall,medium,betwixt,base,large,huge,giant,gigantic}_patch{P}[_plus]_clip"
    "[_quickgelu]_{IMAGE}",
    "vit_{base,large,so400m,giantopt}_patch{P}_siglip[_gap]_{IMAGE}",
)

# Families of timm's other modules keras_vit cannot express, by what they lack.
_REFUSED = (
    (r"^beit", "timm BEiT models (beit_*, beitv2_*, beit3_*) are not supported: keras_vit's "
               "attention has no relative position bias"),
    (r"^eva", "timm EVA models (eva_*, eva02_*) are not supported: keras_vit has no rotary "
              "position embeddings (RoPE) and no SwiGLU MLP with a sub-LayerNorm"),
    (r"^vit_.*_(rope|dinov3)", "timm ViTs with rotary position embeddings (vit_*_rope_*, "
                               "vit_*_dinov3*) are not supported: keras_vit has learned "
                               "absolute position embeddings only"),
)


def registered_args(name):
    """(family, the `model_args` timm registers for architecture `name`).

    Raises:
        ValueError: a name of a family keras_vit cannot express (the message says what it
            lacks), or one it does not know (the message lists `ARCHITECTURES`).
    """
    for pattern, message in _REFUSED:
        if re.search(pattern, name):
            raise ValueError(f"timm architecture {name!r}: {message}")
    for family in FAMILIES:
        match = re.fullmatch(family.pattern, name)
        if match is None:
            continue
        size = match["size"] + (match.groupdict().get("plus") or "")
        args = dict(family.sizes[size], patch_size=int(match["patch"]), **family.args)
        for pattern, extra in family.variations:
            if re.search(pattern, name):
                args.update(extra)
        image = match.groupdict().get("image")
        args["img_size"] = int(image) if image else family.image_size
        return family, args
    raise ValueError(f"timm architecture {name!r} is not supported; supported: "
                     f"{'; '.join(ARCHITECTURES)}")


# keras_vit's size names -> timm's, for the names written.
_SIZE_NAMES = {"Ti": "tiny", "S": "small", "B": "base", "L": "large", "H": "huge"}


def written_name(spec, pooling):
    """The architecture name to write a model under (`spec`: its VariantSpec).

    A name timm registers that carries what `model_args` cannot: the LayerNorm epsilon and
    the MLP layer (Python objects in timm's registry, not in a config). `model_args` set every
    other argument, so the name only has to exist, of the model's family and size where timm
    has one.
    """
    size = _SIZE_NAMES.get(spec.size, "base")
    if spec.activation == "swiglu":
        if spec.layer_norm_epsilon != 1e-6 or spec.distillation_token:
            raise ValueError(
                f"timm registers its SwiGLU MLP (SwiGLUPacked) for DINOv2 giant only, with "
                f"LayerNorm epsilon 1e-6 and no distillation token; this model has epsilon "
                f"{spec.layer_norm_epsilon}")
        return f"vit_giant_patch14_{'reg4_' if spec.num_registers else ''}dinov2"
    if spec.layer_norm_epsilon == 1e-5 and not spec.distillation_token:
        size = size if size in ("base", "large", "huge") else "base"
        patch = 16 if size == "base" else 14
        return f"vit_{size}_patch{patch}_clip_224"
    if spec.layer_norm_epsilon != 1e-6:
        raise ValueError(
            f"timm's ViT has LayerNorm epsilon 1e-6 (1e-5 for its CLIP names), not settable "
            f"by model_args; this model has {spec.layer_norm_epsilon} (write it in the "
            f"'transformers' layout instead)")
    if spec.distillation_token:
        if spec.num_registers or pooling == "map":
            raise ValueError("timm's distilled DeiT layout has no register tokens or MAP "
                             "pooling; this model has a distillation token with them")
        size = size if size in ("tiny", "small", "base") else "base"
        return f"deit_{size}_distilled_patch16_224"
    if spec.layer_scale is not None:
        size = size if size in ("small", "base", "large") else "base"
        return f"vit_{size}_patch14_{'reg4_' if spec.num_registers else ''}dinov2"
    if pooling == "map":
        return "vit_base_patch16_siglip_224"
    size = size if size in ("tiny", "small", "base", "large") else "base"
    return f"vit_{size}_patch16_224"
