"""transformers' DINOv2, CLIP and SigLIP image towers <-> the canonical form.

The families of `keras_vit.converters.transformers` whose encoder adds options to the paper's
(`keras_vit.variants.VariantSpec` fields), as transformers names them (`model_type`):

- `dinov2` (`Dinov2Model`, Oquab et al., 2023, https://arxiv.org/abs/2304.07193): LayerScale
  on both residual branches (`layer_scale{1,2}.lambda1`), LayerNorm epsilon 1e-6, and for the
  giant model a SwiGLU MLP (`use_swiglu_ffn`: `mlp.weights_in` packs the gate and the value
  projection, gate rows first, `mlp.weights_out`). Its output is the normed [class] token.
  `embeddings.mask_token` only replaces masked patches in pre-training: ignored.
- `dinov2_with_registers` (Darcet et al., 2023, https://arxiv.org/abs/2309.16588): the same,
  with `embeddings.register_tokens` after the [class] token, outside the position embeddings.
- `clip` (`CLIPModel`, Radford et al., 2021, https://arxiv.org/abs/2103.00020): the image tower
  `vision_model.*` (a patch embedding without bias, `pre_layrnorm` before the blocks, OpenAI's
  `quick_gelu`, `post_layernorm` on the [class] token) and `visual_projection` (no bias) as the
  head, so the model's output is `get_image_features`; the text tower is ignored.
  `clip_vision_model`: `CLIPVisionModel` (no projection: the pooled [class] token) or
  `CLIPVisionModelWithProjection` (its `image_embeds`).
- `siglip` (`SiglipModel`, Zhai et al., 2023, https://arxiv.org/abs/2303.15343) and
  `siglip_vision_model`: no [class] token, and the pooled output is a multi-head attention
  probe (`vision_model.head`, big_vision's MAP head, `pooling="map"`) whose q, k and v are one
  packed (3D, D) `in_proj_weight`. `SiglipForImageClassification` averages the tokens
  (`pooling="gap"`) under its `classifier`; its unused MAP head is ignored.

Written back: DINOv2 (`write_dinov2`), any model with LayerScale, registers or a SwiGLU MLP
and nothing transformers' `Dinov2Model` lacks; CLIP and SigLIP are read only.

Every size is the config's: CLIP and SigLIP keep the image tower's in the full model's
`vision_config`; DINOv2's MLP width is `mlp_ratio` times the width, and for SwiGLU two thirds
of that rounded up to a multiple of 8 (transformers' `Dinov2SwiGLUFFN`, DINOv2's
`SwiGLUFFNFused`). Keys are read from the saved file, never from a model's `state_dict()`:
transformers 5 renames modules in memory (`q_proj`, `gate_proj`) and back when it saves.
"""

import numpy as np

from keras_vit import converters as conv

# Canonical keys of the family options (the `_Param` table of `keras_vit.checkpoints`).
REGISTERS = "reg"
PRE_NORM = "pre_norm"
LAYER_SCALE_ATTENTION, LAYER_SCALE_MLP = "LayerScale_attention", "LayerScale_mlp"
MAP_HEAD = "MAPHead_0"

# transformers' `hidden_act` -> (`VariantSpec.activation`, `approximate_gelu`).
ACTIVATIONS = {
    "gelu": ("gelu", False),
    "gelu_new": ("gelu", True),
    "gelu_pytorch_tanh": ("gelu", True),
    "gelu_fast": ("gelu", True),
    "gelu_python_tanh": ("gelu", True),
    "quick_gelu": ("quick_gelu", False),
}

# Families transformers has and keras_vit cannot build yet: model_type -> the missing piece.
MISSING = {
    "beit": "relative position bias (a learned bias per head on the attention logits)",
    "data2vec-vision": "relative position bias (a learned bias per head on the attention "
                       "logits, BEiT's encoder)",
    "dinov3_vit": "rotary position embeddings (RoPE) in the attention",
    "siglip2": "variable-resolution (NaFlex) patch inputs and their per-image position "
               "embedding resizing",
}


