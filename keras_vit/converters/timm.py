"""timm's `vision_transformer` / `deit` weights (`config.json` with an `architecture`) <-> canonical.

timm's Hub repos (`timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`, ...) hold `model.safetensors`
and a `config.json` that names a timm architecture, the keyword arguments it was built with
beyond the name's (`model_args`) and its `pretrained_cfg` (input size, mean, std, crop,
classes). The arguments a name registers come from `timm_architectures`, the table of the
names keras_vit knows; the config's `model_args` override them.

Covered: the paper's encoder as timm builds it (`vit_*_patch*_*`: orig in21k, AugReg, AugReg2,
MAE, DINO weights), DeiT (`deit_*_patch16_*`, and `deit_*_distilled_patch16_*` with the
distillation token and `head_dist`), DINOv2 with and without registers
(`vit_*_patch14[_reg4]_dinov2`: LayerScale, SwiGLU for giant), the CLIP image towers
(`vit_*_clip[_quickgelu]_*`: LayerNorm before the blocks, no patch bias, the projection as the
head) and SigLIP's (`vit_*_siglip[_gap]_*`: attention-probe pooling, no class token). timm's
blocks use the exact GELU (`nn.GELU`) and LayerNorm epsilon 1e-6 unless the name or
`model_args` say otherwise. BEiT, EVA and the RoPE ViTs are refused by name.

Keys: `cls_token`, `dist_token`, `reg_token`, `pos_embed` (prefix rows first, none for them
with `no_embed_class`), `patch_embed.proj`, `norm_pre`, `blocks.{i}.norm1 / attn.qkv (3D, D:
q, k, v rows) / attn.proj / ls1.gamma / norm2 / mlp.fc1 / mlp.fc2 / ls2.gamma`, `norm`,
`fc_norm` (mean-pooled models), `attn_pool.latent / q / kv (2D, D: k, v rows) / proj / norm /
mlp.fc1 / mlp.fc2`, `head`, `head_dist`.
"""

import dataclasses
import functools
import math

import numpy as np

from keras_vit import converters as conv
from keras_vit.converters import timm_architectures

NAME = "timm"
ARCHITECTURES = timm_architectures.ARCHITECTURES
# `model_args` keras_vit reads; others change the network in ways it does not model.
_MODEL_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim",
               "depth", "num_heads", "mlp_ratio", "qkv_bias", "qk_norm", "class_token",
               "fc_norm", "act_layer", "norm_layer", "mlp_layer", "dynamic_img_size",
               "no_embed_class", "pre_norm", "init_values", "reg_tokens", "drop_rate",
               "pos_drop_rate", "attn_drop_rate", "drop_path_rate", "proj_drop_rate",
               "patch_drop_rate", "weight_init", "fix_init")
# timm act_layer -> (VariantSpec.activation, approximate_gelu) of a plain MLP (`Mlp`).
_ACTIVATIONS = {"gelu": ("gelu", False), "gelu_tanh": ("gelu", True),
                "quick_gelu": ("quick_gelu", False)}
_MAP = "MAPHead_0"
# timm's attn_pool reads the patch tokens only; keras_vit's MAPHead reads every token.
_MAP_REGISTERS = ("timm global_pool 'map' with reg_tokens is not supported: timm's attention "
                  "pool leaves the registers out, keras_vit's MAP head attends to every token")


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The parts of timm's `VisionTransformer` a model has: what its keys are."""

    depth: int
    heads: int
    class_token: bool = True
    distilled: bool = False
    registers: int = 0
    no_embed_class: bool = False
    pre_norm: bool = False
    layer_scale: bool = False
    map_pooling: bool = False


def detect(files):
    return bool(files.config) and "architecture" in files.config


def _refuse(name, message):
    raise ValueError(f"{name}: {message}")


