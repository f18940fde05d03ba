"""The paper's released `.npz` checkpoints <-> keras_vit models, safely and exactly.

The original JAX/Flax code ([vision_transformer](https://github.com/google-research/vision_transformer))
publishes its ImageNet-21k, JFT and AugReg weights as NumPy `.npz` archives, one array per
parameter, named by its path in the Flax tree with `/` separators. This module maps those names
onto a `keras_vit.ViT` model (`load_npz`) and back (`save_npz`, the loader's exact inverse).

The original ("vit") layout, D the width, P the patch, N the number of patches:

    embedding/{kernel (P, P, C, D), bias (D,)}       cls (1, 1, D)
    Transformer/posembed_input/pos_embedding (1, 1 + N, D)
    Transformer/encoderblock_{i}/LayerNorm_0/{scale, bias}                  before attention
    Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/{query,key,value}/kernel
        (D, heads, D/heads), .../bias (heads, D/heads), .../out/kernel (heads, D/heads, D),
        .../out/bias (D,)
    Transformer/encoderblock_{i}/LayerNorm_2/{scale, bias}                  before the MLP
    Transformer/encoderblock_{i}/MlpBlock_3/Dense_{0,1}/{kernel, bias}
    Transformer/encoder_norm/{scale, bias}   [pre_logits/{kernel, bias}]   head/{kernel, bias}

Variants found in released files, each detected from the keys and mapped onto that layout:

- `opt/target/` prefix: early files saved the optimizer's target tree. Arrays outside the
  prefix (optimizer state) are ignored, and reported.
- Linen names (`MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`): the released
  files were written by pre-Linen Flax, which numbered a block's submodules with one counter
  (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3); Linen counts per
  module type, so files written later (AugReg, big_vision) carry the other names.
- big_vision: a `params/` prefix; a top-level `pos_embedding` (1, N, D) with no row for the
  [class] token, because big_vision adds the position embeddings before prepending it. A zero
  row makes the two computations identical: the token then enters the encoder as `cls + 0`.
- Scanned blocks (big_vision with `scan=True`): one `Transformer/encoderblock/...` tree whose
  arrays carry a leading depth axis.
- Mean-pooled ("gap") models: no `cls`, and no [class] row in the position embeddings.

On load, position embeddings of another grid are resized with
`keras_vit.finetune.resize_position_embeddings` (the model's own interpolation settings), and a
head of another class count, or a pre-logits layer the model lacks, is dropped and the model's
head set to zeros, the paper's fine-tuning recipe (Section 3.2). Same shapes load bit for bit.

Every parameter tensor is described once, as a `_Param` pairing checkpoint keys with one model
variable and a pair of pure reshaping functions (checkpoint -> model and back), so loading,
saving, the expected shapes in error messages and the coverage check all use the same table.

Hybrid models (`"R50+B/16"`, ...) add their ResNet at the top level of the tree, beside
`embedding` (which then embeds 1x1 "patches" of the ResNet's feature map):

    conv_root/kernel (7, 7, C, width)           gn_root/{scale, bias}
    block{s}/unit{u}/conv{1,2,3}/kernel          block{s}/unit{u}/gn{1,2,3}/{scale, bias}
    block{s}/unit{u}/conv_proj/kernel            block{s}/unit{u}/gn_proj/{scale, bias}

(s, u 1-based; the projection only in units whose input and output differ). The released
hybrid files store GroupNorm scales and biases as (1, 1, 1, C); they are read as (C,).
"""

import dataclasses
import json
import logging
import os
import re
import zipfile

import keras
import numpy as np

from keras_vit import converters, finetune, hub, model_layers, variants
from keras_vit.converters import timm as timm_source
from keras_vit.converters import transformers as transformers_source
from keras_vit.files import atomic_write
from keras_vit.layers import BottleneckUnit, MAPHead
from keras_vit.layers.position_embedding import grid_of_length
from keras_vit.layers.resnet import stem_stride

LAYOUTS = ("vit", "big_vision")

_POSEMB = "Transformer/posembed_input/pos_embedding"
_HEAD_KEYS = ("head/kernel", "head/bias")
_PRE_LOGITS_KEYS = ("pre_logits/kernel", "pre_logits/bias")
_BLOCK_RE = re.compile(r"^Transformer/encoderblock_(\d+)/")
_RESNET_UNIT_RE = re.compile(r"^block(\d+)/unit(\d+)/")
_GROUP_NORM_RE = re.compile(r"^(gn_root|block\d+/unit\d+/gn(\d|_proj))/(scale|bias)$")
_SCANNED = "Transformer/encoderblock/"
# Linen name -> pre-Linen name of a block's submodules (see the module docstring).
_LINEN_TO_ORIGINAL = {
    "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
    "LayerNorm_1": "LayerNorm_2",
    "MlpBlock_0": "MlpBlock_3",
}
_ORIGINAL_TO_LINEN = {v: k for k, v in _LINEN_TO_ORIGINAL.items()}

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadSummary:
    """What `load_npz` did: the layout it read and what it loaded, resized and dropped.

    Attributes:
        path: str. The file read.
        layout: str. The layout detected, e.g. `"original ViT"` or
            `"big_vision (prefix 'params/', scanned blocks)"`.
        loaded: list of str. Checkpoint keys (in the original layout) loaded unchanged.
        resized: list of (key, shape in the file, shape loaded).
        dropped: list of str. Checkpoint keys not loaded (a replaced head).
        zero_initialized: list of str. Model weights set to zeros (a new head).
        ignored: list of str. Arrays outside the parameter tree (optimizer state).
    """

    path: str
    layout: str
    loaded: list = dataclasses.field(default_factory=list)
    resized: list = dataclasses.field(default_factory=list)
    dropped: list = dataclasses.field(default_factory=list)
    zero_initialized: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)

    def lines(self):
        """The summary as short lines for a log or a terminal."""
        out = [
            f"Loaded {len(self.loaded)} arrays from {self.path} ({self.layout} layout)."
        ]
        for key, old, new in self.resized:
            out.append(f"Resized {key}: {old} -> {new}.")
        if self.dropped:
            out.append(f"Dropped {', '.join(self.dropped)}.")
        if self.zero_initialized:
            out.append(f"Zero-initialized {', '.join(self.zero_initialized)}.")
        if self.ignored:
            out.append(
                f"Ignored {len(self.ignored)} arrays outside the parameters "
                f"(e.g. {self.ignored[0]})."
            )
        return out

    def __str__(self):
        return "\n".join(self.lines())


