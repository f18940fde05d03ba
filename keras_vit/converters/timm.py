"""timm's `vision_transformer` / `deit` weights (`config.json` with an `architecture`) <-> canonical.

timm's Hub repos (`timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`, ...) hold `model.safetensors`
and a `config.json` that names a timm architecture, the keyword arguments it was built with
(`model_args`) and its `pretrained_cfg` (input size, mean, std, crop, classes). The architecture
name carries the model's size, patch and image size; `ARCHITECTURES` is what keras_vit knows of
those names, with the sizes of timm's `vision_transformer.py` / `deit.py` (the paper's Ti, S, B,
L and H, keras_vit's `variants.SIZES`).

Covered: the paper's encoder as timm builds it (`vit_*_patch*_*`: orig in21k, AugReg, AugReg2,
MAE, DINO weights) and DeiT (`deit_*_patch16_*`, and `deit_*_distilled_patch16_*` with the
distillation token and `head_dist`). timm's blocks use the exact GELU (`nn.GELU`) and LayerNorm
epsilon 1e-6 unless `model_args` say otherwise. Later families (LayerScale, registers, CLIP,
SigLIP) are refused by name until keras_vit has their layers.

Keys: `cls_token`, `dist_token`, `pos_embed` (prefix rows first), `patch_embed.proj`,
`blocks.{i}.norm1 / attn.qkv (3D, D: q, k, v rows) / attn.proj / norm2 / mlp.fc1 / mlp.fc2`,
`norm`, `fc_norm` (mean-pooled models), `head`, `head_dist`.
"""

import functools
import re

import numpy as np

from keras_vit import converters as conv
from keras_vit import variants

NAME = "timm"

# timm's size names -> keras_vit.variants.SIZES; the patch and image size come from the name.
_SIZES = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}
_ARCH_RE = re.compile(
    r"^(?P<family>vit|deit)_(?P<size>tiny|small|base|large|huge)_(?P<distilled>distilled_)?"
    r"patch(?P<patch>\d+)_(?P<image>\d+)$")
ARCHITECTURES = ("vit_{tiny,small,base,large,huge}_patch{P}_{IMAGE}",
                 "deit_{tiny,small,base}[_distilled]_patch16_{IMAGE}")
# `model_args` keras_vit reads; others change the network in ways it does not model.
_MODEL_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim",
               "depth", "num_heads", "mlp_ratio", "qkv_bias", "class_token", "fc_norm",
               "act_layer", "dynamic_img_size", "no_embed_class", "pre_norm", "init_values",
               "reg_tokens", "drop_rate", "pos_drop_rate", "attn_drop_rate", "drop_path_rate",
               "proj_drop_rate", "patch_drop_rate", "weight_init")
_TANH_ACTS = ("gelu_tanh",)


def detect(files):
    return bool(files.config) and "architecture" in files.config


def _refuse(name, message):
    raise ValueError(f"{name}: {message}")