def _arguments(config, name):
    """(family, every model argument) of a timm config: the name's, then the config's."""
    arch = config["architecture"]
    try:
        family, args = timm_architectures.registered_args(arch)
    except ValueError as exc:
        _refuse(name, str(exc))
    given = dict(config.get("model_args") or {})
    unknown = sorted(set(given) - set(_MODEL_ARGS))
    if unknown:
        _refuse(name, f"timm model_args {unknown} are not supported (keras_vit reads "
                      f"{', '.join(_MODEL_ARGS)})")
    if "norm_layer" in given:
        # A config holds a norm layer by name only, which gives timm's LayerNorm its 1e-6.
        if given.pop("norm_layer") != "layernorm":
            _refuse(name, f"timm norm_layer {config['model_args']['norm_layer']!r} is not "
                          f"supported: keras_vit's blocks use LayerNorm ('layernorm')")
        args["norm_eps"] = 1e-6
    if given.get("mlp_layer", "swiglu_packed") != "swiglu_packed":
        _refuse(name, f"timm mlp_layer {given['mlp_layer']!r} is not supported: expected "
                      f"'swiglu_packed' (DINOv2 giant's SwiGLUPacked)")
    # timm builds a fixed-size ViT at its pretrained_cfg's input size unless img_size is given.
    input_size = (config.get("pretrained_cfg") or {}).get("input_size")
    if input_size:
        args["img_size"] = list(input_size[-2:])
    args.update(given)
    return family, args


def _activation(args, name):
    """(VariantSpec.activation, approximate_gelu, hidden width) of the blocks' MLP."""
    act = args.get("act_layer") or "gelu"
    # timm's Block: int(dim * mlp_ratio), truncated (SigLIP so400m: int(1152 * 3.7362) = 4304).
    hidden = int(args["embed_dim"] * args["mlp_ratio"])
    if args.get("mlp_layer") == "swiglu_packed":
        if act not in ("silu", "swish"):
            _refuse(name, f"timm SwiGLUPacked MLP with act_layer {act!r} is not supported: "
                          f"keras_vit's SwiGLU gates with SiLU")
        # One fc1 of 2H outputs, gate half first (`gate_last=False`); fc2 reads H.
        return "swiglu", False, hidden // 2
    if act not in _ACTIVATIONS:
        _refuse(name, f"timm act_layer {act!r} is not supported: expected one of "
                      f"{list(_ACTIVATIONS)}")
    return (*_ACTIVATIONS[act], hidden)