@dataclasses.dataclass(frozen=True)
class _Param:
    """Checkpoint keys <-> one model variable.

    `to_model(*arrays)` turns the arrays of `keys` into the variable's value; `from_model(value)`
    returns them back, in the order of `keys`. Both only reshape, so they are exact inverses.
    """

    keys: tuple
    variable: object
    to_model: object
    from_model: object

    def checkpoint_shapes(self):
        # np.zeros is lazily allocated, so this costs nothing for large kernels.
        arrays = self.from_model(np.zeros(self.variable.shape, "float32"))
        return [tuple(a.shape) for a in arrays]


def _identity(key, variable):
    return _Param((key,), variable, lambda a: a, lambda v: (v,))


def _dense(prefix, layer):
    params = [_identity(f"{prefix}/kernel", layer.kernel)]
    if layer.bias is not None:  # CLIP's patch embedding has none
        params.append(_identity(f"{prefix}/bias", layer.bias))
    return params


def _layer_norm(prefix, layer):
    return [_identity(f"{prefix}/scale", layer.gamma), _identity(f"{prefix}/bias", layer.beta)]


def _fused_projection(prefix, names, dense, heads):
    """A fused Dense (D, len(names) * D) <-> one (D, heads, D / heads) kernel and bias per name.

    The fused kernel's output column s * D + h * head_dim + d is head h, channel d of
    projection s: the order in which TransformerBlock (q, k, v) and MAPHead (k, v) split it.
    """
    width, count = dense.kernel.shape[0], len(names)
    head_dim = width // heads
    kernel = _Param(
        tuple(f"{prefix}/{n}/kernel" for n in names),
        dense.kernel,
        lambda *parts: np.concatenate([a.reshape(width, width) for a in parts], axis=1),
        lambda fused: tuple(fused.reshape(width, count, heads, head_dim).transpose(1, 0, 2, 3)),
    )
    bias = _Param(
        tuple(f"{prefix}/{n}/bias" for n in names),
        dense.bias,
        lambda *parts: np.concatenate([a.reshape(width) for a in parts]),
        lambda fused: tuple(fused.reshape(count, heads, head_dim)),
    )
    return [kernel, bias]


