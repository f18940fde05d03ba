"""LoRA fine-tuning of a ViT: adapters on the blocks' projections, saved alone, merged for export.

Low-rank adaptation ([Hu et al., 2021](https://arxiv.org/abs/2106.09685)) freezes a pre-trained
kernel W (d_in, d_out) and learns W + (alpha / r) A B with A (d_in, r) and B (r, d_out), B
starting at zero, so the adapted model starts as the pre-trained one. Keras' `Dense.enable_lora`
does the per-layer work; this module chooses the layers of a ViT by role, freezes everything
else except the new head (and optionally the per-channel scales: LayerNorms and LayerScale),
saves and loads only what training changed, and merges the adapters back into plain kernels for
export.

Targets, by role (each role is one Dense layer in every `TransformerBlock`):

| role               | layer              | kernel        |
|--------------------|--------------------|---------------|
| `qkv`              | `qkv`              | (D, 3D): one adapter, fused q, k and v |
| `attention_output` | `attention_output` | (D, D)        |
| `mlp_in`           | `mlp_dense_1`      | (D, mlp_dim); SwiGLU: (D, 2 mlp_dim), gate and value |
| `mlp_out`          | `mlp_dense_2`      | (mlp_dim, D)  |

The fused q|k|v kernel takes one adapter of rank r, i.e. one A shared by q, k and v and a B of
3D columns: r (D + 3D) weights where three separate adapters would take 3 r (D + D), and q, k
and v updates that share a rank-r input subspace. A SwiGLU MLP's packed gate|value kernel
likewise takes one adapter. Groups: `"attention"` (qkv and attention_output), `"mlp"` (mlp_in
and mlp_out), `"all"`.

A model pooled by attention (`pooling="map"`, SigLIP's `MAPHead`) has one more attention layer
after the blocks, and fine-tuning it is expected to adapt that layer's attention too (it alone
decides which tokens the features come from): each role also names the same projection of the
`MAPHead` (`POOLING_TARGETS`): `qkv` its `query` and `key_value` (two adapters: the query
projects the learned probe, the keys and values the tokens), `attention_output` its
`attention_output`, `mlp_in` / `mlp_out` its MLP. Its probe, like the [class] token and the
register tokens, stays frozen.

Only the head and the adapters train, and with `train_norms` the per-channel scales as well: the
LayerNorms' scales and offsets (the blocks', the encoder's last, a `pre_norm` and a `MAPHead`'s
own) and LayerScale's gammas (DINOv2), which are per-channel factors of the same kind and size
(D each, a few thousand weights in all): frozen by default, trained together with the norms.
"""

import json
import os

import keras
import numpy as np
from keras import ops

from keras_vit import checkpoints, model_layers
from keras_vit.files import atomic_write
from keras_vit.layers.layer_scale import LayerScale
from keras_vit.layers.map_head import MAPHead
from keras_vit.layers.transformer_block import TransformerBlock
from keras_vit.validation import check_positive_int

# role -> the TransformerBlock sublayer it names (the attribute and the layer name).
TARGETS = {
    "qkv": "qkv",
    "attention_output": "attention_output",
    "mlp_in": "mlp_dense_1",
    "mlp_out": "mlp_dense_2",
}
# role -> the MAPHead sublayers it names (`pooling="map"`): the same projections in its attention
# pooling; its query and its keys|values are two Dense layers.
POOLING_TARGETS = {
    "qkv": ("query", "key_value"),
    "attention_output": ("attention_output",),
    "mlp_in": ("mlp_dense_1",),
    "mlp_out": ("mlp_dense_2",),
}
TARGET_GROUPS = {
    "attention": ("qkv", "attention_output"),
    "mlp": ("mlp_in", "mlp_out"),
    "all": tuple(TARGETS),
}
DEFAULT_TARGETS = ("all",)

_LORA_VARIABLES = ("lora_kernel_a", "lora_kernel_b")
# Key of the adapter file's settings (a JSON string), beside the arrays keyed by variable path.
_SETTINGS_KEY = "__lora_settings__"


