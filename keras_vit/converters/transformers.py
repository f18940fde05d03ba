"""transformers' ViT family (`config.json` with a `model_type`) <-> the canonical form.

The families whose encoder is the paper's, as transformers names them (`model_type`):

- `vit`: `ViTForImageClassification` (a `classifier` on the normed [class] token) and `ViTModel`
  (no head; a `pooler`, Dense + tanh on the [class] token, where the file has one). DINO v1
  (`facebook/dino-vit*`) is a `ViTModel` without pooler weights.
- `deit`: `DeiTForImageClassificationWithTeacher` (the distilled models: a distillation token
  after the [class] token, two heads whose mean is the output), `DeiTForImageClassification`
  (one head on the [class] token, the distillation token still in the sequence), `DeiTModel`.
- `vit_mae`: the MAE encoder (`ViTMAEModel`, or the `vit.` part of `ViTMAEForPreTraining`,
  whose decoder is ignored). Its fixed sine-cosine position embeddings are in the file.
  transformers' MAE forward masks 75% of the patches at random (`mask_ratio`); keras_vit runs
  the encoder on all of them, which is what the MAE paper fine-tunes and what transformers
  computes with `mask_ratio=0` (up to the order of the patch tokens).

The DINOv2, CLIP and SigLIP image towers (`dinov2`, `dinov2_with_registers`, `clip`,
`clip_vision_model`, `siglip`, `siglip_vision_model`) are read by `transformers_families`;
`READERS` is the table of both modules' readers, by `model_type`. Families that need a piece
keras_vit lacks (BEiT's relative position bias, ...) are refused naming it
(`transformers_families.MISSING`). Written back are the ViT / DeiT layout and DINOv2's.

Quirks, each in one place: the file's keys carry the task model's prefix (`vit.`, `deit.`)
or none (base models); torch `Linear` weights are (out, in); q, k and v are three (D, D)
projections; files written before 2021 name LayerNorm parameters `gamma`/`beta` (read as
`weight`/`bias`); transformers' ViT uses the exact GELU and LayerNorm epsilon 1e-12 (both read
from the config, not assumed).
"""

import numpy as np

from keras_vit import converters as conv
from keras_vit.converters import transformers_families as families

NAME = "transformers"

_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
_GELUS = ("gelu",) + _TANH_GELUS


def detect(files):
    return bool(files.config) and "model_type" in files.config


def _prefix(tensors):
    """The prefix before `embeddings.cls_token`: `vit.`, `deit.` or `` (a base model)."""
    for key in tensors:
        if key.endswith("embeddings.cls_token"):
            return key[: -len("embeddings.cls_token")]
    return None


def _rules(prefix, depth, heads, *, distilled, head):
    p = prefix
    rules = conv.patch_embedding(f"{p}embeddings.patch_embeddings.projection")
    rules.append(conv.same("cls", f"{p}embeddings.cls_token"))
    if distilled:
        rules.append(conv.same("dist", f"{p}embeddings.distillation_token"))
    rules.append(conv.same(conv.POSEMB, f"{p}embeddings.position_embeddings"))
    for i in range(depth):
        layer, block = f"{p}encoder.layer.{i}", conv.block(i)
        attention = f"{block}/{conv.ATTENTION}"
        rules += conv.layer_norm(f"{block}/{conv.ATTENTION_NORM}", f"{layer}.layernorm_before")
        for name in ("query", "key", "value"):
            rules.append(conv.attention_projection(
                f"{attention}/{name}/kernel", f"{layer}.attention.attention.{name}.weight", heads))
            rules.append(conv.attention_bias(
                f"{attention}/{name}/bias", f"{layer}.attention.attention.{name}.bias", heads))
        rules.append(conv.attention_output(
            f"{attention}/out/kernel", f"{layer}.attention.output.dense.weight", heads))
        rules.append(conv.same(f"{attention}/out/bias", f"{layer}.attention.output.dense.bias"))
        rules += conv.layer_norm(f"{block}/{conv.MLP_NORM}", f"{layer}.layernorm_after")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_0", f"{layer}.intermediate.dense")
        rules += conv.linear(f"{block}/{conv.MLP}/Dense_1", f"{layer}.output.dense")
    rules += conv.layer_norm(conv.ENCODER_NORM, f"{p}layernorm")
    rules += conv.linear("pre_logits", "pooler.dense")
    if head == "distilled":
        rules += conv.distilled_head(
            ("cls_classifier.weight", "distillation_classifier.weight"),
            ("cls_classifier.bias", "distillation_classifier.bias"))
    else:
        rules += conv.linear("head", "classifier")
    return rules


