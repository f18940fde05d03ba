"""The preset table: every entry's architecture, its size against the file's, names, lookups."""

import collections
import dataclasses
import math
import re

import keras
import pytest

import keras_vit
from keras_vit import presets
from keras_vit.variants import SIZES, VariantSpec, parse_variant

# Parameters of every built-in preset, pinned. Three independent checks stand behind them:
# test_architecture_builds (count_params() of the Keras model), test_listed_size (the size the
# publisher lists for the file, 4 bytes per float32 parameter) and test_timm_parameter_counts.
PINNED_PARAMS = {
    "vit_b16_i21k": 103_186_515,
    "vit_b16_i21k_i1k_384": 86_859_496,
    "vit_b16_i21k_i1k_224": 86_567_656,
    "vit_b32_i21k": 104_843_091,
    "vit_b32_i21k_i1k_384": 88_297_192,
    "vit_l16_i21k": 326_740_307,
    "vit_l16_i21k_i1k_384": 304_715_752,
    "vit_l16_i21k_i1k_224": 304_326_632,
    "vit_l32_i21k": 328_949_075,
    "vit_l32_i21k_i1k_384": 306_632_680,
    "vit_h14_i21k": 660_385_363,
    "vit_r50_b16_i21k": 115_277_971,
    "vit_r50_b16_i21k_i1k_384": 98_950_952,
    "augreg_ti16_i21k": 9_740_115,
    "augreg_ti16_i21k_i1k_224": 5_717_416,
    "augreg_ti16_i21k_i1k_384": 5_790_376,
    "augreg_s16_i21k": 30_075_219,
    "augreg_s16_i21k_i1k_224": 22_050_664,
    "augreg_s16_i21k_i1k_384": 22_196_584,
    "augreg_s32_i21k": 30_903_507,
    "augreg_s32_i21k_i1k_224": 22_878_952,
    "augreg_s32_i21k_i1k_384": 22_915_432,
    "augreg_b16_i21k": 102_595_923,
    "augreg_b16_i21k_i1k_224": 86_567_656,
    "augreg_b16_i21k_i1k_384": 86_859_496,
    "augreg_b32_i21k": 104_252_499,
    "augreg_b32_i21k_i1k_224": 88_224_232,
    "augreg_b32_i21k_i1k_384": 88_297_192,
    "augreg_l16_i21k": 325_690_707,
    "augreg_l16_i21k_i1k_224": 304_326_632,
    "augreg_l16_i21k_i1k_384": 304_715_752,
    "augreg_r26_s32_i21k": 44_456_467,
    "augreg_r26_s32_i21k_i1k_224": 36_431_912,
    "augreg_r26_s32_i21k_i1k_384": 36_468_392,
    "augreg_r50_l32_i21k": 350_358_931,
    "augreg_r50_l32_i21k_i1k_224": 328_994_856,
    "augreg_r50_l32_i21k_i1k_384": 329_092_136,
    # The Hub towers (issue 33): ours as built from their config, which transformers' and
    # timm's counts match up to the parts keras_vit does not hold (DINOv2's mask token, D) or
    # adds (a zero bias of CLIP's projection, its width).
    "dinov2_s14": 22_056_192,
    "dinov2_b14": 86_579_712,
    "dinov2_l14": 304_367_616,
    "dinov2_g14": 1_136_479_232,
    "dinov2_reg_s14": 22_057_728,
    "dinov2_reg_b14": 86_582_784,
    "dinov2_reg_l14": 304_371_712,
    "dinov2_reg_g14": 1_136_485_376,
    "clip_b32": 87_849_728,
    "clip_b16": 86_193_152,
    "clip_l14": 303_966_976,
    "clip_l14_336": 304_294_656,
    "siglip_b16_224": 92_884_224,
    "siglip_so400m14_384": 428_225_600,
}

# What the issue asks the table to cover.
REQUIRED = (
    [f"vit_{m}_i21k" for m in ("b16", "b32", "l16", "l32", "h14", "r50_b16")]
    + [f"vit_{m}_i21k_i1k_384" for m in ("b16", "b32", "l16", "l32", "r50_b16")]
    + [
        f"augreg_{m}_i21k{suffix}"
        for m in ("ti16", "s16", "s32", "b16", "b32", "l16", "r26_s32", "r50_l32")
        for suffix in ("", "_i1k_224", "_i1k_384")
    ]
)