def expand_targets(targets):
    """The target roles `targets` names, in `TARGETS` order: groups expanded, repeats dropped.

    Args:
        targets: str or sequence of str. Roles of `TARGETS` and groups of `TARGET_GROUPS`; a
            string may list several, comma-separated (the training binary's `--lora_targets`).

    Returns:
        tuple of role names.

    Raises:
        ValueError: an unknown name, or no name at all.

    Example:

    >>> expand_targets("attention,mlp_in")
    ('qkv', 'attention_output', 'mlp_in')
    """
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    names = list(targets)
    if not names:
        raise ValueError("targets is empty: name at least one of "
                         f"{', '.join((*TARGETS, *TARGET_GROUPS))}")
    roles = set()
    for name in names:
        if name in TARGET_GROUPS:
            roles.update(TARGET_GROUPS[name])
        elif name in TARGETS:
            roles.add(name)
        else:
            raise ValueError(
                f"Unknown LoRA target {name!r}: expected roles {', '.join(TARGETS)} or groups "
                f"{', '.join(TARGET_GROUPS)}"
            )
    return tuple(role for role in TARGETS if role in roles)


def target_layers(model, targets=DEFAULT_TARGETS):
    """The Dense layers of `model` that `targets` names, block by block, then a `MAPHead`'s."""
    roles = expand_targets(targets)
    blocks = model_layers.transformer_blocks(model)
    if not blocks:
        raise ValueError(f"Model {model.name!r} has no TransformerBlock: is it a keras_vit ViT?")
    layers = [getattr(block, TARGETS[role]) for block in blocks for role in roles]
    pooling = model_layers.find_layer(model, "pooling")
    if isinstance(pooling, MAPHead):
        layers += [getattr(pooling, name) for role in roles for name in POOLING_TARGETS[role]]
    return layers


def lora_layers(model):
    """The layers of `model` (its own and its blocks' sublayers) that have LoRA enabled."""
    return [layer for layer in _layers(model) if getattr(layer, "lora_enabled", False)]


def enable_lora(model, rank, *, targets=DEFAULT_TARGETS, alpha=None, train_norms=False):
    """Puts LoRA adapters on a ViT's projections and freezes everything else but the head.

    Changes `model` in place: each targeted Dense layer of every block (and of a `MAPHead`
    pooling, see the module docstring) gets Keras' LoRA (`keras.layers.Dense.enable_lora`: A
    He-uniform, B zero, so the outputs do not change until B is trained), and every other
    weight is frozen (`variable.trainable = False`) except the prediction `head` (a new
    zero-initialized one after `keras_vit.finetune.adapt`, Section 3.2 of the ViT paper) and,
    with `train_norms`, the per-channel scales: the LayerNorms' scales and offsets and the
    LayerScale gammas.
    Compile (or build the optimizer) after this call: an optimizer built before it holds the
    old trainable variables.

    Args:
        model: a keras_vit ViT (hybrids and `dynamic_image_size` models included).
        rank: int >= 1. Rank r of each adapter.
        targets: str or sequence of str. Which projections of every block get an adapter (see
            the module docstring): roles `"qkv"`, `"attention_output"`, `"mlp_in"`,
            `"mlp_out"`, groups `"attention"`, `"mlp"`, `"all"`. Defaults to `("all",)`.
        alpha: None or number > 0. The adapters are scaled by alpha / rank; None uses alpha =
            rank (scale 1), Keras' default. Defaults to None.
        train_norms: bool. Also train the LayerNorms (of every block, the encoder's last, a
            `pre_norm` and a `MAPHead`'s) and the LayerScale gammas (DINOv2). Defaults to
            False.

    Returns:
        `model`, for chaining.

    Raises:
        ValueError: `model` is not a keras_vit ViT, already has LoRA, or an argument is
            malformed.

    Example:

    >>> model = keras_vit.ViT("mu/4", image_size=16, num_classes=3)
    >>> _ = enable_lora(model, rank=2, targets="attention")
    >>> sorted({v.path.split("/")[-1] for v in model.trainable_variables})
    ['bias', 'kernel', 'lora_kernel_a', 'lora_kernel_b']
    >>> len(lora_layers(model)), model.get_layer("head").trainable
    (2, True)
    """
    check_positive_int("rank", rank)
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha must be a positive number or None, received {alpha!r}")
    layers = target_layers(model, targets)
    already = lora_layers(model)
    if already:
        raise ValueError(
            f"Model {model.name!r} already has LoRA on {len(already)} layers (e.g. "
            f"{already[0].path!r}); LoRA can be enabled once"
        )
    for variable in model.variables:
        variable.trainable = False
    for layer in layers:
        layer.enable_lora(rank, lora_alpha=alpha)
    head = model_layers.find_layer(model, "head")
    trained = list(head.variables) if head is not None else []
    if train_norms:
        trained += [v for layer in _per_channel_scales(model) for v in layer.variables]
    for variable in trained:
        variable.trainable = True
    return model