def _field(config, key, name):
    if key not in config:
        raise ValueError(f"{name}: config.json has no {key!r} field")
    return config[key]


def _architecture(config, name, *, has_head, has_pooler, distilled, head_classes=None):
    model_type = config["model_type"]
    act = config.get("hidden_act", "gelu")
    if act not in _GELUS:
        raise ValueError(
            f"{name}: hidden_act {act!r} is not supported: expected one of {list(_GELUS)}")
    if has_pooler and config.get("pooler_act", "tanh") != "tanh":
        raise ValueError(
            f"{name}: pooler_act {config['pooler_act']!r} is not supported: expected 'tanh'")
    spec = conv.spec_of(
        patch_size=_field(config, "patch_size", name),
        hidden_dim=_field(config, "hidden_size", name),
        depth=_field(config, "num_hidden_layers", name),
        num_heads=_field(config, "num_attention_heads", name),
        mlp_dim=_field(config, "intermediate_size", name),
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        approximate_gelu=act in _TANH_GELUS,
        distillation_token=model_type == "deit",
    )
    id2label = config.get("id2label") or {}
    if not has_head:
        num_classes = 0
    elif head_classes is not None:
        num_classes = head_classes
    else:
        num_classes = config.get("num_labels") or len(id2label) or 2  # transformers' default
    names = None
    if num_classes and len(id2label) == num_classes:
        names = tuple(str(id2label.get(str(i), id2label.get(i, i))) for i in range(num_classes))
    return conv.Architecture(
        spec=spec,
        image_size=conv.image_size_pair(_field(config, "image_size", name), "image_size"),
        pooling="distilled" if distilled else "token",
        num_classes=num_classes,
        representation_size=config.get("pooler_output_size", spec.hidden_dim)
        if has_pooler else None,
        num_channels=config.get("num_channels", 3),
        class_names=names,
    )


def preprocessing(preprocessor_config, image_size):
    """(mean, std, crop_fraction, interpolation) of a `preprocessor_config.json`."""
    if not preprocessor_config:
        return {}
    out = {}
    if preprocessor_config.get("do_normalize", True) and "image_mean" in preprocessor_config:
        out["mean"] = tuple(float(v) for v in preprocessor_config["image_mean"])
        out["std"] = tuple(float(v) for v in preprocessor_config["image_std"])
    # DeiT's processor resizes to `size` then crops `crop_size`; ViT's resizes to `size`.
    # Files written before transformers 4.26 give both as ints (facebook/deit-*: 256, 224).
    size, crop = preprocessor_config.get("size"), preprocessor_config.get("crop_size")
    if preprocessor_config.get("do_center_crop") and size and crop:
        side = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        crop_side = crop.get("height", image_size[0]) if isinstance(crop, dict) else crop
        if isinstance(side, int) and isinstance(crop_side, int) and side > 0:
            out["crop_fraction"] = min(1.0, crop_side / side)
    resample = preprocessor_config.get("resample")
    out["interpolation"] = {2: "bilinear", 3: "bicubic"}.get(resample, "bilinear")
    return out


def read(files, tensors):
    """A transformers checkpoint in the canonical form (`keras_vit.converters.Checkpoint`).

    With `tensors=None`, the architecture its configs state and no arrays.
    """
    config, name = files.config, files.name
    model_type = config["model_type"]
    supported = f"supported transformers model types: {', '.join(MODEL_TYPES)}"
    if model_type in families.MISSING:
        raise ValueError(
            f"{name}: model_type {model_type!r} is not supported: it needs "
            f"{families.MISSING[model_type]}, which keras_vit does not have; {supported}")
    if model_type not in READERS:
        raise ValueError(f"{name}: model_type {model_type!r} is not supported; {supported}")
    return _checkpoint(files, *READERS[model_type](config, tensors, name))