def _architecture(preset):
    return (preset.variant, preset.image_size, preset.num_classes, preset.representation_size,
            preset.pooling)


# Each distinct architecture is built once; entries sharing it (e.g. the paper's and AugReg's
# B/16 fine-tunes) are checked together. Above 200M parameters a build takes seconds on a
# 2-core CPU: those are marked slow (they still run in CI).
_BY_ARCHITECTURE = collections.defaultdict(list)
for _preset in presets.BUILTIN.values():
    _BY_ARCHITECTURE[_architecture(_preset)].append(_preset.name)
_BUILDS = [
    pytest.param(arch, names, id=names[0],
                 marks=[pytest.mark.slow] if presets.get(names[0]).params > 200e6 else [])
    for arch, names in _BY_ARCHITECTURE.items()
]


def test_every_builtin_preset_has_a_pinned_parameter_count():
    assert set(PINNED_PARAMS) == set(presets.BUILTIN)
    assert {name: presets.get(name).params for name in PINNED_PARAMS} == PINNED_PARAMS


@pytest.mark.parametrize("architecture, names", _BUILDS)
def test_architecture_builds(architecture, names):
    # A parameter count is the Keras model's, not the backend's: the big builds (minutes on
    # JAX and PyTorch) run once, under TensorFlow; the other backends build the small ones.
    if keras.backend.backend() != "tensorflow" and presets.get(names[0]).params > 40e6:
        pytest.skip("counted once, under the TensorFlow backend (the count is backend-free)")
    variant, image_size, num_classes, representation_size, pooling = architecture
    # Counting needs the variables' shapes, not their values: created in a stateless scope that
    # does not initialize them, H/14 builds in a fraction of a second instead of drawing 660M
    # random numbers (seconds on every backend).
    with keras.StatelessScope(initialize_variables=False):
        model = keras_vit.ViT(variant, image_size=image_size, num_classes=num_classes,
                              representation_size=representation_size, pooling=pooling)
    try:
        assert model.input_shape == (None, image_size, image_size, 3)
        # A backbone (0 classes) returns its pooled features.
        assert model.output_shape == (None, num_classes or parse_variant(variant).hidden_dim)
        count = model.count_params()
    finally:
        # Forgets the uninitialized variables (no later scope may initialize them). No garbage
        # collection: nothing big was allocated, and a collection costs seconds late in a suite.
        del model
        keras.backend.clear_session(free_memory=False)
    for name in names:
        assert presets.get(name).params == count, name


_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


@pytest.mark.parametrize(
    "name", [n for n, p in presets.BUILTIN.items() if p.listed_size is not None])
def test_listed_size(name):
    """The file's listed size is its float32 parameters plus a little zip overhead.

    A listed "393.69 MiB" stands for any size rounding to it; the arrays alone take 4 bytes per
    parameter and the `.npz` adds its headers (about 0.1 MiB for these files). A missing
    pre-logits layer (2.25 MiB for B), a wrong head (64 MiB for the 21k head of B) or a wrong
    resolution's position embeddings (1.1 MiB for B/16 at 384 against 224) fall outside.
    """
    preset = presets.get(name)
    value, unit = preset.listed_size.split()
    decimals = len(value.partition(".")[2])
    half_step = 0.5 * 10**-decimals * _UNITS[unit]
    listed = float(value) * _UNITS[unit]
    data = 4 * preset.params
    max_overhead = 2**20
    assert listed - half_step - max_overhead <= data <= listed + half_step, (
        f"{name}: {data / _UNITS[unit]:.3f} {unit} of parameters, listed {preset.listed_size}")


def test_listed_size_tells_pre_logits_apart():
    # The paper's 21k files keep a pre-logits layer: the listed size says so.
    with_pre_logits = presets.get("vit_b16_i21k")
    without = dataclasses.replace(with_pre_logits, representation_size=None)
    assert 4 * with_pre_logits.params / 2**20 == pytest.approx(393.63, abs=0.01)  # 393.69 listed
    assert 4 * without.params / 2**20 == pytest.approx(391.37, abs=0.01)