def save_lora_weights(model, path):
    """Writes the weights LoRA fine-tuning changed: the adapters, the head, trained norms.

    Every trainable variable of `model` (after `enable_lora`: the adapters' A and B, the head,
    the LayerNorms and LayerScale gammas with `train_norms`) goes into an `.npz` file under its
    variable path, with the adapters' settings; the frozen pre-trained weights are not written.
    The file is written atomically (`keras_vit.files.atomic_write`).

    Args:
        model: a keras_vit ViT with LoRA enabled.
        path: str or path-like, ending in `.npz`.

    Raises:
        ValueError: the model has no LoRA layers, or `path` does not end in `.npz`.
    """
    layers = _check_lora_model(model)
    path = _check_npz_path(path)
    settings = _settings(model, layers)
    arrays = {v.path: ops.convert_to_numpy(v) for v in model.trainable_variables}
    arrays[_SETTINGS_KEY] = np.array(json.dumps(settings, sort_keys=True))
    with atomic_write(path) as temporary:
        with open(temporary, "wb") as f:
            np.savez(f, **arrays)


def load_lora_weights(model, path):
    """Loads a `save_lora_weights` file into `model`, enabling LoRA as the file says if needed.

    `model` must be the pre-trained model the adapters were trained on, with the same head
    (e.g. `keras_vit.finetune.adapt(pretrained, num_classes=10)`: a new head's zeros are
    replaced by the file's). Without LoRA, it is enabled with the file's rank, alpha, targets
    and norms; with LoRA, the targets, rank and alpha must be the file's. Nothing is changed
    unless every array fits: each adapter the kernel it adapts, every other array (head,
    norms) the variable of its path.

    Args:
        model: a keras_vit ViT.
        path: str or path-like. An `.npz` file written by `save_lora_weights`.

    Returns:
        `model`.

    Raises:
        ValueError: the file is not an adapter file, or does not fit `model` (the message
            names the variable and both shapes, or what is missing).
    """
    path = _check_npz_path(path)
    arrays = checkpoints.read_npz(path)
    if _SETTINGS_KEY not in arrays:
        raise ValueError(f"{path!r} is not a LoRA adapter file of save_lora_weights: it "
                         f"has no {_SETTINGS_KEY!r} entry")
    settings = json.loads(str(arrays.pop(_SETTINGS_KEY)))
    layers = lora_layers(model)
    if layers:
        mine = _settings(model, layers)
        for key in ("targets", "rank", "alpha"):
            if mine[key] != settings[key]:
                raise ValueError(f"{path!r} holds adapters with {key} {settings[key]!r}; model "
                                 f"{model.name!r} has LoRA with {key} {mine[key]!r}")
    else:
        layers = target_layers(model, settings["targets"])
    # Every array checked against the model before anything changes: the adapters against
    # the kernels they adapt, the rest (head, norms) against the variables of those paths.
    rank = settings["rank"]
    shapes = {v.path: tuple(v.shape) for v in model.weights}
    for layer in layers:
        fan_in, fan_out = layer.kernel.shape
        shapes[f"{layer.path}/lora_kernel_a"] = (fan_in, rank)
        shapes[f"{layer.path}/lora_kernel_b"] = (rank, fan_out)
    adapters = {key for key in shapes if key.endswith(_LORA_VARIABLES)}
    missing = sorted(adapters - set(arrays))
    extra = sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise ValueError(
            f"{path!r} does not fit model {model.name!r}: adapters with no array "
            f"{missing[:5]}, arrays with no variable {extra[:5]}"
        )
    for key, array in arrays.items():
        if tuple(array.shape) != shapes[key]:
            raise ValueError(
                f"{path!r}: {key} has shape {tuple(array.shape)}, the model's variable has "
                f"{shapes[key]}"
            )
    if not lora_layers(model):
        enable_lora(model, rank, targets=settings["targets"], alpha=settings["alpha"],
                    train_norms=settings["train_norms"])
    variables = {v.path: v for v in model.weights}
    for key, array in arrays.items():
        variables[key].assign(array)
    return model