def _settings(config, name):
    """(VariantSpec, image size, pooling, distilled, class_token) of a timm config."""
    arch = config["architecture"]
    match = _ARCH_RE.match(arch)
    if match is None:
        _refuse(name, f"timm architecture {arch!r} is not supported; supported: "
                      f"{'; '.join(ARCHITECTURES)}")
    distilled = bool(match.group("distilled"))
    if distilled and match.group("family") != "deit":
        _refuse(name, f"timm architecture {arch!r}: only DeiT has distilled models")
    args = dict(config.get("model_args") or {})
    unknown = sorted(set(args) - set(_MODEL_ARGS))
    if unknown:
        _refuse(name, f"timm model_args {unknown} are not supported (keras_vit reads "
                      f"{', '.join(_MODEL_ARGS)})")
    for key, plain in (("init_values", None), ("reg_tokens", 0), ("no_embed_class", False),
                       ("pre_norm", False)):
        if args.get(key, plain) not in (plain, 0, None, False):
            _refuse(name, f"timm model_args {key}={args[key]!r} is not supported yet (the "
                          f"paper's encoder has {key}={plain!r})")
    dims = dict(variants.SIZES[_SIZES[match.group("size")]])
    width = args.get("embed_dim", dims["hidden_dim"])
    mlp_ratio = args.get("mlp_ratio", dims["mlp_dim"] / dims["hidden_dim"])
    mlp_dim = int(width * mlp_ratio)
    if mlp_dim != width * mlp_ratio:
        _refuse(name, f"mlp_ratio {mlp_ratio} of width {width} is not a whole MLP width")
    act = args.get("act_layer", "gelu")
    if act not in ("gelu",) + _TANH_ACTS:
        _refuse(name, f"timm act_layer {act!r} is not supported: expected 'gelu' or "
                      f"'gelu_tanh'")
    spec = conv.spec_of(
        patch_size=args.get("patch_size", int(match.group("patch"))),
        hidden_dim=width, depth=args.get("depth", dims["depth"]),
        num_heads=args.get("num_heads", dims["num_heads"]), mlp_dim=mlp_dim,
        layer_norm_epsilon=1e-6, approximate_gelu=act in _TANH_ACTS,
        distillation_token=distilled,
    )
    image = args.get("img_size", int(match.group("image")))
    pooling = args.get("global_pool", config.get("global_pool", "token"))
    class_token = args.get("class_token", True)
    if pooling not in ("token", "avg"):
        _refuse(name, f"timm global_pool {pooling!r} is not supported: expected 'token' or "
                      f"'avg'")
    if pooling == "avg" and args.get("fc_norm") is not False:
        # timm's mean pooling normalizes after pooling (fc_norm) unless fc_norm=False; the
        # paper's (and keras_vit's "gap") normalizes the tokens, then pools.
        _refuse(name, "timm global_pool 'avg' with fc_norm (LayerNorm after pooling) is not "
                      "supported; keras_vit's 'gap' is timm's global_pool='avg', fc_norm=False")
    if pooling == "token" and not class_token:
        _refuse(name, "timm global_pool 'token' needs class_token=True")
    if distilled:
        pooling = "distilled"
    return spec, conv.image_size_pair(image, "img_size"), {"avg": "gap"}.get(pooling, pooling), \
        class_token


def _rules(depth, heads, *, class_token, distilled):
    """The rules of a timm ViT; `distilled`: a `dist_token`, and `head_dist` beside `head`."""
    rules = conv.patch_embedding("patch_embed.proj")
    if class_token:
        rules.append(conv.same("cls", "cls_token"))
    if distilled:
        rules.append(conv.same("dist", "dist_token"))
    rules.append(conv.same(conv.POSEMB, "pos_embed"))
    for i in range(depth):
        prefix, block = f"blocks.{i}", conv.block(i)
        attention = f"{block}/{conv.ATTENTION}"
        rules += conv.layer_norm(f"{block}/{conv.ATTENTION_NORM}", f"{prefix}.norm1")
        names = ("query", "key", "value")
        rules.append(conv.Rule(
            tuple(f"{attention}/{n}/kernel" for n in names), (f"{prefix}.attn.qkv.weight",),
            functools.partial(_split_qkv_weight, heads=heads), _join_qkv_weight))
        rules.append(conv.Rule(
            tuple(f"{attention}/{n}/bias" for n in names), (f"{prefix}.attn.qkv.bias",),
            functools.partial(_split_qkv_bias, heads=heads), _join_qkv_bias))
        rules.append(conv.attention_output(
            f"{attention}/out/kernel", f"{prefix}.attn.proj.weight", heads))
        rules.append(conv.same(f"{attention}/out/bias", f"{prefix}.attn.proj.bias"))
        rules += conv.layer_norm(f"{block}/{conv.MLP_NORM}", f"{prefix}.norm2")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_0", f"{prefix}.mlp.fc1")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_1", f"{prefix}.mlp.fc2")
    rules += conv.layer_norm(conv.ENCODER_NORM, "norm")
    if distilled:
        # A distilled backbone (num_classes=0) has neither head; both are optional.
        rules += conv.distilled_head(("head.weight", "head_dist.weight"),
                                     ("head.bias", "head_dist.bias"))
    else:
        rules += conv.linear("head", "head")
    return rules