def test_timm_parameter_counts():
    # param_count (millions) of timm's ports of the same files, in its
    # results/results-imagenet.csv (huggingface/pytorch-image-models).
    timm = {
        "augreg_ti16_i21k_i1k_224": 5.72,
        "augreg_s16_i21k_i1k_224": 22.05,
        "augreg_s32_i21k_i1k_384": 22.92,
        "augreg_b32_i21k_i1k_224": 88.22,
        "augreg_b16_i21k_i1k_384": 86.86,
        "augreg_l16_i21k_i1k_384": 304.72,
        "augreg_r26_s32_i21k_i1k_224": 36.43,
        "augreg_r26_s32_i21k_i1k_384": 36.47,
        "augreg_r50_l32_i21k_i1k_224": 328.99,
        "augreg_r50_l32_i21k_i1k_384": 329.09,
        "vit_r50_b16_i21k_i1k_384": 98.95,
    }
    assert {name: round(presets.get(name).params / 1e6, 2) for name in timm} == timm


@pytest.mark.parametrize(
    "variant, kwargs",
    [
        ("mu/4", dict(image_size=16, num_classes=10)),
        ("mu/4", dict(image_size=(16, 24), num_classes=3, pooling="gap")),
        ("mu/8", dict(image_size=32, num_classes=7, representation_size=5)),
        (dataclasses.replace(parse_variant("mu/1"), resnet_units=(1, 2), resnet_width=32),
         dict(image_size=32, num_classes=4, representation_size=6)),
        (VariantSpec("mu", 1, 32, 1, 64, 2, resnet_units=(1, 1, 1), resnet_width=32),
         dict(image_size=(32, 64), num_classes=2, pooling="gap")),
    ],
    ids=["plain", "gap_rectangular", "pre_logits", "hybrid_2_stages", "hybrid_gap"],
)
def test_parameter_count_matches_keras(variant, kwargs):
    expected = keras_vit.ViT(variant, **kwargs).count_params()
    assert presets.parameter_count(variant, **kwargs) == expected


def _built_count(variant, **kwargs):
    # The model's layers and variable shapes, without initializing the variables (no memory
    # for H/14's 632M parameters, a second per build): the shapes are what count_params reads.
    # clear_session drops the uninitialized variables Keras keeps for a later initialization.
    try:
        with keras.StatelessScope(initialize_variables=False):
            model = keras_vit.ViT(variant, **kwargs)
        return sum(math.prod(w.shape) for w in model.weights)
    finally:
        keras.backend.clear_session()


_SHAPES_ONLY = "the shapes are the Keras model's, not the backend's: checked once, on TensorFlow"


@pytest.mark.parametrize("size", sorted(SIZES))
def test_parameter_count_formula_matches_every_size(size):
    if keras.backend.backend() != "tensorflow":
        pytest.skip(_SHAPES_ONLY)
    assert presets.parameter_count(f"{size}/16") == _built_count(f"{size}/16")


def test_parameter_count_formula_matches_every_option(size="mu"):
    # Each option of the formula beside the sizes: pooling, a rectangular grid, pre-logits, a
    # hybrid's ResNet, DeiT's distillation token, no head.
    if keras.backend.backend() != "tensorflow":
        pytest.skip(_SHAPES_ONLY)
    deit = dataclasses.replace(parse_variant(f"{size}/16"), distillation_token=True)
    cases = [
        (f"{size}/14", dict(image_size=(224, 196), num_classes=5, pooling="gap",
                            representation_size=24)),
        (f"R50+{size}/32", dict(image_size=64, num_classes=3)),
        (deit, dict(image_size=32, num_classes=7, pooling="distilled")),
        (deit, dict(image_size=32, num_classes=0)),
    ]
    # The later families' options (issue 33), alone and as their towers combine them.
    base = parse_variant(f"{size}/14")
    for options, kwargs in [
        (dict(layer_scale=1e-5), {}),
        (dict(num_registers=4), {}),
        (dict(num_registers=2), dict(pooling="gap")),
        (dict(pre_norm=True), {}),
        (dict(patch_bias=False), {}),
        (dict(activation="swiglu"), {}),
        (dict(activation="quick_gelu"), {}),
        ({}, dict(pooling="map", num_classes=0)),
        (dict(layer_scale=1e-5, num_registers=4, activation="swiglu"), dict(num_classes=0)),
        (dict(pre_norm=True, patch_bias=False, activation="quick_gelu"), dict(num_classes=12)),
    ]:
        cases.append((dataclasses.replace(base, **options), dict(image_size=56, **kwargs)))
    for variant, kwargs in cases:
        assert presets.parameter_count(variant, **kwargs) == _built_count(variant, **kwargs), (
            variant, kwargs)