def _settings(config, name):
    """(VariantSpec, image size, pooling, _Layout, qkv_bias) of a timm config."""
    family, args = _arguments(config, name)
    distilled = family.name == "DeiT" and "_distilled_" in config["architecture"]
    if args.get("qk_norm"):
        _refuse(name, "timm model_args qk_norm=True is not supported: keras_vit's attention "
                      "has no LayerNorm on the queries and keys")
    activation, approximate, mlp_dim = _activation(args, name)
    registers = args.get("reg_tokens") or 0
    pre_norm = bool(args.get("pre_norm"))
    spec = conv.spec_of(
        patch_size=args["patch_size"], hidden_dim=args["embed_dim"], depth=args["depth"],
        num_heads=args["num_heads"], mlp_dim=mlp_dim,
        layer_norm_epsilon=args.get("norm_eps", 1e-6), approximate_gelu=approximate,
        distillation_token=distilled, activation=activation,
        # timm's Block has LayerScale when init_values is truthy.
        layer_scale=float(args["init_values"]) if args.get("init_values") else None,
        num_registers=registers, pre_norm=pre_norm,
        patch_bias=not pre_norm,  # timm: PatchEmbed(bias=not pre_norm)
    )
    pooling = args.get("global_pool", config.get("global_pool", "token"))
    class_token = args.get("class_token", True)
    if pooling not in ("token", "avg", "map"):
        _refuse(name, f"timm global_pool {pooling!r} is not supported: expected 'token', "
                      f"'avg' or 'map'")
    if pooling == "avg" and args.get("fc_norm") is not False:
        # timm's mean pooling normalizes after pooling (fc_norm) unless fc_norm=False; the
        # paper's (and keras_vit's "gap") normalizes the tokens, then pools.
        _refuse(name, "timm global_pool 'avg' with fc_norm (LayerNorm after pooling) is not "
                      "supported; keras_vit's 'gap' is timm's global_pool='avg', fc_norm=False")
    if pooling == "token" and not class_token:
        _refuse(name, "timm global_pool 'token' needs class_token=True")
    if pooling == "map":
        if class_token or args.get("fc_norm"):
            _refuse(name, "timm global_pool 'map' with a class token or fc_norm is not "
                          "supported: keras_vit's 'map' pooling (SigLIP) has neither")
        if activation != "gelu":
            _refuse(name, f"timm global_pool 'map' with {activation!r} blocks is not "
                          f"supported: keras_vit's MAP head has a GELU MLP")
        if registers:
            _refuse(name, _MAP_REGISTERS)
    if distilled and (registers or args.get("no_embed_class")):
        _refuse(name, "timm's distilled DeiT with reg_tokens or no_embed_class is not "
                      "supported")
    layout = _Layout(
        depth=spec.depth, heads=spec.num_heads, class_token=class_token, distilled=distilled,
        registers=registers, no_embed_class=bool(args.get("no_embed_class")),
        pre_norm=pre_norm, layer_scale=spec.layer_scale is not None,
        map_pooling=pooling == "map")
    pooling = "distilled" if distilled else {"avg": "gap"}.get(pooling, pooling)
    image_size = conv.image_size_pair(args["img_size"], "img_size")
    return spec, image_size, pooling, layout, args.get("qkv_bias", True)


def _rules(layout):
    """The rules of a timm ViT of `layout`."""
    depth, heads = layout.depth, layout.heads
    rules = conv.patch_embedding("patch_embed.proj")
    if layout.pre_norm:
        rules = rules[:1]  # timm's pre-norm models have no patch bias
    rules += _prefix_rules(layout)
    if layout.pre_norm:
        rules += conv.layer_norm("pre_norm", "norm_pre")
    for i in range(depth):
        prefix, block = f"blocks.{i}", conv.block(i)
        attention = f"{block}/{conv.ATTENTION}"
        rules += conv.layer_norm(f"{block}/{conv.ATTENTION_NORM}", f"{prefix}.norm1")
        rules += _fused(attention, ("query", "key", "value"), f"{prefix}.attn.qkv", heads)
        rules.append(conv.attention_output(
            f"{attention}/out/kernel", f"{prefix}.attn.proj.weight", heads))
        rules.append(conv.same(f"{attention}/out/bias", f"{prefix}.attn.proj.bias"))
        rules += conv.layer_norm(f"{block}/{conv.MLP_NORM}", f"{prefix}.norm2")
        # A SwiGLU's packed fc1 (2H, D), gate rows first, is the canonical (D, 2H) kernel
        # transposed, gate columns first: the same rule as a plain MLP's.
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_0", f"{prefix}.mlp.fc1")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_1", f"{prefix}.mlp.fc2")
        if layout.layer_scale:
            rules.append(conv.same(f"{block}/LayerScale_attention/scale", f"{prefix}.ls1.gamma"))
            rules.append(conv.same(f"{block}/LayerScale_mlp/scale", f"{prefix}.ls2.gamma"))
    rules += conv.layer_norm(conv.ENCODER_NORM, "norm")
    if layout.map_pooling:
        rules += _map_rules(heads)
    if layout.distilled:
        # A distilled backbone (num_classes=0) has neither head; both are optional.
        rules += conv.distilled_head(("head.weight", "head_dist.weight"),
                                     ("head.bias", "head_dist.bias"))
    else:
        rules += conv.linear("head", "head")
    return rules