def _split_qkv_weight(w, *, heads):
    # timm fuses q, k and v as the row blocks of one (3D, D) weight; the canonical form has
    # three (D, heads, D / heads) kernels.
    width = w.shape[1]
    return tuple(part.T.reshape(width, heads, width // heads) for part in np.split(w, 3))


def _join_qkv_weight(q, k, v):
    return (np.concatenate([a.reshape(a.shape[0], -1).T for a in (q, k, v)], axis=0),)


def _split_qkv_bias(b, *, heads):
    return tuple(part.reshape(heads, -1) for part in np.split(b, 3))


def _join_qkv_bias(q, k, v):
    return (np.concatenate([a.reshape(-1) for a in (q, k, v)]),)


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
    spec, image_size, pooling, class_token = _settings(config, name)
    if tensors is None:
        arrays, sources, ignored = {}, {}, []
        num_classes = int(config.get("num_classes", 0) or 0)
    else:
        has_head = "head.weight" in tensors
        rules = _rules(spec.depth, spec.num_heads, class_token=class_token,
                       distilled=spec.distillation_token)
        heads = {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}
        arrays, sources, used = conv.apply_rules(
            rules, tensors, name=name, optional=heads if not has_head else ())
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


def write(arrays, architecture):
    """timm's files of a model: (config dict, tensors dict, None).

    The architecture is named by the model's size where timm registers it (`vit_base_patch16_224`)
    and the rest given as `model_args`, which timm's `create_model` applies.

    Raises:
        ValueError: a model timm's ViT cannot express with `model_args` (a hybrid, a LayerNorm
            epsilon other than timm's 1e-6, a pre-logits layer).
    """
    spec = architecture.spec
    if spec.is_hybrid:
        raise ValueError("timm's vision_transformer layout has no ResNet stem: a hybrid model "
                         "cannot be written in it (save_npz writes the paper's layout)")
    if spec.layer_norm_epsilon != 1e-6:
        raise ValueError(
            f"timm's ViT has LayerNorm epsilon 1e-6, not settable by model_args; this model "
            f"has {spec.layer_norm_epsilon} (write it in the 'transformers' layout instead)")
    if architecture.representation_size is not None:
        raise ValueError(
            f"timm's vision_transformer has no pre-logits layer; this model has one of width "
            f"{architecture.representation_size}")
    # A name timm registers, of the model's size where it has one; `model_args` set every
    # dimension, so the name only has to exist.
    family = "deit" if spec.distillation_token else "vit"
    registered = ("tiny", "small", "base") + (("large",) if family == "vit" else ())
    size = next((n for n, ours in _SIZES.items() if ours == spec.size and n in registered),
                "base")
    distilled = "distilled_" if spec.distillation_token else ""
    height, width = architecture.image_size
    arch = f"{family}_{size}_{distilled}patch16_224"
    pooling = {"gap": "avg", "distilled": "token"}.get(architecture.pooling,
                                                       architecture.pooling)
    model_args = {
        "img_size": [height, width], "patch_size": spec.patch_size,
        "in_chans": architecture.num_channels, "num_classes": architecture.num_classes,
        "embed_dim": spec.hidden_dim, "depth": spec.depth, "num_heads": spec.num_heads,
        "mlp_ratio": spec.mlp_dim / spec.hidden_dim, "qkv_bias": True,
        "global_pool": pooling, "class_token": architecture.pooling != "gap",
        "act_layer": "gelu_tanh" if spec.approximate_gelu else "gelu",
    }
    if pooling == "avg":
        model_args["fc_norm"] = False
    rules = _rules(spec.depth, spec.num_heads, class_token=architecture.pooling != "gap",
                   distilled=spec.distillation_token)
    tensors = conv.invert_rules(rules, arrays)
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
