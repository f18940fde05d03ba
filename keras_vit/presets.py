"""The released ViT checkpoints by name: one table of facts, and the functions that read it.

Each entry (`Preset`) says which architecture a checkpoint is (variant, image size, pooling,
pre-logits width, classes), which labels its outputs are, how its publisher evaluated it, where
the file is and what the publisher reports about it. `get(name)` returns an entry, `names()`
lists them, `table()` prints them, `register(preset)` adds a private checkpoint.

>>> get("augreg_b16_i21k_i1k_384").top1
85.49
>>> print(table(["vit_b16_i21k", "augreg_ti16_i21k_i1k_384", "dinov2_b14", "clip_b16"]))
name                      params  resolution  classes  top-1  protocol
vit_b16_i21k              103.2M         224    21843      -  -
augreg_ti16_i21k_i1k_384    5.8M         384     1000  78.22  fine-tuned
dinov2_b14                 86.6M         518        0   84.5  linear probe
clip_b16                   86.2M         224      512   68.6  zero-shot

Names are `{family}_{model}_{pre-training}[_{fine-tuning}_{resolution}]`, lower case:

- family: `vit` for the checkpoints of the ViT paper (Dosovitskiy et al., 2021), `augreg` for
  the recommended checkpoints of "How to train your ViT?" (Steiner et al., 2021,
  https://arxiv.org/abs/2106.10270);
- model: size and patch, `b16` for B/16; a hybrid puts its ResNet first, `r50_b16` for R50+B/16;
- pre-training: `i21k` (ImageNet-21k, 21,843 classes); these checkpoints are at 224 pixels and
  keep their 21k head;
- fine-tuning: `i1k_224` / `i1k_384`, fine-tuned on ImageNet-2012 (1,000 classes) at that
  resolution.

So `vit_b16_i21k` is the paper's ImageNet-21k B/16, `vit_b16_i21k_i1k_384` its ImageNet fine-tune
at 384, `augreg_r26_s32_i21k_i1k_224` the AugReg R26+S/32 fine-tuned at 224.

Where the facts come from (the reference code, github.com/google-research/vision_transformer):

- URLs. The paper's files are `imagenet21k/ViT-B_16.npz` and `imagenet21k+imagenet2012/
  ViT-B_16.npz` (hybrids `R50+ViT-B_16.npz`) under https://storage.googleapis.com/vit_models/,
  the names its README documents and its `vit_jax.ipynb` lists. The bucket has no ImageNet
  fine-tune of H/14, so `vit_h14_i21k` has no `_i1k_384` sibling. The AugReg names are the
  README's table of recommended checkpoints (`augreg/<upstream>.npz` and the 384 fine-tune
  `augreg/<upstream>--imagenet2012-steps_20k-lr_<lr>-res_384.npz`).
- AugReg fine-tunes at 224: the README names only the 384 ones. The AugReg index (`index.csv`,
  summarized in `vit_jax_augreg.ipynb`) holds, for every upstream checkpoint, ImageNet
  fine-tunes at 224 with 20k steps and learning rates 0.01 and 0.03; the entries here take the
  learning rate of the README's 384 choice. The index may rank the other rate higher at 224, and
  timm chose other checkpoints for some of these models.
- Reported top-1: the README's "Imagenet accuracy" of the AugReg 384 fine-tunes (the index's
  `adapt_final_test`, measured on the ImageNet validation set) and the README's expected
  accuracy of `ViT-B_16-224` and `ViT-L_16-224` (81.2% and 82.7%). The README reports none for
  the other files, and the paper's tables come from its own fine-tuning runs, so those entries
  have `top1=None`.
- Evaluation preprocessing: the reference input pipeline (`vit_jax/input_pipeline.py`) resizes
  the whole image to the model's size (bilinear, `tf.image.resize`) with no crop, then scales to
  [-1, 1]: `crop_fraction=1.0`. (timm evaluates its 224 ports with a 0.9 center crop and bicubic
  resizing; that is timm's choice, not the publisher's.)
- Pre-logits: the paper's ImageNet-21k files keep the `pre_logits` Dense + tanh of width D; their
  fine-tunes and all AugReg files have none. The sizes below confirm it.
- Sizes and hashes: the publisher gives no sha256 and no exact byte count for any of these files,
  so `sha256` and `size_bytes` are None everywhere (a downloader then checks the server's
  Content-Length and that the `.npz` opens). What it does give is each file's size rounded, in the
  output of `gsutil ls -lh` saved in `vit_jax.ipynb` (the paper's files) and in the README's table
  (the AugReg ImageNet-21k files); `listed_size` keeps it as printed. The files hold float32
  arrays, so a listed size is 4 bytes per parameter plus a little zip overhead, which
  `tests/presets_test.py` checks against `Preset.params`.
- License: Apache-2.0, the license of the repository that publishes the files; its README names
  no other terms for them.
"""