def _refuse(name, message):
    raise ValueError(f"{name}: {message}")


def _activation(config, name, where):
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        _refuse(name, f"{where} hidden_act {act!r} is not supported: expected one of "
                      f"{list(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def _vision_config(config, name):
    """The image tower's config: a full model's `vision_config`, else the config itself."""
    if config["model_type"] in ("clip", "siglip"):
        vision = config.get("vision_config")
        if not isinstance(vision, dict):
            _refuse(name, f"config.json of a {config['model_type']!r} model has no "
                          f"'vision_config' object")
        return vision, "vision_config"
    return config, "config.json"


def _prefix(tensors, marker):
    """The prefix of the key ending in `marker` (`vision_model.`, `` ...); None if none."""
    return next((k[: -len(marker)] for k in tensors if k.endswith(marker)), None)


# ------------------------------------------------------------------ rules


def _unbatched(canonical_key, source_key, source_ndim):
    """A source array of `source_ndim` <-> the canonical one with leading unit axes to rank 3."""
    return conv.Rule((canonical_key,), (source_key,),
                     lambda a: (a.reshape((1,) * (3 - a.ndim) + a.shape),),
                     lambda a: (a.reshape(a.shape[3 - source_ndim:]),))


def _attention(block, layer, heads, names, out):
    """q, k, v and output projections of torch `Linear`s named `{layer}.{names[i]}`."""
    attention = f"{block}/{conv.ATTENTION}"
    rules = []
    for part, source in zip(("query", "key", "value"), names):
        rules.append(conv.attention_projection(
            f"{attention}/{part}/kernel", f"{layer}.{source}.weight", heads))
        rules.append(conv.attention_bias(
            f"{attention}/{part}/bias", f"{layer}.{source}.bias", heads))
    rules.append(conv.attention_output(f"{attention}/out/kernel", f"{layer}.{out}.weight", heads))
    rules.append(conv.same(f"{attention}/out/bias", f"{layer}.{out}.bias"))
    return rules


def _packed_attention(prefix, source, heads):
    """torch `nn.MultiheadAttention`'s (3D, D) `in_proj_weight` (q, k, v rows) <-> 3 kernels."""
    parts = ("query", "key", "value")

    def kernels(w):
        width = w.shape[1]
        return tuple(p.T.reshape(width, heads, width // heads) for p in np.split(w, 3))

    return [
        conv.Rule(tuple(f"{prefix}/{p}/kernel" for p in parts), (f"{source}.in_proj_weight",),
                  kernels,
                  lambda *k: (np.concatenate([a.reshape(a.shape[0], -1).T for a in k]),)),
        conv.Rule(tuple(f"{prefix}/{p}/bias" for p in parts), (f"{source}.in_proj_bias",),
                  lambda b: tuple(p.reshape(heads, -1) for p in np.split(b, 3)),
                  lambda *b: (np.concatenate([a.reshape(-1) for a in b]),)),
        conv.attention_output(f"{prefix}/out/kernel", f"{source}.out_proj.weight", heads),
        conv.same(f"{prefix}/out/bias", f"{source}.out_proj.bias"),
    ]


def _projection_head(source_key):
    """A bias-free torch `Linear` (K, D) <-> `head/kernel` (D, K) and a zero `head/bias`.

    CLIP's `visual_projection` has no bias; keras_vit's head has one, zero here (so the
    output is the projection). Written back, a non-zero bias would be lost: nothing writes
    this layout yet.
    """
    return conv.Rule(("head/kernel", "head/bias"), (source_key,),
                     lambda w: (w.T, np.zeros(w.shape[0], w.dtype)), lambda k, b: (k.T,))


def dinov2_rules(depth, heads, *, swiglu, registers):
    rules = conv.patch_embedding("embeddings.patch_embeddings.projection")
    rules.append(conv.same("cls", "embeddings.cls_token"))
    if registers:
        rules.append(conv.same(REGISTERS, "embeddings.register_tokens"))
    rules.append(conv.same(conv.POSEMB, "embeddings.position_embeddings"))
    mlp_in, mlp_out = ("weights_in", "weights_out") if swiglu else ("fc1", "fc2")
    for i in range(depth):
        layer, block = f"encoder.layer.{i}", conv.block(i)
        rules += conv.layer_norm(f"{block}/{conv.ATTENTION_NORM}", f"{layer}.norm1")
        rules += _attention(block, layer, heads, (
            "attention.attention.query", "attention.attention.key", "attention.attention.value"),
            "attention.output.dense")
        rules.append(conv.same(f"{block}/{LAYER_SCALE_ATTENTION}/scale",
                               f"{layer}.layer_scale1.lambda1"))
        rules += conv.layer_norm(f"{block}/{conv.MLP_NORM}", f"{layer}.norm2")
        # SwiGLU: the packed (2 * hidden, D) weight transposes to (D, 2 * hidden), gate first.
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_0", f"{layer}.mlp.{mlp_in}")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_1", f"{layer}.mlp.{mlp_out}")
        rules.append(conv.same(f"{block}/{LAYER_SCALE_MLP}/scale",
                               f"{layer}.layer_scale2.lambda1"))
    rules += conv.layer_norm(conv.ENCODER_NORM, "layernorm")
    return rules


def tower_rules(p, depth, heads, *, patch_bias, class_token, pre_norm, map_head):
    """CLIP's and SigLIP's image tower (`{p}embeddings`, `{p}encoder.layers`, ...)."""
    kernel, bias = conv.patch_embedding(f"{p}embeddings.patch_embedding")
    rules = [kernel, bias] if patch_bias else [kernel]
    if class_token:
        rules.append(_unbatched("cls", f"{p}embeddings.class_embedding", 1))
    rules.append(_unbatched(conv.POSEMB, f"{p}embeddings.position_embedding.weight", 2))
    if pre_norm:
        rules += conv.layer_norm(PRE_NORM, f"{p}pre_layrnorm")
    for i in range(depth):
        layer, block = f"{p}encoder.layers.{i}", conv.block(i)
        rules += conv.layer_norm(f"{block}/{conv.ATTENTION_NORM}", f"{layer}.layer_norm1")
        rules += _attention(block, layer, heads, (
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.out_proj")
        rules += conv.layer_norm(f"{block}/{conv.MLP_NORM}", f"{layer}.layer_norm2")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_0", f"{layer}.mlp.fc1")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_1", f"{layer}.mlp.fc2")
    rules += conv.layer_norm(conv.ENCODER_NORM, f"{p}post_layernorm")
    if map_head:
        head = f"{p}head"
        rules.append(conv.same(f"{MAP_HEAD}/probe", f"{head}.probe"))
        rules += _packed_attention(f"{MAP_HEAD}/MultiHeadDotProductAttention_0",
                                   f"{head}.attention", heads)
        rules += conv.layer_norm(f"{MAP_HEAD}/LayerNorm_0", f"{head}.layernorm")
        rules += conv.linear(f"{MAP_HEAD}/MlpBlock_0/Dense_0", f"{head}.mlp.fc1")
        rules += conv.linear(f"{MAP_HEAD}/MlpBlock_0/Dense_1", f"{head}.mlp.fc2")
    return rules


# ------------------------------------------------------------------ configs

# transformers' defaults (`Dinov2Config`, `CLIPVisionConfig`, `SiglipVisionConfig`): configs
# written by `to_diff_dict` leave out the fields that have them (a SigLIP base model's
# `vision_config` may hold only its `model_type`), and transformers then builds these.
DEFAULTS = {
    "dinov2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                   hidden_act="gelu", layer_norm_eps=1e-6, image_size=224, patch_size=14,
                   num_channels=3, qkv_bias=True, layerscale_value=1.0, use_swiglu_ffn=False),
    "clip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                              num_attention_heads=12, hidden_act="quick_gelu",
                              layer_norm_eps=1e-5, image_size=224, patch_size=32,
                              num_channels=3, projection_dim=512),
    "siglip_vision_model": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, hidden_act="gelu_pytorch_tanh",
                                layer_norm_eps=1e-6, image_size=224, patch_size=16,
                                num_channels=3, vision_use_head=True),
}
# Dinov2WithRegistersConfig differs from Dinov2Config in its default patch size.
DEFAULTS["dinov2_with_registers"] = dict(DEFAULTS["dinov2"], patch_size=16, num_register_tokens=4)