def test_parameter_count_by_hand():
    # B/16 at 224, 1000 classes: patch embedding 16*16*3*768 + 768, class token 768, position
    # embeddings 197*768, 12 blocks of 4*768^2 + 2*768*3072 + 9*768 + 3072, final LayerNorm
    # 2*768, head 768*1000 + 1000.
    by_hand = (16 * 16 * 3 * 768 + 768 + 768 + 197 * 768
               + 12 * (4 * 768**2 + 2 * 768 * 3072 + 9 * 768 + 3072) + 2 * 768 + 769_000)
    assert by_hand == 86_567_656 == presets.parameter_count("B/16")


def test_covers_the_issue_list():
    assert [name for name in REQUIRED if name not in presets.BUILTIN] == []


def test_names_follow_the_scheme():
    for name, preset in presets.BUILTIN.items():
        if preset.hub_reference is not None:
            # `{family}[_reg]_{size}{patch}[_{resolution}]`, the size as its spec names it.
            spec = parse_variant(preset.variant)
            model = f"{spec.size.lower()}{spec.patch_size}"
            family = name.split("_")[0] + ("_reg" if spec.num_registers else "")
            assert re.fullmatch(rf"{family}_{model}(_\d+)?", name), name
            continue
        family = "vit" if name.startswith("vit_") else "augreg"
        model = preset.variant.lower().replace("/", "").replace("+", "_")
        tail = "" if preset.labels == "imagenet21k" else f"_i1k_{preset.image_size}"
        assert name == f"{family}_{model}_i21k{tail}"
        assert re.fullmatch(r"[a-z0-9_]+", name)


def test_urls_are_public_unique_npz_files():
    urls = [p.url for p in presets.BUILTIN.values() if p.hub_reference is None]
    assert len(set(urls)) == len(urls)
    for url in urls:
        assert url.startswith("https://storage.googleapis.com/vit_models/"), url
        assert url.endswith(".npz"), url
    assert presets.get("vit_r50_b16_i21k_i1k_384").url == (
        "https://storage.googleapis.com/vit_models/imagenet21k+imagenet2012/R50+ViT-B_16.npz")
    assert presets.get("augreg_ti16_i21k_i1k_384").url == (
        "https://storage.googleapis.com/vit_models/augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-"
        "wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz")


def test_fine_tunes_share_their_upstream_file_name():
    for name, preset in presets.BUILTIN.items():
        if name.startswith("augreg_") and preset.labels == "imagenet2012":
            upstream = presets.get(name.rsplit("_i1k_", 1)[0]).url.removesuffix(".npz")
            assert preset.url.startswith(upstream + "--imagenet2012-steps_20k-lr_"), name
            assert preset.url.endswith(f"-res_{preset.image_size}.npz"), name


def test_heads_labels_and_preprocessing():
    for name, preset in presets.BUILTIN.items():
        if preset.hub_reference is not None:
            continue  # the Hub towers: test_hub_towers_*
        assert (preset.labels, preset.num_classes) in (("imagenet21k", 21843),
                                                      ("imagenet2012", 1000))
        # Only the paper's 21k checkpoints keep a pre-logits layer, as wide as the model.
        if name.startswith("vit_") and preset.labels == "imagenet21k":
            assert preset.representation_size == parse_variant(preset.variant).hidden_dim
        else:
            assert preset.representation_size is None
        assert preset.pooling == "token"
        assert preset.crop_fraction == 1.0 and preset.resize == preset.image_size
        assert preset.size_bytes is None and preset.sha256 is None  # the publisher gives neither
        assert preset.license == "Apache-2.0"
        assert (preset.top1 is None) == (preset.top1_source is None)


def test_reported_top1():
    top1 = {name: p.top1 for name, p in presets.BUILTIN.items() if p.top1 is not None}
    assert top1 == {
        "vit_b16_i21k_i1k_224": 81.2,
        "vit_l16_i21k_i1k_224": 82.7,
        "augreg_ti16_i21k_i1k_384": 78.22,
        "augreg_s16_i21k_i1k_384": 83.73,
        "augreg_s32_i21k_i1k_384": 79.58,
        "augreg_b16_i21k_i1k_384": 85.49,
        "augreg_b32_i21k_i1k_384": 83.59,
        "augreg_l16_i21k_i1k_384": 85.59,
        "augreg_r26_s32_i21k_i1k_384": 83.85,
        "augreg_r50_l32_i21k_i1k_384": 85.99,
        # DINOv2's README (ImageNet linear), with and without registers.
        "dinov2_s14": 81.1, "dinov2_b14": 84.5, "dinov2_l14": 86.3, "dinov2_g14": 86.5,
        "dinov2_reg_s14": 80.9, "dinov2_reg_b14": 84.6, "dinov2_reg_l14": 86.7,
        "dinov2_reg_g14": 87.1,
        # The CLIP paper (zero-shot ImageNet).
        "clip_b32": 63.2, "clip_b16": 68.6, "clip_l14": 75.3, "clip_l14_336": 76.2,
    }