import dataclasses
import difflib

from keras_vit import variants
from keras_vit.layers.pooling import MODEL_POOLINGS
from keras_vit.validation import check_choice, check_int, check_number, check_positive_int

BUCKET = "https://storage.googleapis.com/vit_models"
REPOSITORY = "https://github.com/google-research/vision_transformer"
README = f"{REPOSITORY}#available-vit-models"
AUGREG_COLAB = f"{REPOSITORY}/blob/main/vit_jax_augreg.ipynb"
LICENSE = "Apache-2.0"

LABEL_SETS = {"imagenet21k": 21843, "imagenet2012": 1000, "features": 0}
TOP1_PROTOCOLS = ("fine-tuned", "linear probe", "zero-shot")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One released checkpoint: its architecture, labels, preprocessing, file and reported accuracy.

    Args:
        name: str. The preset's name (see the module docstring for the scheme).
        variant: str or `keras_vit.variants.VariantSpec`. A `keras_vit.variants` name, e.g.
            `"B/16"` or `"R50+B/16"`; the DINOv2, CLIP and SigLIP towers are `VariantSpec`s with
            their family's options.
        image_size: int. Side of the square images the checkpoint was trained at.
        num_classes: int. Outputs of its head: classes, a CLIP tower's embedding width (its
            projection is its head), or 0 for a backbone that returns its pooled features.
        labels: str. What the outputs mean: `"imagenet21k"` (21,843 classes), `"imagenet2012"`
            (1,000), `"embedding"` (a CLIP image embedding), `"features"` (a backbone's pooled
            representation), or a label set of the user's own.
        url: str. Where the file is: an http://, https:// or gs:// URL, or a Hugging Face Hub
            checkpoint `hf://ORG/NAME`, whose `config.json` then states the architecture
            (`keras_vit.checkpoints.read_checkpoint`); the entry's own fields describe it.
        representation_size: int or None. Width of the pre-logits Dense + tanh, None when the
            checkpoint has none. Defaults to None.
        pooling: str. `"token"`, `"gap"`, `"distilled"` or `"map"`. Defaults to `"token"`.
        crop_fraction: float. Evaluation preprocessing: the image is resized to
            `resize = round(image_size / crop_fraction)` and the central `image_size` square
            kept. Defaults to 1.0 (resize to `image_size`, no crop).
        interpolation: str. Resize method of the evaluation preprocessing. Defaults to
            `"bilinear"`.
        size_bytes: int or None. Exact file size, where the publisher gives it. Defaults to None.
        sha256: str or None. Hex digest, where the publisher gives one. Defaults to None.
        listed_size: str or None. The size as the publisher lists it, rounded, with its unit
            (`"393.69 MiB"`, `"1.22 GiB"`). Defaults to None.
        top1: float or None. The publisher's ImageNet top-1 accuracy, in percent. Defaults to
            None.
        top1_protocol: str. How `top1` was measured: `"fine-tuned"` (the checkpoint's own
            head), `"linear probe"` (a linear classifier on frozen features) or `"zero-shot"`
            (CLIP / SigLIP with class-name prompts). Defaults to `"fine-tuned"`.
        top1_source: str or None. Where `top1` is reported. Defaults to None.
        license: str. SPDX identifier of the weights' license. Defaults to `"Apache-2.0"`.
        source: str. URL of the page that documents the file. Defaults to `""`.
        description: str. One line for people. Defaults to `""`.

    Example:

    >>> preset = get("vit_b16_i21k_i1k_384")
    >>> preset.variant, preset.image_size, preset.num_classes, preset.params
    ('B/16', 384, 1000, 86859496)
    """

    name: str
    variant: str
    image_size: int
    num_classes: int
    labels: str
    url: str
    representation_size: int | None = None
    pooling: str = "token"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    size_bytes: int | None = None
    sha256: str | None = None
    listed_size: str | None = None
    top1: float | None = None
    top1_protocol: str = "fine-tuned"
    top1_source: str | None = None
    license: str = LICENSE
    source: str = ""
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Preset name must be a non-empty string, received {self.name!r}")
        variants.parse_variant(self.variant)
        check_positive_int("image_size", self.image_size)
        check_int("num_classes", self.num_classes, minimum=0)
        check_positive_int("representation_size", self.representation_size, allow_none=True)
        check_positive_int("size_bytes", self.size_bytes, allow_none=True)
        if self.pooling not in MODEL_POOLINGS:
            raise ValueError(
                f"Unknown pooling {self.pooling!r}: expected one of {list(MODEL_POOLINGS)}"
            )
        check_choice("top1_protocol", self.top1_protocol, TOP1_PROTOCOLS)
        check_number("crop_fraction", self.crop_fraction, 0.0, 1.0, low_open=True,
                     high_open=False)
        if LABEL_SETS.get(self.labels, self.num_classes) != self.num_classes:
            raise ValueError(
                f"Preset {self.name!r}: labels {self.labels!r} has "
                f"{LABEL_SETS[self.labels]} classes, received num_classes={self.num_classes}"
            )
        if not isinstance(self.url, str) or self.url.split("://", 1)[0] not in (
                "http", "https", "gs", "hf"):
            raise ValueError(
                f"Preset {self.name!r}: url must be an http(s)://, gs:// or hf:// URL, "
                f"received {self.url!r}"
            )
        if self.sha256 is not None and (
            not isinstance(self.sha256, str)
            or len(self.sha256) != 64
            or any(c not in "0123456789abcdef" for c in self.sha256)
        ):
            raise ValueError(
                f"Preset {self.name!r}: sha256 must be 64 lower-case hex digits, received "
                f"{self.sha256!r}"
            )

    @property
    def hub_reference(self):
        """str or None: the `hf://` checkpoint this preset names, None for a file URL."""
        return self.url if self.url.startswith("hf://") else None

    @property
    def params(self):
        """int: parameters of the architecture (`parameter_count`), as `count_params()` gives."""
        return parameter_count(
            self.variant,
            image_size=self.image_size,
            num_classes=self.num_classes,
            representation_size=self.representation_size,
            pooling=self.pooling,
        )

    @property
    def resize(self):
        """int: side the evaluation preprocessing resizes to before its central crop."""
        return round(self.image_size / self.crop_fraction)


def parameter_count(variant, *, image_size=224, num_classes=1000, representation_size=None,
                    pooling="token", num_channels=3):
    """Parameters of `keras_vit.ViT(variant, ...)`, from the variant's sizes alone (no Keras).

    A formula, so that listing the presets builds no model; `tests/presets_test.py` checks it
    against the shapes of built models for every size of `keras_vit.variants.SIZES`, plain,
    hybrid and distilled, with every option of the later families, and against `count_params()`
    for every preset.

    Per block: LayerNorms 2 * 2D, attention 4 * (D^2 + D) (query, key, value, output with
    biases), MLP 2 * D * mlp_dim + mlp_dim + D (SwiGLU: its packed input projection doubles the
    first layer, 3 * D * mlp_dim + 2 * mlp_dim + D), LayerScale 2D. Around the blocks: the patch
    embedding (P^2 * channels * D, its bias D, or a hybrid's ResNet and its 1x1 projection),
    the class token D, the position embeddings (tokens * D), the register tokens, the
    pre-encoder and final LayerNorms 2D each, the MAP head (probe D, attention 4 * (D^2 + D),
    LayerNorm 2D, MLP), the optional pre-logits and the head.

    Args:
        variant: str or `keras_vit.variants.VariantSpec`.
        image_size: int or (height, width). Defaults to 224.
        num_classes: int. Defaults to 1000.
        representation_size: int or None. Defaults to None.
        pooling: str. `"token"`, `"gap"`, `"distilled"` or `"map"`. Defaults to `"token"`.
        num_channels: int. Defaults to 3.

    Returns:
        int.

    Example:

    >>> parameter_count("B/16")
    86567656
    >>> parameter_count("R50+B/16", image_size=384)
    98950952
    """
    spec = variants.parse_variant(variant)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    d, mlp = spec.hidden_dim, spec.mlp_dim
    if spec.is_hybrid:
        count, channels = _resnet_parameters(spec.resnet_units, spec.resnet_width, num_channels)
    else:
        count, channels = 0, num_channels
    count += spec.patch_size**2 * channels * d + d * spec.patch_bias
    # The [class] token (unless "gap" or "map") and DeiT's distillation token, and a position
    # embedding for each of them and each patch; the register tokens have none.
    prefix = int(pooling not in ("gap", "map")) + int(spec.distillation_token)
    tokens = prefix + (height // spec.stride) * (width // spec.stride)
    count += prefix * d + tokens * d + spec.num_registers * d + 2 * d * spec.pre_norm
    mlp_in = 2 * mlp if spec.activation == "swiglu" else mlp  # SwiGLU's packed gate and value
    block = 4 * d * d + 4 * d + 4 * d + d * mlp_in + mlp_in + mlp * d + d
    count += spec.depth * (block + 2 * d * (spec.layer_scale is not None)) + 2 * d
    if pooling == "map":
        count += d + 4 * d * d + 4 * d + 2 * d + 2 * d * mlp + mlp + d
    features = 2 * d if pooling == "distilled" else d  # "distilled": [class, distillation]
    if representation_size is not None:
        count += d * representation_size + representation_size
        features = representation_size
    return count + features * num_classes + num_classes


def _resnet_parameters(units, width, num_channels):
    """(parameters, output channels) of `keras_vit.layers.resnet.resnet_stem`: bias-free convs."""
    count = 7 * 7 * num_channels * width + 2 * width  # conv_root, gn_root
    channels = width
    for stage, num_units in enumerate(units):
        filters = width * 2**stage
        for unit in range(num_units):
            # conv1 1x1, conv2 3x3, conv3 1x1 to 4 * filters, and their GroupNorms.
            count += channels * filters + 9 * filters**2 + 4 * filters**2 + 12 * filters
            if unit == 0:  # the projection shortcut: conv_proj 1x1 and gn_proj
                count += channels * 4 * filters + 8 * filters
            channels = 4 * filters
    return count, channels


# -- The table -------------------------------------------------------------------------------

_PAPER = "ViT paper (Dosovitskiy et al., 2021)"
_AUGREG = "AugReg (Steiner et al., 2021)"
_README_AUGREG_TOP1 = f"{REPOSITORY} README: table of recommended AugReg checkpoints"
_README_224_TOP1 = f"{REPOSITORY} README: change log, 2020-10-29 (expected top-1)"


def _paper(model, variant, representation_size, listed_i21k, fine_tunes):
    """The paper's ImageNet-21k checkpoint of `model` ("ViT-B_16") and its ImageNet fine-tunes.

    `fine_tunes` is a list of (resolution, file suffix, listed size, top-1 or None).
    """
    key = _key(variant)
    entries = [
        Preset(
            name=f"vit_{key}_i21k",
            variant=variant,
            image_size=224,
            num_classes=21843,
            labels="imagenet21k",
            representation_size=representation_size,
            url=f"{BUCKET}/imagenet21k/{model}.npz",
            listed_size=listed_i21k,
            source=README,
            description=f"{_PAPER} {variant}, pre-trained on ImageNet-21k at 224",
        )
    ]
    for resolution, suffix, listed, top1 in fine_tunes:
        entries.append(
            Preset(
                name=f"vit_{key}_i21k_i1k_{resolution}",
                variant=variant,
                image_size=resolution,
                num_classes=1000,
                labels="imagenet2012",
                url=f"{BUCKET}/imagenet21k+imagenet2012/{model}{suffix}.npz",
                listed_size=listed,
                top1=top1,
                top1_source=_README_224_TOP1 if top1 is not None else None,
                source=README,
                description=(
                    f"{_PAPER} {variant}, ImageNet-21k pre-training fine-tuned on ImageNet-2012 "
                    f"at {resolution}"
                ),
            )
        )
    return entries


def _augreg(variant, upstream, listed_i21k, lr, top1_384):
    """An AugReg recommended checkpoint (`upstream`, its file name) and its two ImageNet fine-tunes.

    `lr` is the fine-tuning learning rate of the README's 384 choice, used for 224 too.
    """
    key = _key(variant)
    entries = [
        Preset(
            name=f"augreg_{key}_i21k",
            variant=variant,
            image_size=224,
            num_classes=21843,
            labels="imagenet21k",
            url=f"{BUCKET}/augreg/{upstream}.npz",
            listed_size=listed_i21k,
            source=README,
            description=f"{_AUGREG} {variant}, pre-trained on ImageNet-21k at 224 ({upstream})",
        )
    ]
    for resolution, top1 in ((224, None), (384, top1_384)):
        entries.append(
            Preset(
                name=f"augreg_{key}_i21k_i1k_{resolution}",
                variant=variant,
                image_size=resolution,
                num_classes=1000,
                labels="imagenet2012",
                url=(
                    f"{BUCKET}/augreg/{upstream}--imagenet2012-steps_20k-lr_{lr}-res_"
                    f"{resolution}.npz"
                ),
                top1=top1,
                top1_source=_README_AUGREG_TOP1 if top1 is not None else None,
                source=README if resolution == 384 else AUGREG_COLAB,
                description=(
                    f"{_AUGREG} {variant}, ImageNet-21k pre-training fine-tuned on ImageNet-2012 "
                    f"at {resolution} (20k steps, learning rate {lr})"
                ),
            )
        )
    return entries


def _key(variant):
    """`"R50+B/16"` -> `"r50_b16"`: the model part of a preset name."""
    return variant.lower().replace("/", "").replace("+", "_")


_ENTRIES = [
    # The paper's files: ImageNet-21k checkpoints (with pre-logits) and the ImageNet fine-tunes
    # that the bucket holds. Listed sizes: `gsutil ls -lh` in vit_jax.ipynb.
    *_paper("ViT-B_16", "B/16", 768, "393.69 MiB",
            [(384, "", "331.4 MiB", None), (224, "-224", "330.29 MiB", 81.2)]),
    *_paper("ViT-B_32", "B/32", 768, "400.01 MiB", [(384, "", "336.89 MiB", None)]),
    *_paper("ViT-L_16", "L/16", 1024, "1.22 GiB",
            [(384, "", "1.14 GiB", None), (224, "-224", "1.13 GiB", 82.7)]),
    *_paper("ViT-L_32", "L/32", 1024, "1.23 GiB", [(384, "", "1.14 GiB", None)]),
    *_paper("ViT-H_14", "H/14", 1280, "2.46 GiB", []),
    *_paper("R50+ViT-B_16", "R50+B/16", 768, "439.85 MiB", [(384, "", "377.57 MiB", None)]),
    # AugReg's recommended checkpoints: README table (upstream file, its size, the 384
    # fine-tune's learning rate and ImageNet top-1).
    *_augreg("Ti/16", "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
             "37 MiB", "0.03", 78.22),
    *_augreg("S/16", "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
             "115 MiB", "0.03", 83.73),
    *_augreg("S/32", "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0",
             "118 MiB", "0.01", 79.58),
    *_augreg("B/16", "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
             "391 MiB", "0.03", 85.49),
    *_augreg("B/32", "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
             "398 MiB", "0.01", 83.59),
    *_augreg("L/16", "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0",
             "1243 MiB", "0.01", 85.59),
    *_augreg("R26+S/32", "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
             "170 MiB", "0.01", 83.85),
    *_augreg("R50+L/32", "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1",
             "1337 MiB", "0.01", 85.99),
]


# -- The later ViT families, on the Hugging Face Hub (issue 33) -----------------------------
#
# These entries name `hf://` checkpoints: `ViT(weights=name)` reads the repository's own
# `config.json` (`keras_vit.checkpoints.read_checkpoint`), which then states the architecture;
# the fields here describe it for `table()` and `parameter_count`. Architectures: the model
# cards and configs of the repositories named; DINOv2 stores its position embeddings for 518
# pixels (a 37 x 37 grid) and evaluates at 224 after resizing to 256 (bicubic); CLIP resizes
# the shorter side to the model's size and crops it (bicubic); SigLIP resizes to the model's
# size (bilinear). A CLIP tower's head is its projection into the joint embedding space.
_DINOV2 = "https://github.com/facebookresearch/dinov2"
_DINOV2_TOP1 = f"{_DINOV2} README: pretrained models, ImageNet linear"
_CLIP = "https://github.com/openai/CLIP"
_CLIP_TOP1 = ("CLIP paper (Radford et al., 2021, https://arxiv.org/abs/2103.00020): zero-shot "
              "ImageNet top-1 of the released models")
_SIGLIP = "https://github.com/google-research/big_vision"


def _tower(size, patch, **options):
    """The `VariantSpec` of a tower: a size of `variants.SIZES` (or explicit dimensions)."""
    dims = variants.SIZES[size] if size in variants.SIZES else options.pop("dims")
    return variants.VariantSpec(size, patch, **dims, **options)


_DINOV2_OPTIONS = dict(layer_scale=1e-5, approximate_gelu=False)
_DINOV2_G = dict(dims=dict(hidden_dim=1536, depth=40, mlp_dim=4096, num_heads=24),
                 activation="swiglu")
_CLIP_OPTIONS = dict(pre_norm=True, patch_bias=False, activation="quick_gelu",
                     layer_norm_epsilon=1e-5, approximate_gelu=False)
_SO400M = dict(dims=dict(hidden_dim=1152, depth=27, mlp_dim=4304, num_heads=16))


def _dinov2(size, hub_size, registers, top1):
    extra = _DINOV2_G if size == "g" else {}
    spec = _tower(size, 14, num_registers=4 if registers else 0, **_DINOV2_OPTIONS, **extra)
    repo = f"dinov2-with-registers-{hub_size}" if registers else f"dinov2-{hub_size}"
    return Preset(
        name=f"dinov2{'_reg' if registers else ''}_{size.lower()}14",
        variant=spec, image_size=518, num_classes=0, labels="features",
        url=f"hf://facebook/{repo}", crop_fraction=224 / 256, interpolation="bicubic",
        top1=top1, top1_protocol="linear probe", top1_source=_DINOV2_TOP1, source=_DINOV2,
        description=(f"DINOv2 (Oquab et al., 2023) ViT-{size}/14"
                     + (" with 4 registers (Darcet et al., 2023)" if registers else "")
                     + ", self-supervised on LVD-142M; returns the normed [class] token"),
    )


def _clip(size, patch, image_size, projection, repo, top1):
    return Preset(
        name=f"clip_{size.lower()}{patch}" + ("" if image_size == 224 else f"_{image_size}"),
        variant=_tower(size, patch, **_CLIP_OPTIONS), image_size=image_size,
        num_classes=projection, labels="embedding", url=f"hf://openai/{repo}",
        interpolation="bicubic", top1=top1, top1_protocol="zero-shot", top1_source=_CLIP_TOP1,
        license="MIT", source=_CLIP,
        description=(f"OpenAI CLIP (Radford et al., 2021) ViT-{size}/{patch} image tower at "
                     f"{image_size}; returns its {projection}-d image embedding"),
    )


def _siglip(size, patch, image_size, repo):
    spec = _tower(size, patch, **(_SO400M if size == "So400m" else {}))
    return Preset(
        name=f"siglip_{size.lower()}{patch}_{image_size}",
        # The model takes whole patches: a 384-pixel So400m/14 checkpoint's convolution reads
        # 27 x 27 patches, 378 pixels, and ignores the last 6 rows and columns.
        variant=spec, image_size=image_size // patch * patch, num_classes=0, labels="features",
        url=f"hf://google/{repo}", pooling="map", source=_SIGLIP,
        description=(f"SigLIP (Zhai et al., 2023) ViT-{size}/{patch} image tower at "
                     f"{image_size}, WebLI; returns its attention-pooled (MAP) output. The "
                     f"publisher reports its zero-shot accuracy in a figure, not as a number"),
    )


_ENTRIES += [
    *(_dinov2(size, hub, registers, top1)
      for registers, figures in ((False, (81.1, 84.5, 86.3, 86.5)),
                                 (True, (80.9, 84.6, 86.7, 87.1)))
      for (size, hub), top1 in zip((("S", "small"), ("B", "base"), ("L", "large"),
                                    ("g", "giant")), figures)),
    _clip("B", 32, 224, 512, "clip-vit-base-patch32", 63.2),
    _clip("B", 16, 224, 512, "clip-vit-base-patch16", 68.6),
    _clip("L", 14, 224, 768, "clip-vit-large-patch14", 75.3),
    _clip("L", 14, 336, 768, "clip-vit-large-patch14-336", 76.2),
    _siglip("B", 16, 224, "siglip-base-patch16-224"),
    _siglip("So400m", 14, 384, "siglip-so400m-patch14-384"),
]

#: The built-in presets, by name, in the order above.
BUILTIN = {preset.name: preset for preset in _ENTRIES}
if len(BUILTIN) != len(_ENTRIES):
    raise RuntimeError("keras_vit.presets: two built-in presets share a name")

#: Every preset by name: the built-in ones and those added with `register`.
PRESETS = dict(BUILTIN)


def names():
    """list of str: the names of all presets, built-in ones first, in table order."""
    return list(PRESETS)


def get(name):
    """Returns the preset called `name`.

    Raises:
        ValueError: if there is no such preset; the message names the closest ones.

    Example:

    >>> get("augreg_r26_s32_i21k").variant
    'R26+S/32'
    >>> get("vit_b16_i1k")
    Traceback (most recent call last):
    ...
    ValueError: Unknown preset 'vit_b16_i1k'; the closest names are 'vit_b16_i21k', ...
    """
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(str(name), PRESETS, n=3, cutoff=0.6)
    hint = (
        f"the closest names are {', '.join(repr(c) for c in close)}"
        if close
        else "no name is close"
    )
    raise ValueError(
        f"Unknown preset {name!r}; {hint}. keras_vit.presets.names() lists all {len(PRESETS)}."
    )


def register(preset, *, overwrite=False):
    """Adds `preset` to the table under `preset.name`, e.g. for a private checkpoint.

    Args:
        preset: `Preset`.
        overwrite: bool. Replace a preset of the same name. Defaults to False.

    Returns:
        The preset.

    Raises:
        ValueError: if `preset` is not a `Preset`, or its name is taken and `overwrite` is False.

    Example:

    >>> mine = dataclasses.replace(get("augreg_ti16_i21k_i1k_224"), name="my_ti16",
    ...                            url="https://example.com/my_ti16.npz")
    >>> register(mine) is get("my_ti16")
    True
    >>> _ = PRESETS.pop("my_ti16")
    """
    if not isinstance(preset, Preset):
        raise ValueError(
            f"register expects a keras_vit.presets.Preset, received {type(preset).__name__}"
        )
    if preset.name in PRESETS and not overwrite:
        kind = "built-in" if preset.name in BUILTIN else "registered"
        raise ValueError(
            f"Preset {preset.name!r} is already {kind}; pass overwrite=True to replace it"
        )
    PRESETS[preset.name] = preset
    return preset


_COLUMNS = (("name", "<"), ("params", ">"), ("resolution", ">"), ("classes", ">"),
            ("top-1", ">"), ("protocol", "<"))


def table(selection=None):
    """The presets as a text table: name, parameters, resolution, outputs, reported top-1 and how.

    Args:
        selection: iterable of preset names, or None for all. Defaults to None.

    Returns:
        str: one header line and one line per preset; `-` where no top-1 is reported. The
        `classes` column is the head's outputs (0: a backbone returning its features).
    """
    presets = [get(name) for name in (names() if selection is None else selection)]
    rows = [[p.name, f"{p.params / 1e6:.1f}M", str(p.image_size), str(p.num_classes),
             "-" if p.top1 is None else f"{p.top1:g}",
             "-" if p.top1 is None else p.top1_protocol] for p in presets]
    header = [title for title, _ in _COLUMNS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            f"{cell:{align}{width}}" if i else f"{cell:<{width}}"
            for i, (cell, (_, align), width) in enumerate(zip(row, _COLUMNS, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