def _with_defaults(config, family):
    return {**DEFAULTS[family], **{k: v for k, v in config.items() if v is not None}}


def _architecture(vision, name, where, *, pooling, num_classes=0, class_names=None,
                  mlp_dim=None, **family_options):
    activation = family_options.pop("activation", None)
    if activation is None:
        activation, approximate = _activation(vision, name, where)
    else:
        approximate = False  # SwiGLU's gate is SiLU; hidden_act is not used
    spec = conv.spec_of(
        patch_size=vision["patch_size"], hidden_dim=vision["hidden_size"],
        depth=vision["num_hidden_layers"], num_heads=vision["num_attention_heads"],
        mlp_dim=vision["intermediate_size"] if mlp_dim is None else mlp_dim,
        layer_norm_epsilon=vision["layer_norm_eps"], approximate_gelu=approximate,
        activation=activation, **family_options)
    head_dim = vision.get("head_dim")
    if head_dim is not None and head_dim * spec.num_heads != spec.hidden_dim:
        _refuse(name, f"{where} head_dim {head_dim} times {spec.num_heads} heads is not the "
                      f"width {spec.hidden_dim}: keras_vit's attention splits the width")
    # Whole patches: transformers' convolution ignores the pixels past the last whole patch
    # and stores position embeddings for those patches only (SigLIP So400m/14 at 384: 27 x 27
    # patches, 378 pixels), and keras_vit's model takes the image its patches cover.
    image_size = tuple(side // spec.patch_size * spec.patch_size
                       for side in conv.image_size_pair(vision["image_size"], "image_size"))
    return conv.Architecture(
        spec=spec, image_size=image_size, pooling=pooling, num_classes=num_classes,
        num_channels=vision["num_channels"], class_names=class_names)