def test_get_unknown_name_lists_the_closest():
    with pytest.raises(ValueError) as info:
        presets.get("augreg_b16_i1k_384")
    assert str(info.value) == (
        "Unknown preset 'augreg_b16_i1k_384'; the closest names are "
        "'augreg_b16_i21k_i1k_384', 'augreg_b16_i21k', 'augreg_s16_i21k_i1k_384'. "
        "keras_vit.presets.names() lists all 51.")
    with pytest.raises(ValueError) as info:
        presets.get("resnet50")
    assert str(info.value) == (
        "Unknown preset 'resnet50'; no name is close. keras_vit.presets.names() lists all 51.")


@pytest.fixture
def private_table(monkeypatch):
    """`presets.PRESETS` as a copy, so that registrations end with the test."""
    monkeypatch.setattr(presets, "PRESETS", dict(presets.PRESETS))
    return presets.PRESETS


def test_register(private_table):
    mine = dataclasses.replace(presets.get("augreg_ti16_i21k_i1k_224"), name="my_ti16",
                               num_classes=10, labels="flowers", url="gs://bucket/my_ti16.npz")
    assert presets.register(mine) is mine
    assert presets.get("my_ti16") is mine
    assert presets.names()[-1] == "my_ti16"
    assert mine.params == presets.parameter_count("Ti/16", num_classes=10)
    with pytest.raises(ValueError, match=r"^Preset 'my_ti16' is already registered; pass "
                                         r"overwrite=True to replace it$"):
        presets.register(mine)
    again = dataclasses.replace(mine, top1=90.0, top1_source="my notes")
    assert presets.register(again, overwrite=True) is presets.get("my_ti16") is again


def test_register_refuses_to_replace_a_builtin(private_table):
    builtin = presets.get("vit_b16_i21k")
    changed = dataclasses.replace(builtin, url="https://example.com/ViT-B_16.npz")
    with pytest.raises(ValueError, match=r"^Preset 'vit_b16_i21k' is already built-in; pass "
                                         r"overwrite=True to replace it$"):
        presets.register(changed)
    assert presets.get("vit_b16_i21k") is builtin
    presets.register(changed, overwrite=True)
    assert presets.get("vit_b16_i21k") is changed
    assert presets.BUILTIN["vit_b16_i21k"] is builtin


def test_register_refuses_other_objects(private_table):
    with pytest.raises(ValueError, match="expects a keras_vit.presets.Preset, received dict"):
        presets.register({"name": "x"})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(variant="Q/16"), "Unknown variant 'Q/16'"),
        (dict(num_classes=10), "labels 'imagenet2012' has 1000 classes, received num_classes=10"),
        (dict(url="ftp://host/file.npz"), r"url must be an http\(s\)://, gs:// or hf:// URL"),
        (dict(top1_protocol="few-shot"), "Unknown top1_protocol 'few-shot': expected one of "
                                         "fine-tuned, linear probe, zero-shot"),
        (dict(pooling="max"), "Unknown pooling 'max'"),
        (dict(crop_fraction=0.0), r"crop_fraction must be a number in \(0, 1\]"),
        (dict(sha256="ABC"), "sha256 must be 64 lower-case hex digits"),
        (dict(image_size=0), "image_size must be a positive integer, received 0"),
        (dict(name=""), "Preset name must be a non-empty string"),
    ],
)
def test_invalid_presets_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(presets.get("augreg_b16_i21k_i1k_224"), **change)


def test_resize_follows_crop_fraction():
    preset = dataclasses.replace(presets.get("augreg_b16_i21k_i1k_224"), crop_fraction=0.875)
    assert preset.resize == 256


