"""Checkpoints of other libraries <-> keras_vit's canonical form: one converter per source.

keras_vit describes each model variable once, in `keras_vit.checkpoints` (its `_Param` table),
under the key names of the paper's released `.npz` files (`embedding/kernel`,
`Transformer/encoderblock_3/MultiHeadDotProductAttention_1/query/kernel`, ...) and in their
shapes. That is the canonical form. A source is one entry of `keras_vit.checkpoints.SOURCES`:

- `detect(files)`: whether a checkpoint (`keras_vit.hub.CheckpointFiles`) is of this source;
- `read(files, tensors)`: its tensors in the canonical form, and the `Architecture` its config
  states (a `Checkpoint`);
- `write(arrays, architecture)`: the inverse, canonical arrays (and the `Architecture`, its
  mean and std included) back to the source's files: (config, tensors, preprocessor config or
  None), which `keras_vit.checkpoints.save_pretrained` writes.

The sources here: `transformers` (`config.json` with a `model_type`) and `timm` (`config.json`
with an `architecture`); the paper's `.npz` is the third entry, in `keras_vit.checkpoints`.
Each converter is a list of `Rule`s, pairs of pure functions between the source's tensors and
one canonical array, so reading and writing cannot drift apart. A new family is a new entry.
"""

import dataclasses

import numpy as np