def _read_vit(config, tensors, name):
    """`vit`, `deit`, `vit_mae`: (Architecture, arrays, sources, ignored)."""
    model_type = config["model_type"]
    if tensors is None:
        # Configs only (preprocessing, class names): the head as the config's class says.
        cls = (config.get("architectures") or [""])[0]
        distilled = cls.endswith("WithTeacher")
        architecture = _architecture(
            config, name, has_head=cls.endswith(("ForImageClassification", "WithTeacher")),
            has_pooler=False, distilled=distilled)
        return architecture, {}, {}, []
    # Files written before 2021 name LayerNorm parameters gamma / beta.
    tensors = {
        (k[: -len(".gamma")] + ".weight" if k.endswith(".gamma") else
         k[: -len(".beta")] + ".bias" if k.endswith(".beta") else k): v
        for k, v in tensors.items()
    }
    prefix = _prefix(tensors)
    if prefix is None:
        raise ValueError(
            f"{name}: no 'embeddings.cls_token' key: not a transformers {model_type} checkpoint")
    distilled = "distillation_classifier.weight" in tensors
    head_key = next((k for k in ("classifier.weight", "cls_classifier.weight") if k in tensors),
                    None)
    # The classes are the head's rows: configs may omit id2label (transformers then names
    # them LABEL_i).
    architecture = _architecture(
        config, name, has_head=head_key is not None, has_pooler="pooler.dense.weight" in tensors,
        distilled=distilled,
        head_classes=None if head_key is None else int(np.shape(tensors[head_key])[0]))
    spec = architecture.spec
    rules = _rules(prefix, spec.depth, spec.num_heads, distilled=spec.distillation_token,
                   head="distilled" if distilled else "vit")
    qkv_biases = {k for k in (r.source_keys[0] for r in rules)
                  if k.endswith(("query.bias", "key.bias", "value.bias"))}
    optional = {"pooler.dense.weight", "pooler.dense.bias", "classifier.weight",
                "classifier.bias"}
    if not config.get("qkv_bias", True):
        optional |= qkv_biases
    arrays, sources, used = conv.apply_rules(rules, tensors, name=name, optional=optional)
    if not config.get("qkv_bias", True):
        # A model without q/k/v biases is the fused projection with zero bias.
        families.zero_qkv_biases(arrays, sources, spec)
    # ViTMAEForPreTraining: the decoder is a pre-training matter.
    ignored = conv.unexpected_keys(tensors, used, name=name, ignore=("decoder.",))
    return architecture, arrays, sources, ignored


# model_type -> its reader: (config, tensors or None, name) -> (Architecture, arrays, sources,
# ignored keys). The families after the paper's encoder are in `transformers_families`.
READERS = {"vit": _read_vit, "deit": _read_vit, "vit_mae": _read_vit, **families.READERS}
MODEL_TYPES = tuple(READERS)


def _checkpoint(files, architecture, arrays, sources, ignored):
    extra = preprocessing(files.preprocessor_config, architecture.image_size)
    if extra:
        architecture = conv.dataclasses.replace(architecture, **extra)
    cls = (files.config.get("architectures") or ["?"])[0]
    return conv.Checkpoint(
        name=files.name, source=NAME,
        layout=f"transformers {files.config['model_type']} ({cls})",
        architecture=architecture, arrays=arrays, sources=sources, ignored=ignored,
    )