def test_table():
    lines = presets.table().splitlines()
    assert lines[0].split() == ["name", "params", "resolution", "classes", "top-1", "protocol"]
    assert len(lines) == 1 + len(presets.names())
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["vit_h14_i21k"] == ["660.4M", "224", "21843", "-", "-"]
    assert rows["augreg_r50_l32_i21k_i1k_384"] == ["329.1M", "384", "1000", "85.99", "fine-tuned"]
    assert rows["vit_l16_i21k_i1k_224"] == ["304.3M", "224", "1000", "82.7", "fine-tuned"]
    assert rows["dinov2_reg_g14"] == ["1136.5M", "518", "0", "87.1", "linear", "probe"]
    assert rows["siglip_so400m14_384"] == ["428.2M", "378", "0", "-", "-"]
    assert presets.table(["augreg_s32_i21k"]) == (
        "name             params  resolution  classes  top-1  protocol\n"
        "augreg_s32_i21k   30.9M         224    21843      -  -")


def test_exported():
    assert keras_vit.presets is presets
    assert "presets" in keras_vit.__all__


# The towers the issue names (DINOv2 S/B/L/g with and without registers, OpenAI CLIP B/32, B/16,
# L/14, SigLIP B/16 224 and So400m), by the Hub repository each names.
HUB_TOWERS = {
    "dinov2_s14": "facebook/dinov2-small", "dinov2_b14": "facebook/dinov2-base",
    "dinov2_l14": "facebook/dinov2-large", "dinov2_g14": "facebook/dinov2-giant",
    "dinov2_reg_s14": "facebook/dinov2-with-registers-small",
    "dinov2_reg_b14": "facebook/dinov2-with-registers-base",
    "dinov2_reg_l14": "facebook/dinov2-with-registers-large",
    "dinov2_reg_g14": "facebook/dinov2-with-registers-giant",
    "clip_b32": "openai/clip-vit-base-patch32", "clip_b16": "openai/clip-vit-base-patch16",
    "clip_l14": "openai/clip-vit-large-patch14",
    "clip_l14_336": "openai/clip-vit-large-patch14-336",
    "siglip_b16_224": "google/siglip-base-patch16-224",
    "siglip_so400m14_384": "google/siglip-so400m-patch14-384",
}


def test_hub_towers_name_their_repositories_license_and_figure():
    found = {n: p.hub_reference for n, p in presets.BUILTIN.items() if p.hub_reference}
    assert found == {name: f"hf://{repo}" for name, repo in HUB_TOWERS.items()}
    for name in HUB_TOWERS:
        preset = presets.get(name)
        assert preset.license == ("MIT" if name.startswith("clip") else "Apache-2.0"), name
        family = name.split("_")[0]
        protocol = {"dinov2": "linear probe", "clip": "zero-shot", "siglip": "fine-tuned"}[family]
        assert preset.top1_protocol == protocol, name
        assert (preset.top1 is None) == (family == "siglip"), name
        assert preset.top1 is None or preset.top1_source


def test_hub_tower_weights_are_read_from_their_repository(monkeypatch):
    # `ViT(weights="dinov2_b14")` is `ViT(weights="hf://facebook/dinov2-base")`: the repository's
    # config states the architecture. Stopped at the read, nothing is downloaded.
    from keras_vit import checkpoints

    class Read(Exception):
        pass

    def read_checkpoint(weights, **kwargs):
        raise Read(weights)

    monkeypatch.setattr(checkpoints, "read_checkpoint", read_checkpoint)
    with pytest.raises(Read, match="^hf://facebook/dinov2-base$"):
        keras_vit.ViT(weights="dinov2_b14")


def test_hub_tower_architectures():
    dinov2_g, clip, siglip = (parse_variant(presets.get(n).variant) for n in (
        "dinov2_reg_g14", "clip_l14_336", "siglip_so400m14_384"))
    assert (dinov2_g.hidden_dim, dinov2_g.depth, dinov2_g.num_heads, dinov2_g.mlp_dim,
            dinov2_g.activation, dinov2_g.num_registers) == (1536, 40, 24, 4096, "swiglu", 4)
    assert (clip.pre_norm, clip.patch_bias, clip.activation, clip.layer_norm_epsilon) == (
        True, False, "quick_gelu", 1e-5)
    assert (siglip.hidden_dim, siglip.depth, siglip.mlp_dim, siglip.num_heads) == (
        1152, 27, 4304, 16)
    assert presets.get("siglip_so400m14_384").pooling == "map"