def merge_lora(model):
    """A copy of `model` without LoRA: each adapter merged into its kernel, W + (alpha/r) A B.

    For export and inference: the copy is a plain keras_vit ViT (one matmul per projection,
    every weight trainable) computing what `model` computes, up to float rounding. `model`
    itself is not changed. (A `.keras` file of a LoRA model also holds merged kernels: Keras
    merges the adapters when it saves a Dense layer, and the blocks of the reloaded model have
    none.)

    Args:
        model: a keras_vit ViT with LoRA enabled.

    Returns:
        A new Functional `keras.Model` with the same name, layers and input.

    Raises:
        ValueError: the model has no LoRA layers.
    """
    layers = _check_lora_model(model)
    config = model.get_config()
    for layer_config in config["layers"]:
        # A top-level Dense with LoRA (enabled by hand) keeps it in its config: drop it.
        layer_config["config"].pop("lora_rank", None)
        layer_config["config"].pop("lora_alpha", None)
    merged = model.__class__.from_config(config)
    # Weights (not seed-generator states, whose paths are global counters) by path, as NumPy
    # copies: on JAX a buffer shared by two models' variables is deleted when either model's
    # compiled step donates it.
    values = {variable.path: ops.convert_to_numpy(variable) for variable in model.weights}
    for layer in layers:
        kernel = next(v for v in layer.variables if v.path.endswith("/kernel"))
        delta = (layer.lora_alpha / layer.lora_rank) * ops.matmul(
            ops.cast(layer.lora_kernel_a, "float32"), ops.cast(layer.lora_kernel_b, "float32"))
        values[kernel.path] = ops.convert_to_numpy(
            ops.cast(ops.add(ops.cast(kernel, "float32"), delta), kernel.dtype))
    unmatched = [v.path for v in merged.weights if v.path not in values]
    if unmatched:
        raise ValueError(f"Cannot merge model {model.name!r}: no weights for {unmatched[:5]} "
                         f"in its copy")
    for variable in merged.weights:
        variable.assign(values[variable.path])
    return merged


def count_parameters(model):
    """(trainable, total) weights of `model`, as `model.count_params()` counts them."""
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return trainable, sum(int(np.prod(v.shape)) for v in model.weights)


# The Dense, LayerNorm and LayerScale sublayers of our layers that have them, by attribute name
# (LayerScale's are None in a block without it).
_SUBLAYERS = (
    (TransformerBlock, (*TARGETS.values(), "attention_norm", "mlp_norm", "attention_scale",
                        "mlp_scale")),
    (MAPHead, ("query", "key_value", "attention_output", "norm", "mlp_dense_1", "mlp_dense_2")),
)


def _layers(model):
    # The model's layers, each block (and a MAPHead) followed by its sublayers (Keras has no
    # public traversal of a custom layer's sublayers; these layers' attributes are ours).
    for layer in model.layers:
        yield layer
        for cls, names in _SUBLAYERS:
            if isinstance(layer, cls):
                for name in names:
                    sublayer = getattr(layer, name, None)
                    if sublayer is not None:
                        yield sublayer


def _per_channel_scales(model):
    # What `train_norms` trains: the LayerNorms and the LayerScales.
    return [layer for layer in _layers(model)
            if isinstance(layer, (keras.layers.LayerNormalization, LayerScale))]


def _check_lora_model(model):
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"Model {model.name!r} has no LoRA layers: call "
                         f"keras_vit.finetune.enable_lora(model, rank) first")
    return layers


def _check_npz_path(path):
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"LoRA adapter path {path!r} must end in '.npz'")
    return path


def _settings(model, layers):
    # What the file's adapters are: enough to enable LoRA the same way on a fresh model.
    names = {layer.name for layer in layers}
    targets = [role for role, name in TARGETS.items() if name in names]
    norms = _per_channel_scales(model)
    return {
        "rank": int(layers[0].lora_rank),
        "alpha": float(layers[0].lora_alpha),
        "targets": targets,
        "train_norms": bool(norms) and all(
            v.trainable for layer in norms for v in layer.variables),
    }