def _refuse_family_options(architecture):
    """ValueError for a model with an option transformers' ViT / DeiT layout cannot hold.

    (LayerScale, registers and SwiGLU are DINOv2's, written by `families.write_dinov2`.)
    """
    spec = architecture.spec
    options = [
        ("activation", spec.activation, spec.activation != "gelu", "a GELU MLP"),
        ("pre_norm", spec.pre_norm, spec.pre_norm, "no LayerNorm before the blocks"),
        ("patch_bias", spec.patch_bias, not spec.patch_bias, "a patch embedding bias"),
        ("pooling", architecture.pooling, architecture.pooling == "map",
         "no attention-probe (MAP) pooling"),
    ]
    for option, value, differs, plain in options:
        if differs:
            raise ValueError(
                f"transformers' ViT layout, the one keras_vit writes, has {plain}; this model "
                f"has {option}={value!r} and cannot be written in it (the CLIP and SigLIP "
                f"layouts are read, not written)")


def write(arrays, architecture):
    """transformers' files of a model: (config dict, tensors dict, preprocessor config dict).

    A distilled model becomes `DeiTForImageClassificationWithTeacher`; a model with a head
    `ViTForImageClassification`; one without, `ViTModel` (with its pooler when the model has
    a pre-logits layer); a model with LayerScale, registers or a SwiGLU MLP a `Dinov2Model`
    (`transformers_families.write_dinov2`).

    Raises:
        ValueError: a model transformers' ViT cannot express (mean pooling, a hybrid, a
            pre-logits layer before a head, an option of the DINOv2 / CLIP / SigLIP families:
            `VariantSpec.activation` other than "gelu", `pre_norm`, `patch_bias=False`, pooling
            "map"; or, for a DINOv2, a part `Dinov2Model` lacks).
    """
    spec = architecture.spec
    if families.is_dinov2(architecture):
        return families.write_dinov2(arrays, architecture)
    _refuse_family_options(architecture)
    if spec.is_hybrid:
        raise ValueError(
            "transformers' layout has no hybrid ViT in this converter: a ResNet-stem model "
            "cannot be written in it (save_npz writes the paper's layout)")
    if architecture.pooling == "gap":
        raise ValueError(
            "transformers' ViT classifies from the [class] token; a model with pooling 'gap' "
            "cannot be written in its layout (save_npz writes it)")
    if architecture.representation_size is not None and architecture.num_classes:
        raise ValueError(
            "transformers' ViTForImageClassification has no pre-logits layer before its "
            f"classifier; this model has one of width {architecture.representation_size} "
            "(fine-tune without it, or use save_npz)")
    if architecture.representation_size not in (None, spec.hidden_dim):
        raise ValueError(
            f"transformers' ViTModel pooler has the model's width {spec.hidden_dim}; this "
            f"model's pre-logits layer has {architecture.representation_size}")
    distilled = architecture.pooling == "distilled"
    model_type = "deit" if spec.distillation_token else "vit"
    if architecture.num_classes:
        cls = ("DeiTForImageClassificationWithTeacher" if distilled else
               "DeiTForImageClassification" if model_type == "deit" else
               "ViTForImageClassification")
        prefix = f"{model_type}."
    else:
        cls, prefix = ("DeiTModel" if model_type == "deit" else "ViTModel"), ""
    rules = _rules(prefix, spec.depth, spec.num_heads, distilled=spec.distillation_token,
                   head="distilled" if distilled else "vit")
    tensors = conv.invert_rules(rules, arrays)
    height, width = architecture.image_size
    names = architecture.class_names or tuple(
        f"LABEL_{i}" for i in range(architecture.num_classes))
    config = {
        "architectures": [cls],
        "model_type": model_type,
        **families.encoder_config(architecture),
        "intermediate_size": spec.mlp_dim,
        "encoder_stride": spec.patch_size,
        "pooler_act": "tanh",
        "pooler_output_size": spec.hidden_dim,
    }
    if architecture.num_classes:
        config["id2label"] = {str(i): n for i, n in enumerate(names)}
        config["label2id"] = {n: i for i, n in enumerate(names)}
    processor = {
        "image_processor_type": "DeiTImageProcessor" if model_type == "deit" else
        "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": height, "width": width},
        "resample": 3 if architecture.interpolation == "bicubic" else 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(architecture.mean),
        "image_std": list(architecture.std),
    }
    if model_type == "deit":
        processor.update(do_center_crop=True, crop_size={"height": height, "width": width})
    return config, tensors, processor