def _class_names(config, num_classes):
    id2label = config.get("id2label") or {}
    if len(id2label) != num_classes:
        return None
    return tuple(str(id2label.get(str(i), id2label.get(i, i))) for i in range(num_classes))


def _apply(rules, tensors, name, *, prefix, ignore=(), optional=()):
    found = _prefix(tensors, prefix[1])
    if found != prefix[0]:
        _refuse(name, f"no {prefix[0] + prefix[1]!r} key (found "
                      f"{'none' if found is None else repr(found + prefix[1])}): not the "
                      f"layout its config names")
    arrays, sources, used = conv.apply_rules(rules, tensors, name=name, optional=optional)
    return arrays, sources, conv.unexpected_keys(tensors, used, name=name, ignore=ignore)


# ------------------------------------------------------------------ readers
# Each: (config, tensors or None, name) -> (Architecture, arrays, sources, ignored). With
# `tensors=None` (configs only), the architecture the config's class names, no arrays.


def read_dinov2(config, tensors, name):
    model_type = config["model_type"]
    cls = (config.get("architectures") or ["Dinov2Model"])[0]
    base = "Dinov2WithRegistersModel" if model_type == "dinov2_with_registers" else "Dinov2Model"
    if cls.endswith("ForImageClassification") or (tensors and "classifier.weight" in tensors):
        _refuse(name, f"{cls} classifies from the [class] token concatenated with the mean of "
                      f"the patch tokens, a head keras_vit does not build; load its backbone: "
                      f"save the model's `{model_type}` attribute (a {base}) with "
                      f"save_pretrained and load that folder")
    vision = _with_defaults(config, model_type)
    width = vision["hidden_size"]
    hidden = int(width * vision["mlp_ratio"])
    swiglu = bool(vision["use_swiglu_ffn"])
    registers = "registers" in model_type
    options = dict(layer_scale=float(vision["layerscale_value"]),
                   num_registers=vision["num_register_tokens"] if registers else 0,
                   # How transformers resizes the position embeddings at another size:
                   # Dinov2Model with PyTorch's plain bicubic, Dinov2WithRegistersModel with
                   # its antialiased bicubic (keras_vit's default).
                   position_interpolation="bicubic" if registers else "pytorch_bicubic")
    if swiglu:
        # transformers' Dinov2SwiGLUFFN (DINOv2's SwiGLUFFNFused): two thirds of the MLP
        # width, rounded up to a multiple of 8; `weights_in` packs gate and value (2x that).
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        options["activation"] = "swiglu"
    architecture = _architecture(vision, name, "config.json", pooling="token", mlp_dim=hidden,
                                 **options)
    if tensors is None:
        return architecture, {}, {}, []
    spec = architecture.spec
    rules = dinov2_rules(spec.depth, spec.num_heads, swiglu=swiglu,
                         registers=bool(spec.num_registers))
    qkv = {k for r in rules for k in r.source_keys
           if k.endswith(("query.bias", "key.bias", "value.bias"))}
    arrays, sources, ignored = _apply(
        rules, tensors, name, prefix=("", "embeddings.cls_token"),
        # The mask token replaces masked patches in pre-training (iBOT's loss) only.
        ignore=("embeddings.mask_token",), optional=() if vision["qkv_bias"] else qkv)
    if not vision["qkv_bias"]:
        zero_qkv_biases(arrays, sources, spec)
    return architecture, arrays, sources, ignored