def _attention_out_params(prefix, dense, heads):
    width = dense.kernel.shape[1]
    out_kernel = _Param(
        (f"{prefix}/out/kernel",),
        dense.kernel,
        lambda a: a.reshape(width, width),
        lambda v: (v.reshape(heads, width // heads, width),),
    )
    return [out_kernel, _identity(f"{prefix}/out/bias", dense.bias)]


def _attention_params(prefix, block):
    heads = block.num_heads
    return (_fused_projection(prefix, ("query", "key", "value"), block.qkv, heads)
            + _attention_out_params(prefix, block.attention_output, heads))


def _embedding_params(model):
    """The patch embedding, [class] token and position embeddings."""
    params = []
    patches = model_layers.find_layer(model, "patch_embedding")
    if patches is not None:
        params += _dense("embedding", patches.projection)
    token = model_layers.find_layer(model, "class_token")
    if token is not None:
        params.append(_identity("cls", token.token))
    distillation = model_layers.find_layer(model, "distillation_token")
    if distillation is not None:
        # DeiT's distillation token (no key in the paper's layout; "dist" as timm names it).
        params.append(_identity("dist", distillation.token))
    posemb = model_layers.find_layer(model, "position_embedding")
    if posemb is not None:
        params.append(_identity(_POSEMB, posemb.embeddings))
    registers = model_layers.find_layer(model, "register_tokens")
    if registers is not None and registers.num_registers:
        # DINOv2's register tokens (timm's `reg_token`), (1, R, D).
        params.append(_identity("reg", registers.tokens))
    pre_norm = model_layers.find_layer(model, "pre_norm")
    if pre_norm is not None:
        params += _layer_norm("pre_norm", pre_norm)
    return params


def _encoder_params(model):
    """The Transformer blocks, in order, and the final LayerNorm."""
    params = []
    for i, block in enumerate(model_layers.transformer_blocks(model)):
        prefix = f"Transformer/encoderblock_{i}"
        params += _layer_norm(f"{prefix}/LayerNorm_0", block.attention_norm)
        params += _attention_params(f"{prefix}/MultiHeadDotProductAttention_1", block)
        params += _layer_norm(f"{prefix}/LayerNorm_2", block.mlp_norm)
        # A SwiGLU block's Dense_0 is the packed (D, 2 * mlp_dim) gate-and-value kernel.
        params += _dense(f"{prefix}/MlpBlock_3/Dense_0", block.mlp_dense_1)
        params += _dense(f"{prefix}/MlpBlock_3/Dense_1", block.mlp_dense_2)
        if block.layer_scale is not None:
            params.append(_identity(f"{prefix}/LayerScale_attention/scale",
                                    block.attention_scale.gamma))
            params.append(_identity(f"{prefix}/LayerScale_mlp/scale", block.mlp_scale.gamma))
    norm = model_layers.find_layer(model, "encoder_norm")
    if norm is not None:
        params += _layer_norm("Transformer/encoder_norm", norm)
    return params


def _map_head_params(model):
    """SigLIP's attention-probe pooling (`MAPHead`), under big_vision's `MAPHead_0` names."""
    head = model_layers.find_layer(model, "pooling")
    if not isinstance(head, MAPHead):
        return []
    prefix = "MAPHead_0"
    attention = f"{prefix}/MultiHeadDotProductAttention_0"
    return (
        [_identity(f"{prefix}/probe", head.probe)]
        + _fused_projection(attention, ("query",), head.query, head.num_heads)
        + _fused_projection(attention, ("key", "value"), head.key_value, head.num_heads)
        + _attention_out_params(attention, head.attention_output, head.num_heads)
        + _layer_norm(f"{prefix}/LayerNorm_0", head.norm)
        + _dense(f"{prefix}/MlpBlock_0/Dense_0", head.mlp_dense_1)
        + _dense(f"{prefix}/MlpBlock_0/Dense_1", head.mlp_dense_2)
    )


def _resnet_params(model):
    """A hybrid's ResNet: root convolution and GroupNorm, then every bottleneck unit."""
    params = []
    root = model_layers.find_layer(model, "conv_root")
    if root is not None:
        params.append(_identity("conv_root/kernel", root.kernel))
    norm = model_layers.find_layer(model, "gn_root")
    if norm is not None:
        params += _layer_norm("gn_root", norm)
    for layer in model.layers:
        match = re.fullmatch(r"block(\d+)_unit(\d+)", layer.name)
        if not (match and isinstance(layer, BottleneckUnit)):
            continue
        prefix = f"block{match.group(1)}/unit{match.group(2)}"
        for i in (1, 2, 3):
            params.append(_identity(f"{prefix}/conv{i}/kernel", getattr(layer, f"conv{i}").kernel))
            params += _layer_norm(f"{prefix}/gn{i}", getattr(layer, f"gn{i}"))
        if layer.conv_proj is not None:
            params.append(_identity(f"{prefix}/conv_proj/kernel", layer.conv_proj.kernel))
            params += _layer_norm(f"{prefix}/gn_proj", layer.gn_proj)
    return params


# Functions model -> list of `_Param`, together covering every weight of the backbone (a model
# lacking a part gives []).
_BACKBONE_PARAM_GROUPS = (_resnet_params, _embedding_params, _encoder_params, _map_head_params)


def _head_params(model):
    """(pre-logits params, head params) of the model; empty lists where it has none."""
    pre_logits = model_layers.find_layer(model, "pre_logits")
    head = model_layers.find_layer(model, "head")
    return (
        _dense("pre_logits", pre_logits) if pre_logits is not None else [],
        _dense("head", head) if head is not None else [],
    )


def _model_params(model):
    """All `_Param`s of the model; ValueError if some weight has no checkpoint key."""
    backbone = [p for group in _BACKBONE_PARAM_GROUPS for p in group(model)]
    pre_logits, head = _head_params(model)
    params = backbone + pre_logits + head
    covered = {id(p.variable) for p in params}
    uncovered = [w.path for w in model.weights if id(w) not in covered]
    if uncovered or not backbone:
        raise ValueError(
            f"Model {model.name!r} is not a ViT built by keras_vit.ViT: the .npz layout has no "
            f"key for its weights {uncovered[:5]}"
        )
    return backbone, pre_logits, head


# --------------------------------------------------------------------------- reading files


def read_npz(path):
    """Reads every array of an `.npz` file without ever unpickling anything.

    The one `.npz` reader of the library (checkpoints, LoRA adapter files): object arrays are
    refused by their header's dtype, and each header's shape is checked against the bytes its
    member holds before numpy allocates anything.

    Returns:
        dict key -> np.ndarray.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint file {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not an .npz file: it is not a zip archive (a truncated download, or "
            f"another format)"
        )
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                name = info.filename
                if not name.endswith(".npy"):
                    raise ValueError(
                        f"{path!r} is not an .npz file: member {name!r} is not a .npy array"
                    )
                key = name[: -len(".npy")]
                arrays[key] = _read_member(archive, info, path, key)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path!r} is a damaged zip archive: {exc}") from None
    if not arrays:
        raise ValueError(f"{path!r} holds no arrays")
    return arrays


def _read_member(archive, info, path, key):
    # The header is read first so that an object array is refused by its dtype before
    # np.lib.format would ever reach its pickled payload.
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
            header_size = f.tell()
        if dtype.hasobject:
            raise _Refused(
                f"{path!r}: array {key!r} holds pickled Python objects (dtype {dtype}); "
                f"refusing to unpickle it, as unpickling can run arbitrary code. A checkpoint "
                f"holds numeric arrays only"
            )
        # The header's shape against the bytes the member holds, before numpy allocates the
        # array: a damaged header can claim terabytes (a MemoryError, or the machine's memory).
        claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if claimed != info.file_size - header_size:
            raise _Refused(
                f"{path!r}: array {key!r} cannot be read, the file is damaged or truncated (its "
                f"header says shape {tuple(shape)} of {dtype}, {claimed} bytes; the file holds "
                f"{info.file_size - header_size})"
            )
        with archive.open(info) as f:
            array = np.lib.format.read_array(f, allow_pickle=False)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except MemoryError:
        raise ValueError(
            f"{path!r}: array {key!r} does not fit in this machine's memory") from None
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"{path!r}: array {key!r} cannot be read, the file is damaged or truncated ({exc})"
        ) from None
    return array


class _Refused(Exception):
    pass


def _canonicalize(arrays, path):
    """Maps a file's arrays to the original layout.

    Returns:
        (canonical: dict key -> array, sources: dict key -> the file's key, layout: str,
        ignored: list of the file's keys outside the parameters).
    """
    notes = []
    prefix = ""
    for candidate in ("opt/target/", "params/"):
        if any(k.startswith(candidate) for k in arrays):
            prefix = candidate
            notes.append(f"prefix {candidate!r}")
            break
    ignored = sorted(k for k in arrays if not k.startswith(prefix))
    items = {k[len(prefix):]: (k, v) for k, v in arrays.items() if k.startswith(prefix)}

    scanned = {k: kv for k, kv in items.items() if k.startswith(_SCANNED)}
    if scanned:
        if any(_BLOCK_RE.match(k) for k in items):
            raise ValueError(
                f"{path!r} holds both scanned ({_SCANNED}...) and per-block "
                f"(Transformer/encoderblock_N/...) arrays"
            )
        depths = {v.shape[0] if v.ndim else 0 for _, v in scanned.values()}
        if len(depths) != 1 or 0 in depths:
            shapes = {k: v.shape for k, v in scanned.values()}
            raise ValueError(
                f"{path!r}: the scanned block arrays must share a leading depth axis, found "
                f"shapes {shapes}"
            )
        (depth,) = depths
        for key, (source, value) in scanned.items():
            del items[key]
            rest = key[len(_SCANNED):]
            for i in range(depth):
                items[f"Transformer/encoderblock_{i}/{rest}"] = (f"{source}[{i}]", value[i])
        notes.append(f"{depth} scanned blocks")

    linen = any(
        _BLOCK_RE.match(k) and "/MultiHeadDotProductAttention_0/" in k for k in items
    )
    if linen:
        items = {_rename_block_modules(k, _LINEN_TO_ORIGINAL): kv for k, kv in items.items()}
        notes.append("Linen module names")

    big_vision_posemb = "pos_embedding" in items
    if big_vision_posemb:
        if _POSEMB in items:
            raise ValueError(f"{path!r} holds both 'pos_embedding' and {_POSEMB!r}")
        source, posemb = items.pop("pos_embedding")
        if "cls" in items and posemb.ndim == 3:
            posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
            notes.append("zero [class] row added to pos_embedding")
        items[_POSEMB] = (source, posemb)

    squeezed = [
        k for k, (_, v) in items.items()
        if _GROUP_NORM_RE.match(k) and v.ndim > 1 and all(d == 1 for d in v.shape[:-1])
    ]
    for key in squeezed:
        source, value = items[key]
        items[key] = (source, value.reshape(value.shape[-1]))
    if squeezed:
        notes.append(f"{len(squeezed)} GroupNorm arrays of shape (1, 1, 1, C) read as (C,)")

    name = "big_vision" if (prefix == "params/" or scanned or big_vision_posemb) else (
        "original ViT")
    layout = f"{name} ({', '.join(notes)})" if notes else name
    canonical = {k: v for k, (_, v) in items.items()}
    sources = {k: s for k, (s, _) in items.items()}
    return canonical, sources, layout, ignored


def _rename_block_modules(key, mapping):
    if not _BLOCK_RE.match(key):
        return key
    parts = key.split("/")
    parts[2] = mapping.get(parts[2], parts[2])
    return "/".join(parts)


# --------------------------------------------------------------------------- describing


def _infer(shapes):
    """The `keras_vit.ViT` arguments a dict of original-layout shapes implies, where it can tell.

    Returns:
        dict with, where known: `variant` ("B/16", or None when no size of
        `keras_vit.variants.SIZES` matches), `patch_size`, `hidden_dim`, `depth`, `num_heads`,
        `mlp_dim`, `pooling`, `image_size` (None for a non-square grid), `representation_size`
        (None without pre-logits) and `num_classes` (None without a head).
    """
    info = {}
    embedding = shapes.get("embedding/kernel")
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK_RE.match(k))}
    query = shapes.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    mlp = shapes.get("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel")
    if embedding is not None and len(embedding) == 4 and query and len(query) == 3 and mlp:
        dims = dict(hidden_dim=embedding[3], depth=len(blocks), mlp_dim=mlp[1],
                    num_heads=query[1])
        sizes = [size for size, spec in variants.SIZES.items() if spec == dims]
        units, width = _infer_resnet(shapes)
        stride = embedding[0]
        if units:
            stride *= stem_stride(units)
            spec = variants.VariantSpec(sizes[0] if sizes else "?", embedding[0], **dims,
                                        resnet_units=units, resnet_width=width)
            # Only the hybrids of `variants.HYBRID_STAGES` have a name `ViT` parses.
            variant = spec.name if sizes and "[" not in spec.name else None
            info.update(resnet_units=units, resnet_width=width)
        else:
            variant = f"{sizes[0]}/{embedding[0]}" if sizes else None
        info.update(variant=variant, patch_size=embedding[0], **dims)
        prefix = 1 if "cls" in shapes else 0
        info["pooling"] = "token" if prefix else "gap"
        posemb = shapes.get(_POSEMB)
        info["image_size"] = None
        if posemb is not None and len(posemb) == 3:
            try:
                side, _ = grid_of_length(posemb[1], prefix)
                info["image_size"] = side * stride
            except ValueError:
                pass  # Not a square grid: the image size cannot be told.
    pre_logits = shapes.get("pre_logits/kernel")
    info["representation_size"] = pre_logits[-1] if pre_logits else None
    head = shapes.get("head/kernel")
    info["num_classes"] = head[-1] if head else None
    return info


def _infer_resnet(shapes):
    """(units per stage, root width) of a hybrid's ResNet keys; ((), None) without them."""
    root = shapes.get("conv_root/kernel")
    units = {}
    for key in shapes:
        if match := _RESNET_UNIT_RE.match(key):
            stage, unit = int(match.group(1)), int(match.group(2))
            units[stage] = max(units.get(stage, 0), unit)
    if root is None or len(root) != 4 or not units:
        return (), None
    if sorted(units) != list(range(1, len(units) + 1)):
        return (), None
    return tuple(units[s] for s in sorted(units)), root[3]


def _describe(shapes):
    """Which model a dict of original-layout shapes looks like, in words."""
    info = _infer(shapes)
    parts = []
    if "variant" in info:
        dims = (f"width {info['hidden_dim']}, depth {info['depth']}, {info['num_heads']} "
                f"heads, MLP {info['mlp_dim']}")
        resnet = ""
        if info.get("resnet_units"):
            resnet = (f", on a ResNet of units {list(info['resnet_units'])} and root width "
                      f"{info['resnet_width']}")
        if info["variant"]:
            parts.append(f"{info['variant']} ({dims}{resnet})")
        else:
            parts.append(f"a ViT with patch {info['patch_size']}, {dims}{resnet} (no "
                         f"variant name of keras_vit.variants)")
        parts.append(f"pooling {info['pooling']!r}")
        if info["image_size"]:
            parts.append(f"{info['image_size']}x{info['image_size']} images")
    else:
        parts.append("no keras_vit variant (its embedding or first block is missing)")
    if info["representation_size"]:
        parts.append(f"representation_size {info['representation_size']}")
    if info["num_classes"]:
        parts.append(f"{info['num_classes']} classes")
    return ", ".join(parts)


def inspect_npz(path):
    """Reads a checkpoint's layout and the `keras_vit.ViT` arguments its shapes imply.

    Args:
        path: str or path-like. The `.npz` file.

    Returns:
        dict: `layout` (str), `description` (str, e.g. `"B/16 (width 768, depth 12, 12 heads,
        MLP 3072), pooling 'token', 224x224 images, 21843 classes"`) and, where the shapes
        tell, `variant` (None when no size of `keras_vit.variants.SIZES` matches),
        `image_size`, `pooling`, `representation_size` and `num_classes` (None where the file
        has no pre-logits or no head), plus `patch_size`, `hidden_dim`, `depth`, `num_heads`
        and `mlp_dim`; for a hybrid also `resnet_units` (units per stage) and `resnet_width`
        (filters of the root convolution).

    Raises:
        ValueError: the file is missing, not an `.npz`, damaged, or holds pickled objects.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> info = inspect_npz(save_npz(model, os.path.join(tempfile.mkdtemp(), "mu4.npz")))
    >>> info["variant"], info["image_size"], info["pooling"], info["num_classes"]
    ('mu/4', 16, 'token', 10)
    """
    path = os.fspath(path)
    checkpoint = _npz_checkpoint(path)
    shapes = {k: tuple(v.shape) for k, v in checkpoint.arrays.items()}
    return dict(layout=checkpoint.layout, description=_describe(shapes), **_infer(shapes))


def _model_shapes(params):
    return {k: s for p in params for k, s in zip(p.keys, p.checkpoint_shapes())}


def _canonical_arrays(model):
    """The model's weights in the canonical form: checkpoint key -> array (the `_Param` table)."""
    backbone, pre_logits, head = _model_params(model)
    arrays = {}
    for p in backbone + pre_logits + head:
        arrays.update(zip(p.keys, p.from_model(keras.ops.convert_to_numpy(p.variable))))
    return arrays


# --------------------------------------------------------------------------- loading


def load_npz(model, path):
    """Fills a `keras_vit.ViT` model from a released `.npz` checkpoint.

    Reads the original ViT layout and its variants (`opt/target/` prefix, Linen names,
    big_vision, scanned blocks, mean-pooled models; see the module docstring). Position
    embeddings of another grid are resized with `keras_vit.finetune.resize_position_embeddings`
    using the model's `PositionEmbedding` interpolation settings; a head with another class
    count, or a pre-logits layer the model lacks, is dropped and the model's head set to zeros
    (the paper's fine-tuning). Same shapes load bit for bit.

    The file is read with pickling disabled (an array of Python objects is refused, never
    unpickled). Every new value is computed and checked before the first is assigned: a failed
    call leaves the model untouched.

    Args:
        model: a `keras.Model` built by `keras_vit.ViT`.
        path: str or path-like. The `.npz` file.

    Returns:
        A `LoadSummary` of what was loaded, resized, dropped and zero-initialized; it is also
        logged (logger `keras_vit.checkpoints`, level INFO).

    Raises:
        ValueError: the file is missing, not an `.npz`, damaged or truncated, or holds
            pickled objects; a key the model needs is missing, a key has no place in the model,
            or a shape fits neither the model nor a resize (the message names the key, both
            shapes and the variant the file looks like).

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10)
    >>> path = save_npz(model, os.path.join(tempfile.mkdtemp(), "mu4.npz"))
    >>> bigger = keras_vit.ViT("mu/4", image_size=24, num_classes=5)
    >>> print(load_npz(bigger, path))  # doctest: +ELLIPSIS
    Loaded 21 arrays from ...mu4.npz (original ViT layout).
    Resized Transformer/posembed_input/pos_embedding: (1, 17, 32) -> (1, 37, 32).
    Dropped head/kernel, head/bias.
    Zero-initialized head/kernel, head/bias.
    """
    path = os.fspath(path)
    _model_params(model)  # a model the table does not cover fails before the file is read
    return load_checkpoint(model, _npz_checkpoint(path))


def _load_canonical(model, canonical, sources, layout, ignored, path):
    """Loads canonical arrays (`keras_vit.converters`) into `model`: resizes, head plan, checks.

    Every value is computed and checked before the first is assigned.
    """
    backbone, pre_logits, head = _model_params(model)
    summary = LoadSummary(path=path, layout=layout, ignored=ignored)

    def fail(message):
        file_desc = _describe({k: tuple(v.shape) for k, v in canonical.items()})
        model_desc = _describe(_model_shapes(backbone + pre_logits + head))
        raise ValueError(
            f"{path}: {message}. The file looks like {file_desc}; the model "
            f"{model.name!r} is {model_desc}"
        )

    # Which head keys to load: the paper's fine-tuning drops the pre-training head when the
    # class count changes, and pre-logits the new model does not have.
    def width(keys, axis):
        return canonical[keys[0]].shape[axis] if keys[0] in canonical else None

    plan = finetune.head_plan(
        source_classes=width(_HEAD_KEYS, -1),
        target_classes=_model_shapes(head)["head/kernel"][-1] if head else None,
        source_pre_logits=width(_PRE_LOGITS_KEYS, -1),
        target_pre_logits=_model_shapes(pre_logits)["pre_logits/kernel"][-1]
        if pre_logits else None,
    )
    replace_head = plan == "zero_init"
    params = list(backbone) + list(pre_logits) + (list(head) if plan == "keep" else [])
    to_drop = [k for k in _HEAD_KEYS if k in canonical and plan != "keep"]
    if not pre_logits:
        to_drop += [k for k in _PRE_LOGITS_KEYS if k in canonical]

    for p in params:
        for key, shape in zip(p.keys, p.checkpoint_shapes()):
            if key not in canonical:
                named = "" if layout == "original ViT" else (
                    " (named as in the original layout)")
                fail(f"key {key!r}{named} (expected shape {shape}) is missing from the file")
            array = canonical[key]
            if array.dtype.kind != "f":
                # ml_dtypes' bfloat16 is stored as 2-byte void, as NumPy has no such type.
                hint = " (bfloat16 saved as raw bytes? convert it to float32)" if (
                    array.dtype.kind == "V" and array.dtype.itemsize == 2) else ""
                fail(
                    f"key {sources[key]!r} has dtype {array.dtype}, expected floating-point "
                    f"weights{hint}"
                )
    expected_keys = {k for p in params for k in p.keys}
    for key in canonical:
        if key not in expected_keys and key not in to_drop:
            fail(
                f"unexpected key {sources[key]!r} of shape {tuple(canonical[key].shape)}: the "
                f"model expects no such key"
            )

    assignments = []
    posemb_layer = model_layers.find_layer(model, "position_embedding")
    for p in params:
        found = [canonical[k] for k in p.keys]
        for key, array, shape in zip(p.keys, found, p.checkpoint_shapes()):
            if tuple(array.shape) == shape:
                continue
            if key == _POSEMB and array.ndim == 3 and array.shape[::2] == shape[::2]:
                found = [_resize_posemb(array, posemb_layer, sources[key], fail)]
                summary.resized.append((key, tuple(array.shape), shape))
                continue
            fail(f"key {sources[key]!r} has shape {tuple(array.shape)}, expected {shape}")
        value = np.asarray(p.to_model(*found), dtype=p.variable.dtype)
        assignments.append((p.variable, value))
        resized = {key for key, _, _ in summary.resized}
        summary.loaded += [k for k in p.keys if k not in resized]
    if replace_head:
        for p in head:
            assignments.append((p.variable, np.zeros(p.variable.shape, p.variable.dtype)))
            summary.zero_initialized += list(p.keys)
    summary.dropped = to_drop

    _assign_all(assignments)
    for line in summary.lines():
        _logger.info("%s", line)
    return summary


def _resize_posemb(array, layer, source, fail):
    try:
        return finetune.resize_position_embeddings(
            array,
            layer.grid_size,
            num_prefix_tokens=layer.num_prefix_tokens,
            method=layer.interpolation,
            antialias=layer.antialias,
        )
    except ValueError as exc:
        fail(f"key {source!r} of shape {tuple(array.shape)} cannot be resized to the model's "
             f"{layer.grid_size} grid: {exc}")


def _assign_all(assignments):
    """Assigns every value, or, if one assignment fails, restores the earlier ones."""
    previous = []
    try:
        for variable, value in assignments:
            old = keras.ops.convert_to_numpy(variable)
            variable.assign(value)
            previous.append((variable, old))
    except Exception:
        for variable, old in reversed(previous):
            variable.assign(old)
        raise


# --------------------------------------------------------------------------- saving


def save_npz(model, path, *, layout="vit"):
    """Writes a `keras_vit.ViT` model as an `.npz` checkpoint, the inverse of `load_npz`.

    With `layout="vit"`, the original layout that `load_npz` reads back bit for bit (and
    `save_npz(load_npz(...))` writes the same arrays). With `layout="big_vision"`: `params/`
    prefix, Linen names, and a `pos_embedding` without the [class] row, whose value is folded
    into `cls` (`cls + posemb[0]`, the same input to the encoder), as big_vision's own files.

    The file appears complete or not at all (written under a temporary name, then renamed).

    Args:
        model: a `keras.Model` built by `keras_vit.ViT`.
        path: str or path-like. The file to write; written as given (no suffix is added).
        layout: str. `"vit"` or `"big_vision"`. Defaults to `"vit"`.

    Returns:
        str: `path`.

    Raises:
        ValueError: unknown layout, or a model with weights the layout has no key for.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=10, pooling="gap")
    >>> path = save_npz(model, os.path.join(tempfile.mkdtemp(), "mu4.npz"))
    >>> arrays = np.load(path)
    >>> len(arrays), arrays["Transformer/posembed_input/pos_embedding"].shape
    (23, (1, 16, 32))
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}: expected one of {list(LAYOUTS)}")
    path = os.fspath(path)
    arrays = _canonical_arrays(model)
    if layout == "big_vision":
        arrays = _to_big_vision(arrays)
    # Written under a temporary name and renamed: the file appears complete or not at all.
    with atomic_write(path) as temporary:
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)
    return path


def _to_big_vision(arrays):
    arrays = {_rename_block_modules(k, _ORIGINAL_TO_LINEN): v for k, v in arrays.items()}
    posemb = arrays.pop(_POSEMB)
    if "cls" in arrays:
        arrays["cls"] = arrays["cls"] + posemb[:, :1]
        posemb = posemb[:, 1:]
    arrays["pos_embedding"] = posemb
    return {f"params/{k}": v for k, v in arrays.items()}


# --------------------------------------------------------------------------- sources


def _npz_checkpoint(path):
    path = os.fspath(path)
    canonical, sources, layout, ignored = _canonicalize(read_npz(path), path)
    # The architecture of an `.npz` comes from the caller (`ViT(variant, ...)`), as before:
    # the paper's files carry no config, only shapes (`inspect_npz` reads what they imply).
    return converters.Checkpoint(name=path, source="npz", layout=layout, architecture=None,
                                 arrays=canonical, sources=sources, ignored=ignored)


def _npz_write(arrays, architecture):
    raise ValueError("the paper's .npz layout is written by save_npz(model, path)")


# The checkpoint sources, one entry each (`keras_vit.converters`): how to tell a checkpoint is
# of that source, how to read it into the canonical form, how to write the canonical form back.
# The `.npz` entry is detected by the file's suffix; the others by their `config.json`.
SOURCES = {
    "npz": converters.Source(
        "npz", detect=lambda files: False, read=_npz_checkpoint, write=_npz_write),
    transformers_source.NAME: converters.Source(
        transformers_source.NAME, transformers_source.detect, transformers_source.read,
        transformers_source.write),
    timm_source.NAME: converters.Source(
        timm_source.NAME, timm_source.detect, timm_source.read, timm_source.write),
}
PRETRAINED_LAYOUTS = (transformers_source.NAME, timm_source.NAME)


def read_checkpoint(weights, *, config_only=False):
    """Reads a checkpoint of any source into the canonical form.

    Args:
        weights: an `hf://ORG/NAME[@REVISION]` reference, a folder with `config.json` and
            safetensors (a transformers `save_pretrained` or timm `save_for_hf` output, a
            downloaded snapshot), a `.safetensors` file with its `config.json` beside it, or
            a released `.npz` file.
        config_only: bool. Read (and download) the configs only: the returned checkpoint's
            `arrays` are empty. Defaults to False.

    Returns:
        A `keras_vit.converters.Checkpoint`.

    Raises:
        ValueError: missing files, pickled weights, an unknown `model_type` or timm
            architecture, a config the weights contradict, missing or unexpected keys.
        ImportError: `huggingface_hub` or `safetensors` is not installed (the `hub` extra).
    """
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(".npz"):
        return SOURCES["npz"].read(weights)
    files = hub.locate(weights, config_only=config_only)
    if files.config is None:
        raise ValueError(
            f"{files.name}: no config.json beside the weights. keras_vit builds the model its "
            f"config describes and never guesses the architecture from file names: put the "
            f"config.json the file came with beside it"
        )
    source = next((s for s in SOURCES.values() if s.detect(files)), None)
    if source is None:
        raise ValueError(
            f"{files.name}: config.json has neither a 'model_type' (transformers) nor an "
            f"'architecture' (timm) field; supported transformers model types: "
            f"{', '.join(transformers_source.MODEL_TYPES)}"
        )
    if config_only:
        return source.read(files, None)
    return source.read(files, hub.read_tensors(files))


def load_checkpoint(model, checkpoint):
    """Fills `model` from a checkpoint read by `read_checkpoint`, as `load_npz` does.

    Position embeddings of another grid are interpolated, a head of other classes is replaced
    by a zero-initialized one; a failed call leaves the model untouched.

    Returns:
        A `LoadSummary`.
    """
    return _load_canonical(model, checkpoint.arrays, checkpoint.sources, checkpoint.layout,
                           checkpoint.ignored, checkpoint.name)


def architecture_of(model, *, class_names=None, mean=None, std=None):
    """The `keras_vit.converters.Architecture` of a model built by `keras_vit.ViT`.

    `mean` and `std` default to the model's own input normalization (its `preprocessing`
    layer), else to the paper's `x / 127.5 - 1` (mean = std = 0.5).
    """
    if model_layers.find_layer(model, "conv_root") is not None:
        raise ValueError(
            f"Model {model.name!r} is a hybrid (ResNet stem): the transformers and timm "
            f"layouts keras_vit writes hold the plain ViT only (save_npz writes hybrids)")
    blocks = model_layers.transformer_blocks(model)
    patches = model_layers.find_layer(model, "patch_embedding")
    posemb = model_layers.find_layer(model, "position_embedding")
    pooling = model_layers.find_layer(model, "pooling")
    if not blocks or patches is None or posemb is None or pooling is None:
        raise ValueError(f"Model {model.name!r} is not a ViT built by keras_vit.ViT")
    first = blocks[0]
    registers = model_layers.find_layer(model, "register_tokens")
    width = patches.hidden_dim
    channels = patches.num_channels
    spec = converters.spec_of(
        patch_size=patches.patch_size, hidden_dim=width, depth=len(blocks),
        num_heads=first.num_heads, mlp_dim=first.mlp_dim,
        layer_norm_epsilon=first.layer_norm_epsilon, approximate_gelu=first.approximate_gelu,
        distillation_token=model_layers.find_layer(model, "distillation_token") is not None,
        activation=first.activation, layer_scale=first.layer_scale,
        num_registers=registers.num_registers if registers is not None else 0,
        pre_norm=model_layers.find_layer(model, "pre_norm") is not None,
        patch_bias=patches.use_bias, position_interpolation=posemb.interpolation,
    )
    image_size = tuple(g * patches.patch_size for g in posemb.grid_size)
    preprocessing = model_layers.find_layer(model, "preprocessing")
    if preprocessing is not None and mean is None and std is None:
        scale = np.broadcast_to(np.asarray(preprocessing.scale, "float64"), (channels,))
        offset = np.broadcast_to(np.asarray(preprocessing.offset, "float64"), (channels,))
        # x * scale + offset = (x / 255 - mean) / std.
        std = tuple(float(v) for v in 1.0 / (255.0 * scale))
        mean = tuple(float(-o * s) for o, s in zip(offset, std))
    mean = (0.5,) * channels if mean is None else tuple(float(v) for v in mean)
    std = (0.5,) * channels if std is None else tuple(float(v) for v in std)
    classes = model_layers.num_classes(model) or 0
    if class_names is not None and len(class_names) != classes:
        raise ValueError(
            f"class_names has {len(class_names)} names, the model's head {classes} classes")
    return converters.Architecture(
        spec=spec, image_size=image_size, pooling=pooling.pooling, num_classes=classes,
        representation_size=model_layers.representation_size(model), num_channels=channels,
        class_names=None if class_names is None else tuple(str(n) for n in class_names),
        mean=mean, std=std,
    )


def save_pretrained(model, folder, *, layout="transformers", class_names=None, mean=None,
                    std=None):
    """Writes a `keras_vit.ViT` model as a Hub checkpoint folder transformers or timm loads.

    The inverse of `ViT(weights=folder)`: `config.json`, `model.safetensors` and, for
    transformers, `preprocessor_config.json`. transformers' `from_pretrained(folder)` and
    timm's `create_model("local-dir:" + folder, pretrained=True)` (or `"hf-hub:ORG/NAME"` once
    uploaded) give the model's outputs. The folder appears complete or not at all.

    Args:
        model: a `keras.Model` built by `keras_vit.ViT` (not a hybrid).
        folder: str or path-like. The folder to write (replaced if it exists).
        layout: str. `"transformers"` (a `ViTForImageClassification`, `ViTModel` without a
            head, or `DeiTForImageClassificationWithTeacher` for a distilled model) or
            `"timm"` (`vision_transformer` / `deit` with `model_args`). Defaults to
            `"transformers"`.
        class_names: sequence of str or None. The name of each class (`id2label`,
            `label_names`). Defaults to None (`LABEL_i`).
        mean, std: sequences of floats or None. The input normalization of [0, 1] pixels to
            record; default to the model's `preprocessing` layer's, else 0.5 (the paper's
            `x / 127.5 - 1`, what a keras_vit model without preprocessing takes).

    Returns:
        str: `folder`.

    Raises:
        ValueError: an unknown layout, or a model the layout cannot express (the message says
            which part).

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=3, approximate_gelu=False)
    >>> folder = save_pretrained(model, os.path.join(tempfile.mkdtemp(), "mu4"))
    >>> sorted(os.listdir(folder))
    ['config.json', 'model.safetensors', 'preprocessor_config.json']
    >>> reloaded = keras_vit.ViT(weights=folder)
    >>> reloaded.count_params() == model.count_params()
    True
    """
    if layout not in PRETRAINED_LAYOUTS:
        raise ValueError(
            f"Unknown layout {layout!r}: expected one of {list(PRETRAINED_LAYOUTS)}")
    safetensors_numpy = hub.import_safetensors_numpy()  # before anything is computed
    architecture = architecture_of(model, class_names=class_names, mean=mean, std=std)
    config, tensors, processor = SOURCES[layout].write(_canonical_arrays(model), architecture)
    folder = os.fspath(folder)
    with atomic_write(folder, directory=True) as temporary:
        os.makedirs(temporary)
        # transformers refuses safetensors files without a "format" entry in their metadata.
        safetensors_numpy.save_file(
            {k: np.ascontiguousarray(v, "float32") for k, v in tensors.items()},
            os.path.join(temporary, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(temporary, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        if processor is not None:
            with open(os.path.join(temporary, "preprocessor_config.json"), "w") as f:
                json.dump(processor, f, indent=2)
    return folder