def _prefix_rules(layout):
    """The class, distillation and register tokens and the position embedding.

    The canonical position embedding has a row for each of the class and distillation tokens
    and none for the registers. timm's has rows for all of them, or, with `no_embed_class`,
    for the patches only. A token's position row is a constant added to a constant, so each
    form maps to the other exactly: `no_embed_class` reads as zero class rows and writes as
    cls + its row; position rows of registers are folded into the registers (written as zeros).
    """
    tokens = [("cls", "cls_token")] if layout.class_token else []
    if layout.distilled:
        tokens.append(("dist", "dist_token"))
    prefix = len(tokens)
    if not layout.registers and not layout.no_embed_class:
        return [conv.same(c, s) for c, s in tokens] + [conv.same(conv.POSEMB, "pos_embed")]
    if layout.no_embed_class:
        def to_canonical(*found):
            *values, pos = found
            rows = np.zeros((1, prefix, pos.shape[-1]), pos.dtype)
            return (*values, np.concatenate([rows, pos], axis=1))

        def from_canonical(*arrays):
            *values, pos = arrays
            return (*(v + pos[:, i:i + 1] for i, v in enumerate(values)), pos[:, prefix:])

        rules = [conv.Rule((*(c for c, _ in tokens), conv.POSEMB),
                           (*(s for _, s in tokens), "pos_embed"), to_canonical, from_canonical)]
        if layout.registers:
            rules.append(conv.same("reg", "reg_token"))
        return rules
    count = layout.registers

    def fold(reg, pos):
        return (reg + pos[:, prefix:prefix + count],
                np.concatenate([pos[:, :prefix], pos[:, prefix + count:]], axis=1))

    def unfold(reg, pos):
        rows = np.zeros((1, count, pos.shape[-1]), pos.dtype)
        return reg, np.concatenate([pos[:, :prefix], rows, pos[:, prefix:]], axis=1)

    return [conv.same(c, s) for c, s in tokens] + [
        conv.Rule(("reg", conv.POSEMB), ("reg_token", "pos_embed"), fold, unfold)]


def _map_rules(heads):
    """timm's `AttentionPoolLatent` <-> big_vision's MAPHead names."""
    attention = f"{_MAP}/MultiHeadDotProductAttention_0"
    rules = [
        conv.same(f"{_MAP}/probe", "attn_pool.latent"),
        conv.attention_projection(f"{attention}/query/kernel", "attn_pool.q.weight", heads),
        conv.attention_bias(f"{attention}/query/bias", "attn_pool.q.bias", heads),
        *_fused(attention, ("key", "value"), "attn_pool.kv", heads),
        conv.attention_output(f"{attention}/out/kernel", "attn_pool.proj.weight", heads),
        conv.same(f"{attention}/out/bias", "attn_pool.proj.bias"),
    ]
    rules += conv.layer_norm(f"{_MAP}/LayerNorm_0", "attn_pool.norm")
    rules += conv.linear(f"{_MAP}/MlpBlock_0/Dense_0", "attn_pool.mlp.fc1")
    rules += conv.linear(f"{_MAP}/MlpBlock_0/Dense_1", "attn_pool.mlp.fc2")
    return rules


def _fused(attention, names, source_prefix, heads):
    """A torch Linear whose row blocks are the projections `names` <-> their kernels, biases."""
    return [
        conv.Rule(tuple(f"{attention}/{n}/kernel" for n in names), (f"{source_prefix}.weight",),
                  functools.partial(_split_weight, parts=len(names), heads=heads),
                  _join_weight),
        conv.Rule(tuple(f"{attention}/{n}/bias" for n in names), (f"{source_prefix}.bias",),
                  functools.partial(_split_bias, parts=len(names), heads=heads), _join_bias),
    ]