def zero_qkv_biases(arrays, sources, spec):
    """Zeros for the q, k, v biases a model without them (`qkv_bias=False`) lacks."""
    for i in range(spec.depth):
        for part in ("query", "key", "value"):
            key = f"{conv.block(i)}/{conv.ATTENTION}/{part}/bias"
            if key not in arrays:
                arrays[key] = np.zeros((spec.num_heads, spec.hidden_dim // spec.num_heads),
                                       "float32")
                sources[key] = f"(qkv_bias=False: zeros for {part} bias of block {i})"


def _buffers(prefix):
    """Buffers, not weights: files written before transformers 4.31 hold the position ids."""
    return (f"{prefix}embeddings.position_ids",)


def read_clip(config, tensors, name):
    full = config["model_type"] == "clip"
    cls = (config.get("architectures") or ["CLIPModel" if full else "CLIPVisionModel"])[0]
    if cls == "CLIPForImageClassification" or (tensors and "classifier.weight" in tensors):
        _refuse(name, f"{cls} classifies the mean of the patch tokens before CLIP's final "
                      f"LayerNorm, a pooling keras_vit does not build; its image tower alone "
                      f"(CLIPVisionModel) is supported")
    vision, where = _vision_config(config, name)
    vision = _with_defaults(vision, "clip_vision_model")
    if tensors is None:
        projection = full or cls == "CLIPVisionModelWithProjection"
    else:
        projection = "visual_projection.weight" in tensors
    num_classes = 0
    if projection:
        # CLIPModel's projection width is the top-level `projection_dim`; the vision model's
        # own (`CLIPVisionModelWithProjection`) is its config's.
        num_classes = (config.get("projection_dim", 512) if full else vision["projection_dim"])
        if tensors is not None:
            rows = int(np.shape(tensors["visual_projection.weight"])[0])
            if rows != num_classes:
                _refuse(name, f"projection_dim {num_classes} of the config contradicts "
                              f"visual_projection.weight of {rows} rows")
    architecture = _architecture(vision, name, where, pooling="token", num_classes=num_classes,
                                 pre_norm=True, patch_bias=False)
    if tensors is None:
        return architecture, {}, {}, []
    spec = architecture.spec
    prefix = "vision_model." if full or projection else ""
    rules = tower_rules(prefix, spec.depth, spec.num_heads, patch_bias=False, class_token=True,
                        pre_norm=True, map_head=False)
    if projection:
        rules.append(_projection_head("visual_projection.weight"))
    return (architecture,) + _apply(
        rules, tensors, name, prefix=(prefix, "embeddings.class_embedding"),
        ignore=("text_model.", "text_projection.", "logit_scale", *_buffers(prefix)))


def read_siglip(config, tensors, name):
    full = config["model_type"] == "siglip"
    cls = (config.get("architectures") or ["SiglipModel" if full else "SiglipVisionModel"])[0]
    vision, where = _vision_config(config, name)
    vision = _with_defaults(vision, "siglip_vision_model")
    classifier = cls == "SiglipForImageClassification" or bool(
        tensors and "classifier.weight" in tensors)
    if classifier:
        # The mean of the post-LayerNorm tokens under a linear classifier; the tower's MAP
        # head, when the config gives it one, is computed and unused.
        num_classes = (int(np.shape(tensors["classifier.weight"])[0]) if tensors else
                       config.get("num_labels") or len(config.get("id2label") or {}) or 2)
        architecture = _architecture(vision, name, where, pooling="gap",
                                     num_classes=num_classes,
                                     class_names=_class_names(config, num_classes))
    else:
        if not vision["vision_use_head"]:
            _refuse(name, f"{where} vision_use_head=False: this SigLIP tower has no pooled "
                          f"output (transformers' pooler_output is None), and keras_vit's "
                          f"model ends in one")
        architecture = _architecture(vision, name, where, pooling="map")
    if tensors is None:
        return architecture, {}, {}, []
    spec = architecture.spec
    prefix = "vision_model." if full or classifier else ""
    rules = tower_rules(prefix, spec.depth, spec.num_heads, patch_bias=True, class_token=False,
                        pre_norm=False, map_head=not classifier)
    if classifier:
        rules += conv.linear("head", "classifier")
    ignore = ("text_model.", "logit_scale", "logit_bias", *_buffers(prefix)) + (
        (f"{prefix}head.",) if classifier else ())
    return (architecture,) + _apply(
        rules, tensors, name, prefix=(prefix, "embeddings.patch_embedding.weight"),
        ignore=ignore)


# ------------------------------------------------------------------ writing DINOv2


def is_dinov2(architecture):
    """Whether a model is written as a DINOv2: it has LayerScale, registers or a SwiGLU MLP."""
    spec = architecture.spec
    return spec.layer_scale is not None or spec.num_registers > 0 or spec.activation == "swiglu"


def _dinov2_mlp_ratio(spec, base):
    """The whole `mlp_ratio` from which transformers' DINOv2 builds the model's MLP width.

    transformers 5's `Dinov2Config` takes an int; SwiGLU's width is two thirds of
    `ratio * D` rounded up to a multiple of 8 (DINOv2 giant: 4096 from 4 * 1536).
    """
    def built(ratio):
        hidden = spec.hidden_dim * ratio
        return (int(hidden * 2 / 3) + 7) // 8 * 8 if spec.activation == "swiglu" else hidden

    ratio = next((r for r in range(1, 2 * spec.mlp_dim // spec.hidden_dim + 2)
                  if built(r) == spec.mlp_dim), None)
    if ratio is None:
        raise ValueError(
            f"transformers' {base} builds its MLP width from a whole mlp_ratio; none gives "
            f"this model's {spec.mlp_dim} ({spec.activation}, width {spec.hidden_dim})")
    return ratio


def encoder_config(architecture):
    """The config fields every transformers ViT-family encoder states the same way (written)."""
    spec = architecture.spec
    height, width = architecture.image_size
    return {
        "hidden_size": spec.hidden_dim,
        "num_hidden_layers": spec.depth,
        "num_attention_heads": spec.num_heads,
        "hidden_act": "gelu_pytorch_tanh" if spec.approximate_gelu else "gelu",
        "layer_norm_eps": spec.layer_norm_epsilon,
        "image_size": height if height == width else [height, width],
        "patch_size": spec.patch_size,
        "num_channels": architecture.num_channels,
        "qkv_bias": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }


def write_dinov2(arrays, architecture):
    """transformers' files of a DINOv2: `Dinov2Model`, `Dinov2WithRegistersModel` with registers.

    A model without LayerScale gets scales of ones (the same function). The mask token, used
    only by masked pre-training, is written as zeros so that the file is complete.

    Returns:
        (config dict, tensors dict, preprocessor config dict).

    Raises:
        ValueError: a part transformers' DINOv2 does not have (a head, pre-logits, the other
            families' options, mean or MAP pooling, a distillation token, a hybrid stem).
    """
    spec = architecture.spec
    registers = spec.num_registers > 0
    base = "Dinov2WithRegistersModel" if registers else "Dinov2Model"
    options = [
        ("num_classes", architecture.num_classes, architecture.num_classes != 0,
         "no head (its classifier reads the [class] token and the mean patch token)"),
        ("representation_size", architecture.representation_size,
         architecture.representation_size is not None, "no pre-logits layer"),
        ("pooling", architecture.pooling, architecture.pooling != "token",
         "its output on the [class] token"),
        ("activation", spec.activation, spec.activation == "quick_gelu", "a GELU or SwiGLU MLP"),
        ("pre_norm", spec.pre_norm, spec.pre_norm, "no LayerNorm before the blocks"),
        ("patch_bias", spec.patch_bias, not spec.patch_bias, "a patch embedding bias"),
        ("distillation_token", spec.distillation_token, spec.distillation_token,
         "no distillation token"),
        ("resnet_units", spec.resnet_units, spec.is_hybrid, "no ResNet stem"),
    ]
    for option, value, differs, plain in options:
        if differs:
            raise ValueError(
                f"transformers' {base}, the layout keras_vit writes a DINOv2 in, has {plain}; "
                f"this model has {option}={value!r} and cannot be written in it")
    swiglu = spec.activation == "swiglu"
    mlp_ratio = _dinov2_mlp_ratio(spec, base)
    rules = dinov2_rules(spec.depth, spec.num_heads, swiglu=swiglu, registers=registers)
    ones = {f"{conv.block(i)}/{name}/scale": np.ones(spec.hidden_dim, "float32")
            for i in range(spec.depth) for name in (LAYER_SCALE_ATTENTION, LAYER_SCALE_MLP)}
    tensors = conv.invert_rules(rules, {**ones, **arrays})
    tensors["embeddings.mask_token"] = np.zeros((1, spec.hidden_dim), "float32")
    height, width = architecture.image_size
    config = {
        "architectures": [base],
        "model_type": "dinov2_with_registers" if registers else "dinov2",
        **encoder_config(architecture),
        "mlp_ratio": mlp_ratio,
        "layerscale_value": 1.0 if spec.layer_scale is None else spec.layer_scale,
        "use_swiglu_ffn": swiglu,
        "use_mask_token": True,
        "drop_path_rate": 0.0,
    }
    if registers:
        config["num_register_tokens"] = spec.num_registers
    processor = {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": round(min(height, width) / architecture.crop_fraction)},
        "resample": 3 if architecture.interpolation == "bicubic" else 2,
        "do_center_crop": True,
        "crop_size": {"height": height, "width": width},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(architecture.mean),
        "image_std": list(architecture.std),
        "do_convert_rgb": True,
    }
    return config, tensors, processor

READERS = {
    "dinov2": read_dinov2,
    "dinov2_with_registers": read_dinov2,
    "clip": read_clip,
    "clip_vision_model": read_clip,
    "siglip": read_siglip,
    "siglip_vision_model": read_siglip,
}