from keras_vit import variants


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a checkpoint's config says the model is: the arguments `keras_vit.ViT` builds from.

    Attributes:
        spec: `keras_vit.variants.VariantSpec`. Width, depth, heads, MLP width, patch size, LayerNorm
            epsilon, GELU form, distillation token.
        image_size: (height, width). The size the checkpoint was trained at.
        pooling: str. `"token"`, `"gap"` or `"distilled"` (`keras_vit.layers.TokenPooling`),
            or `"map"` (`keras_vit.layers.MAPHead`, SigLIP's attention-probe pooling).
        num_classes: int. Outputs of its head; 0 for a backbone without one.
        representation_size: int or None. Width of a Dense + tanh after the pooling (the paper's
            pre-logits, transformers' `ViTModel` pooler).
        num_channels: int. Channels of the input images.
        class_names: tuple of str or None. The name of each class, in order (`id2label`,
            timm's `label_names`).
        mean, std: tuple of floats or None. Per-channel normalization of [0, 1] pixels the
            checkpoint was trained with; None when it is the paper's `x / 127.5 - 1`.
        crop_fraction: float. Evaluation resize-then-crop fraction (timm's `crop_pct`).
        interpolation: str. Resize method of the evaluation preprocessing.
    """

    spec: variants.VariantSpec
    image_size: tuple
    pooling: str = "token"
    num_classes: int = 0
    representation_size: int | None = None
    num_channels: int = 3
    class_names: tuple | None = None
    mean: tuple | None = None
    std: tuple | None = None
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read into the canonical form.

    Attributes:
        name: str. What it was read from (an `hf://` reference, a folder, a file).
        source: str. The key of its entry in `keras_vit.checkpoints.SOURCES`.
        layout: str. Its layout in words, e.g. `"transformers vit (ViTForImageClassification)"`.
        architecture: `Architecture`.
        arrays: dict. Canonical key -> np.ndarray.
        sources: dict. Canonical key -> the key (or keys) of the file it came from, for messages.
        ignored: list of str. Keys of the file outside the model (e.g. MAE's decoder).
    """

    name: str
    source: str
    layout: str
    architecture: Architecture
    arrays: dict
    sources: dict
    ignored: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Source:
    """One entry of the table of checkpoint sources (`keras_vit.checkpoints.SOURCES`)."""

    name: str
    detect: object
    read: object
    write: object


# Canonical key names (the paper's `.npz` layout; `keras_vit.checkpoints` documents the shapes).
POSEMB = "Transformer/posembed_input/pos_embedding"
ENCODER_NORM = "Transformer/encoder_norm"


def block(i):
    """Canonical prefix of Transformer block `i`."""
    return f"Transformer/encoderblock_{i}"


ATTENTION_NORM, ATTENTION, MLP_NORM, MLP = (
    "LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")


@dataclasses.dataclass(frozen=True)
class Rule:
    """Source tensors <-> canonical arrays, by two pure functions that only reshape.

    `to_canonical(*tensors)` turns the tensors of `source_keys` into the arrays of
    `canonical_keys` (a tuple, in that order); `from_canonical(*arrays)` returns the tensors
    back, in the order of `source_keys`. Both directions come from one rule, so a writer is the
    reader's exact inverse.
    """

    canonical_keys: tuple
    source_keys: tuple
    to_canonical: object
    from_canonical: object


def same(canonical_key, source_key):
    return Rule((canonical_key,), (source_key,), lambda a: (a,), lambda a: (a,))


def transposed(canonical_key, source_key):
    """A torch `Linear` weight (out, in) <-> a Keras `Dense` kernel (in, out)."""
    return Rule((canonical_key,), (source_key,), lambda a: (a.T,), lambda a: (a.T,))


def layer_norm(canonical_prefix, source_prefix):
    return [same(f"{canonical_prefix}/scale", f"{source_prefix}.weight"),
            same(f"{canonical_prefix}/bias", f"{source_prefix}.bias")]


def linear(canonical_prefix, source_prefix):
    return [transposed(f"{canonical_prefix}/kernel", f"{source_prefix}.weight"),
            same(f"{canonical_prefix}/bias", f"{source_prefix}.bias")]


def patch_embedding(source_prefix):
    """A torch `Conv2d` (D, C, P, P) <-> the canonical (P, P, C, D) kernel, and its bias."""
    return [
        Rule(("embedding/kernel",), (f"{source_prefix}.weight",),
             lambda w: (w.transpose(2, 3, 1, 0),), lambda k: (k.transpose(3, 2, 0, 1),)),
        same("embedding/bias", f"{source_prefix}.bias"),
    ]


def attention_projection(canonical_key, source_key, heads):
    """A torch (D, D) q, k or v weight <-> the canonical (D, heads, D / heads) kernel."""
    def to_canonical(w):
        width = w.shape[1]
        return (w.T.reshape(width, heads, width // heads),)
    return Rule((canonical_key,), (source_key,), to_canonical,
                lambda k: (k.reshape(k.shape[0], -1).T,))


def attention_bias(canonical_key, source_key, heads):
    return Rule((canonical_key,), (source_key,), lambda b: (b.reshape(heads, -1),),
                lambda b: (b.reshape(-1),))


def attention_output(canonical_key, source_key, heads):
    """A torch (D, D) output weight <-> the canonical (heads, D / heads, D) kernel."""
    def to_canonical(w):
        width = w.shape[0]
        return (w.T.reshape(heads, width // heads, width),)
    return Rule((canonical_key,), (source_key,), to_canonical,
                lambda k: (k.reshape(-1, k.shape[-1]).T,))


def distilled_head(kernel_keys, bias_keys):
    """DeiT's two heads <-> the one head on the concatenated [class, distillation] tokens.

    DeiT's output is `(W_c x_c + b_c + W_d x_d + b_d) / 2` (Touvron et al., 2021, Section 5);
    with the pair concatenated (`TokenPooling("distilled")`) it is one linear layer of kernel
    `[W_c; W_d] / 2` and bias `(b_c + b_d) / 2`. Written back, both heads get that bias: the
    logits are the same, the split of the bias between the heads is not recoverable.
    """
    return [
        Rule(("head/kernel",), kernel_keys,
             lambda c, d: (np.concatenate([c.T, d.T], axis=0) / 2,),
             lambda k: (2 * k[: k.shape[0] // 2].T, 2 * k[k.shape[0] // 2:].T)),
        Rule(("head/bias",), bias_keys, lambda c, d: ((c + d) / 2,), lambda b: (b, b)),
    ]


def apply_rules(rules, tensors, *, name, optional=()):
    """Canonical arrays of a file's tensors; ValueError for a missing key.

    Args:
        rules: list of `Rule`.
        tensors: dict source key -> np.ndarray.
        name: str. The checkpoint, for messages.
        optional: source keys that may be absent (the parts a model may lack: a head, q/k/v
            biases); a rule missing only optional keys is skipped.

    Returns:
        (arrays, sources, used): canonical key -> array, canonical key -> its source keys (for
        messages), and the set of source keys consumed.
    """
    arrays, sources, used = {}, {}, set()
    for rule in rules:
        missing = [k for k in rule.source_keys if k not in tensors]
        if missing and all(k in optional for k in missing):
            continue
        if missing:
            raise ValueError(
                f"{name}: key {missing[0]!r} is missing from the checkpoint (its config "
                f"calls for it)"
            )
        found = [np.asarray(tensors[k]) for k in rule.source_keys]
        try:
            values = rule.to_canonical(*found)
        except ValueError as exc:
            shapes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in zip(rule.source_keys, found))
            raise ValueError(
                f"{name}: {shapes} does not fit the checkpoint's config ({exc})"
            ) from None
        for key, value in zip(rule.canonical_keys, values):
            arrays[key] = value
            sources[key] = ", ".join(rule.source_keys)
        used.update(rule.source_keys)
    return arrays, sources, used


def invert_rules(rules, arrays):
    """The source tensors of canonical `arrays`; rules whose arrays are absent are skipped."""
    tensors = {}
    for rule in rules:
        if all(k in arrays for k in rule.canonical_keys):
            values = rule.from_canonical(*(arrays[k] for k in rule.canonical_keys))
            tensors.update(zip(rule.source_keys, (np.ascontiguousarray(v) for v in values)))
    return tensors


def unexpected_keys(tensors, used, *, name, ignore=()):
    """Keys of the file no rule consumed, beyond prefixes in `ignore`; raises when there are some.

    Returns:
        list of str: the ignored keys (outside the model, e.g. a pre-training decoder).
    """
    ignored = sorted(k for k in tensors if k not in used and ignore and k.startswith(tuple(ignore)))
    rest = sorted(k for k in tensors if k not in used and k not in ignored)
    if rest:
        key = rest[0]
        raise ValueError(
            f"{name}: unexpected key {key!r} of shape {tuple(np.shape(tensors[key]))} "
            f"({len(rest)} unexpected in all): the model its config describes has no place "
            f"for it"
        )
    return ignored


def spec_of(*, patch_size, hidden_dim, depth, num_heads, mlp_dim, layer_norm_epsilon,
            approximate_gelu, distillation_token=False, **family_options):
    """A `VariantSpec` named after the size of `keras_vit.variants.SIZES` it matches, if any.

    `family_options` are the other `VariantSpec` fields (`activation`, `layer_scale`,
    `num_registers`, `pre_norm`, `patch_bias`).
    """
    dims = dict(hidden_dim=hidden_dim, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
    size = next((name for name, d in variants.SIZES.items() if d == dims), "custom")
    for key, value in dict(patch_size=patch_size, **dims).items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"config field for {key} is {value!r}, expected a positive integer")
    if hidden_dim % num_heads:
        raise ValueError(
            f"config: width {hidden_dim} is not divisible by {num_heads} attention heads"
        )
    return variants.VariantSpec(
        size, patch_size, **dims, layer_norm_epsilon=float(layer_norm_epsilon),
        approximate_gelu=bool(approximate_gelu), distillation_token=bool(distillation_token),
        **family_options,
    )


def image_size_pair(value, field):
    """(height, width) of a config's int or [height, width] image size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return tuple(value)
    raise ValueError(f"config field {field} is {value!r}, expected an int or [height, width]")