def _split_weight(w, *, parts, heads):
    # timm fuses q, k and v (the MAP head: k and v) as the row blocks of one (parts * D, D)
    # weight; the canonical form has one (D, heads, D / heads) kernel each.
    width = w.shape[1]
    return tuple(part.T.reshape(width, heads, width // heads) for part in np.split(w, parts))


def _join_weight(*kernels):
    return (np.concatenate([a.reshape(a.shape[0], -1).T for a in kernels], axis=0),)


def _split_bias(b, *, parts, heads):
    return tuple(part.reshape(heads, -1) for part in np.split(b, parts))


def _join_bias(*biases):
    return (np.concatenate([a.reshape(-1) for a in biases]),)


def _preprocessing(pretrained_cfg):
    if not pretrained_cfg:
        return {}
    out = {}
    if "mean" in pretrained_cfg and "std" in pretrained_cfg:
        out["mean"] = tuple(float(v) for v in pretrained_cfg["mean"])
        out["std"] = tuple(float(v) for v in pretrained_cfg["std"])
    if "crop_pct" in pretrained_cfg:
        out["crop_fraction"] = float(pretrained_cfg["crop_pct"])
    if pretrained_cfg.get("interpolation") in ("bilinear", "bicubic"):
        out["interpolation"] = pretrained_cfg["interpolation"]
    return out


def read(files, tensors):
    """A timm checkpoint in the canonical form (`keras_vit.converters.Checkpoint`).

    With `tensors=None`, the architecture its config states and no arrays.
    """
    config, name = files.config, files.name
    spec, image_size, pooling, layout, qkv_bias = _settings(config, name)
    if tensors is None:
        arrays, sources, ignored = {}, {}, []
        num_classes = int(config.get("num_classes", 0) or 0)
    else:
        has_head = "head.weight" in tensors
        optional = set()
        if not has_head:
            optional |= {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
        if not qkv_bias:
            optional |= {f"blocks.{i}.attn.qkv.bias" for i in range(spec.depth)}
        arrays, sources, used = conv.apply_rules(_rules(layout), tensors, name=name,
                                                 optional=optional)
        if not qkv_bias:
            # The canonical form always has q, k and v biases; a model without them has zeros.
            width = spec.hidden_dim // spec.num_heads
            for i in range(spec.depth):
                for part in ("query", "key", "value"):
                    key = f"{conv.block(i)}/{conv.ATTENTION}/{part}/bias"
                    arrays[key] = np.zeros((spec.num_heads, width), "float32")
                    sources[key] = f"(qkv_bias=False: zeros for {part} bias of block {i})"
        ignored = conv.unexpected_keys(tensors, used, name=name)
        num_classes = int(tensors["head.weight"].shape[0]) if has_head else 0
    pretrained_cfg = config.get("pretrained_cfg") or {}
    names = config.get("label_names")
    architecture = conv.Architecture(
        spec=spec, image_size=image_size, pooling=pooling, num_classes=num_classes,
        num_channels=(config.get("model_args") or {}).get("in_chans", 3),
        class_names=tuple(names) if names and len(names) == num_classes else None,
        **_preprocessing(pretrained_cfg),
    )
    return conv.Checkpoint(
        name=name, source=NAME, layout=f"timm {config['architecture']}",
        architecture=architecture, arrays=arrays, sources=sources, ignored=ignored,
    )


def _mlp_ratio(hidden, width):
    """The mlp_ratio whose int(width * ratio) is `hidden`, as timm's Block computes it."""
    ratio = hidden / width
    while int(width * ratio) < hidden:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


def write(arrays, architecture):
    """timm's files of a model: (config dict, tensors dict, None).

    The architecture is a name timm registers (`vit_base_patch16_224`, `vit_base_patch14_dinov2`,
    `vit_base_patch16_clip_224`, ...: `timm_architectures.written_name`) and the rest is given as `model_args`,
    which timm's `create_model` applies.

    Raises:
        ValueError: a model timm's ViT cannot express with a name and `model_args` (a hybrid, a
            LayerNorm epsilon other than timm's 1e-6 and CLIP's 1e-5, a pre-logits layer, a
            patch bias that does not follow pre_norm, MAP pooling with non-GELU blocks).
    """
    spec = architecture.spec
    if spec.is_hybrid:
        raise ValueError("timm's vision_transformer layout has no ResNet stem: a hybrid model "
                         "cannot be written in it (save_npz writes the paper's layout)")
    if architecture.representation_size is not None:
        raise ValueError(
            f"timm's vision_transformer has no pre-logits layer; this model has one of width "
            f"{architecture.representation_size}")
    if spec.patch_bias == spec.pre_norm:
        raise ValueError(
            f"timm's patch embedding has a bias exactly when there is no pre-norm "
            f"(PatchEmbed(bias=not pre_norm)); this model has pre_norm={spec.pre_norm} and "
            f"patch_bias={spec.patch_bias}")
    if architecture.pooling == "map" and spec.num_registers:
        raise ValueError(_MAP_REGISTERS)
    if architecture.pooling == "map" and spec.activation != "gelu":
        raise ValueError(
            f"timm's MAP head (attn_pool) has the blocks' activation; keras_vit's has a GELU "
            f"MLP, and this model's blocks are {spec.activation!r}")
    arch = timm_architectures.written_name(spec, architecture.pooling)
    height, width = architecture.image_size
    pooling = {"gap": "avg", "distilled": "token"}.get(architecture.pooling,
                                                       architecture.pooling)
    class_token = architecture.pooling not in ("gap", "map")
    swiglu = spec.activation == "swiglu"
    model_args = {
        "img_size": [height, width], "patch_size": spec.patch_size,
        "in_chans": architecture.num_channels, "num_classes": architecture.num_classes,
        "embed_dim": spec.hidden_dim, "depth": spec.depth, "num_heads": spec.num_heads,
        "mlp_ratio": _mlp_ratio(spec.mlp_dim * (2 if swiglu else 1), spec.hidden_dim),
        "qkv_bias": True, "global_pool": pooling, "class_token": class_token,
    }
    if not swiglu:  # the SwiGLU name registers its SiLU
        model_args["act_layer"] = ("quick_gelu" if spec.activation == "quick_gelu" else
                                   "gelu_tanh" if spec.approximate_gelu else "gelu")
    if pooling == "avg":
        model_args["fc_norm"] = False
    family = dict(init_values=spec.layer_scale, reg_tokens=spec.num_registers,
                  no_embed_class=bool(spec.num_registers), pre_norm=spec.pre_norm)
    # The DINOv2, CLIP and SigLIP names register some of these: a model states its own. The
    # paper's names (`*_patch16_224`) register none, and the paper's models leave them out.
    if not arch.endswith("_patch16_224") or any(family.values()):
        model_args.update(family)
    layout = _Layout(
        depth=spec.depth, heads=spec.num_heads, class_token=class_token,
        distilled=spec.distillation_token, registers=spec.num_registers,
        no_embed_class=bool(spec.num_registers), pre_norm=spec.pre_norm,
        layer_scale=spec.layer_scale is not None, map_pooling=pooling == "map")
    tensors = conv.invert_rules(_rules(layout), arrays)
    names = architecture.class_names
    config = {
        "architecture": arch,
        "num_classes": architecture.num_classes,
        "num_features": spec.hidden_dim,
        "global_pool": pooling,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [architecture.num_channels, height, width],
            "fixed_input_size": True,
            "interpolation": architecture.interpolation,
            "crop_pct": architecture.crop_fraction,
            "crop_mode": "center",
            "mean": list(architecture.mean),
            "std": list(architecture.std),
            "num_classes": architecture.num_classes,
            "first_conv": "patch_embed.proj",
            "classifier": ["head", "head_dist"] if spec.distillation_token else "head",
        },
    }
    if names:
        config["label_names"] = list(names)
    return config, tensors, None
