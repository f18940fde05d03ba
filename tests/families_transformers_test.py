"""transformers' DINOv2, CLIP and SigLIP image towers -> keras_vit, against transformers' forward.

Each reference is a tiny model transformers built from a config (width 32, 2 blocks, 2 heads,
16x16 images of 4x4 patches), every parameter drawn at random and saved by `save_pretrained`
(`tests/torch_reference.py`). First what `read_checkpoint` makes of it (the `Architecture`, the
canonical keys of `/work/contract33.md` and their shapes); then `ViT(weights=folder)` against
the output the issue names: DINOv2's pooled (normed [class]) token, CLIP's image embedding
(`get_image_features`, `image_embeds`) or pooled token, SigLIP's MAP-pooled output.
"""

import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest

import torch_reference

import keras_vit
from keras_vit import checkpoints, converters, variants
from keras_vit.converters import transformers as source
from keras_vit.converters import transformers_families as families

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

WIDTH, DEPTH, HEADS = 32, 2, 2
TOWER = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
             image_size=16, patch_size=4)
TEXT = dict(hidden_size=WIDTH, num_hidden_layers=1, num_attention_heads=HEADS,
            intermediate_size=64, vocab_size=64, bos_token_id=0, eos_token_id=1,
            pad_token_id=1)


def _pooled(output):
    # transformers 5's get_image_features returns a model output whose pooler_output is the
    # projected embedding; earlier versions return the tensor.
    return output if torch.is_tensor(output) else output.pooler_output


# name -> (model built from a config, its output the issue names, expected Architecture fields)
CASES = {
    "dinov2": (
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(
            **TOWER, mlp_ratio=2, layerscale_value=0.5)),
        lambda m, x: m(pixel_values=x).pooler_output,
        dict(pooling="token", num_classes=0, mlp_dim=64, activation="gelu",
             approximate_gelu=False, layer_scale=0.5, num_registers=0, pre_norm=False,
             patch_bias=True, layer_norm_epsilon=1e-6)),
    "dinov2_swiglu": (
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(
            **TOWER, mlp_ratio=4, use_swiglu_ffn=True)),
        lambda m, x: m(pixel_values=x).pooler_output,
        # int(32 * 4) = 128; two thirds, int: 85; up to a multiple of 8: 88.
        dict(pooling="token", num_classes=0, mlp_dim=88, activation="swiglu", layer_scale=1.0,
             num_registers=0, pre_norm=False, patch_bias=True, layer_norm_epsilon=1e-6)),
    "dinov2_without_qkv_bias": (
        lambda: transformers.Dinov2Model(transformers.Dinov2Config(
            **TOWER, mlp_ratio=2, qkv_bias=False)),
        lambda m, x: m(pixel_values=x).pooler_output,
        dict(pooling="token", num_classes=0, mlp_dim=64, activation="gelu", layer_scale=1.0)),
    "dinov2_with_registers": (
        lambda: transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
            **TOWER, mlp_ratio=2, num_register_tokens=3)),
        lambda m, x: m(pixel_values=x).pooler_output,
        dict(pooling="token", num_classes=0, mlp_dim=64, activation="gelu", layer_scale=1.0,
             num_registers=3, pre_norm=False, patch_bias=True)),
    "clip": (
        lambda: transformers.CLIPModel(transformers.CLIPConfig(
            vision_config=dict(**TOWER, intermediate_size=64), text_config=TEXT,
            projection_dim=24)),
        lambda m, x: _pooled(m.get_image_features(pixel_values=x)),
        dict(pooling="token", num_classes=24, mlp_dim=64, activation="quick_gelu",
             layer_scale=None, num_registers=0, pre_norm=True, patch_bias=False,
             layer_norm_epsilon=1e-5)),
    "clip_vision_model": (
        lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
            **TOWER, intermediate_size=64)),
        lambda m, x: m(pixel_values=x).pooler_output,
        dict(pooling="token", num_classes=0, activation="quick_gelu", pre_norm=True,
             patch_bias=False)),
    "clip_vision_model_with_projection": (
        lambda: transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
            **TOWER, intermediate_size=64, projection_dim=20, hidden_act="gelu")),
        lambda m, x: m(pixel_values=x).image_embeds,
        dict(pooling="token", num_classes=20, activation="gelu", approximate_gelu=False,
             pre_norm=True, patch_bias=False)),
    "siglip": (
        lambda: transformers.SiglipModel(transformers.SiglipConfig(
            vision_config=dict(**TOWER, intermediate_size=64), text_config=TEXT)),
        lambda m, x: _pooled(m.get_image_features(pixel_values=x)),
        dict(pooling="map", num_classes=0, mlp_dim=64, activation="gelu",
             approximate_gelu=True, layer_scale=None, pre_norm=False, patch_bias=True,
             layer_norm_epsilon=1e-6)),
    "siglip_vision_model": (
        lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig(
            **TOWER, intermediate_size=64)),
        lambda m, x: m(pixel_values=x).pooler_output,
        dict(pooling="map", num_classes=0, activation="gelu", approximate_gelu=True)),
    "siglip_classifier": (
        lambda: transformers.SiglipForImageClassification(transformers.SiglipConfig(
            vision_config=dict(**TOWER, intermediate_size=64), text_config=TEXT, num_labels=3,
            id2label={0: "ant", 1: "bee", 2: "cat"})),
        lambda m, x: m(pixel_values=x).logits,
        dict(pooling="gap", num_classes=3, activation="gelu", approximate_gelu=True,
             class_names=("ant", "bee", "cat"))),
}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """name -> (transformers model, folder it saved): built once, on first use."""
    built = {}

    def get(name):
        if name not in built:
            model = torch_reference.randomize(CASES[name][0](), seed=len(built) + 20)
            folder = tmp_path_factory.mktemp(name)
            built[name] = model, torch_reference.save_hf(model, folder)
        return built[name]

    return get


def _expected_keys(*, class_token, registers, pre_norm, patch_bias, layer_scale, map_head,
                   head):
    """The canonical keys of the contract, written out by hand for a DEPTH-block model."""
    keys = {"embedding/kernel", "Transformer/posembed_input/pos_embedding",
            "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    keys |= {"embedding/bias"} if patch_bias else set()
    keys |= {"cls"} if class_token else set()
    keys |= {"reg"} if registers else set()
    keys |= {"pre_norm/scale", "pre_norm/bias"} if pre_norm else set()
    for i in range(DEPTH):
        block = f"Transformer/encoderblock_{i}"
        keys |= {f"{block}/{n}/{p}" for n in ("LayerNorm_0", "LayerNorm_2")
                 for p in ("scale", "bias")}
        keys |= {f"{block}/MultiHeadDotProductAttention_1/{n}/{p}"
                 for n in ("query", "key", "value", "out") for p in ("kernel", "bias")}
        keys |= {f"{block}/MlpBlock_3/{n}/{p}" for n in ("Dense_0", "Dense_1")
                 for p in ("kernel", "bias")}
        if layer_scale:
            keys |= {f"{block}/LayerScale_attention/scale", f"{block}/LayerScale_mlp/scale"}
    if map_head:
        keys |= {"MAPHead_0/probe", "MAPHead_0/LayerNorm_0/scale", "MAPHead_0/LayerNorm_0/bias"}
        keys |= {f"MAPHead_0/MultiHeadDotProductAttention_0/{n}/{p}"
                 for n in ("query", "key", "value", "out") for p in ("kernel", "bias")}
        keys |= {f"MAPHead_0/MlpBlock_0/{n}/{p}" for n in ("Dense_0", "Dense_1")
                 for p in ("kernel", "bias")}
    if head:
        keys |= {"head/kernel", "head/bias"}
    return keys


# ------------------------------------------------------------------ reading


@pytest.mark.parametrize("name", sorted(CASES))
def test_read_states_the_architecture(references, name):
    _, folder = references(name)
    checkpoint = checkpoints.read_checkpoint(folder)
    arch = checkpoint.architecture
    expected = CASES[name][2]
    spec_fields = {k: getattr(arch.spec, k) for k in expected if hasattr(arch.spec, k)}
    arch_fields = {k: getattr(arch, k) for k in expected if not hasattr(arch.spec, k)}
    assert {**spec_fields, **arch_fields} == expected
    assert (arch.spec.hidden_dim, arch.spec.depth, arch.spec.num_heads, arch.spec.patch_size,
            arch.image_size) == (WIDTH, DEPTH, HEADS, 4, (16, 16))
    # The configs alone give the same architecture (what `ViT(weights=...)` builds first).
    assert checkpoints.read_checkpoint(folder, config_only=True).architecture == arch


@pytest.mark.parametrize("name, keys, ignored", [
    ("dinov2", dict(class_token=True, registers=False, pre_norm=False, patch_bias=True,
                    layer_scale=True, map_head=False, head=False), ["embeddings.mask_token"]),
    ("dinov2_with_registers", dict(class_token=True, registers=True, pre_norm=False,
                                   patch_bias=True, layer_scale=True, map_head=False,
                                   head=False), ["embeddings.mask_token"]),
    ("clip", dict(class_token=True, registers=False, pre_norm=True, patch_bias=False,
                  layer_scale=False, map_head=False, head=True), None),
    ("clip_vision_model", dict(class_token=True, registers=False, pre_norm=True,
                               patch_bias=False, layer_scale=False, map_head=False,
                               head=False), []),
    ("siglip", dict(class_token=False, registers=False, pre_norm=False, patch_bias=True,
                    layer_scale=False, map_head=True, head=False), None),
    ("siglip_classifier", dict(class_token=False, registers=False, pre_norm=False,
                               patch_bias=True, layer_scale=False, map_head=False, head=True),
     None),
])
def test_read_gives_the_canonical_keys(references, name, keys, ignored):
    _, folder = references(name)
    checkpoint = checkpoints.read_checkpoint(folder)
    assert set(checkpoint.arrays) == _expected_keys(**keys)
    if ignored is not None:
        assert checkpoint.ignored == ignored
    elif name == "siglip_classifier":  # the unused MAP head
        assert checkpoint.ignored and all(
            k.startswith("vision_model.head.") for k in checkpoint.ignored)
    else:  # the text tower, logit scale (and SigLIP's bias)
        assert all(k.startswith(("text_model.", "text_projection.", "logit_"))
                   for k in checkpoint.ignored)
        assert any(k.startswith("text_model.") for k in checkpoint.ignored)


def test_read_shapes_follow_the_contract(references):
    arrays = {name: checkpoints.read_checkpoint(references(name)[1]).arrays
              for name in ("dinov2_swiglu", "dinov2_with_registers", "clip", "siglip")}
    mlp = "Transformer/encoderblock_1/MlpBlock_3"
    # SwiGLU: the packed gate-and-value kernel (D, 2 * 88), then (88, D).
    assert arrays["dinov2_swiglu"][f"{mlp}/Dense_0/kernel"].shape == (WIDTH, 176)
    assert arrays["dinov2_swiglu"][f"{mlp}/Dense_1/kernel"].shape == (88, WIDTH)
    registers = arrays["dinov2_with_registers"]
    assert registers["reg"].shape == (1, 3, WIDTH)
    # [class] and 4x4 patches; the registers have no position embedding.
    assert registers["Transformer/posembed_input/pos_embedding"].shape == (1, 17, WIDTH)
    clip = arrays["clip"]
    assert clip["cls"].shape == (1, 1, WIDTH)
    assert clip["Transformer/posembed_input/pos_embedding"].shape == (1, 17, WIDTH)
    assert clip["head/kernel"].shape == (WIDTH, 24)
    np.testing.assert_array_equal(clip["head/bias"], np.zeros(24))
    siglip = arrays["siglip"]
    assert siglip["Transformer/posembed_input/pos_embedding"].shape == (1, 16, WIDTH)
    assert siglip["MAPHead_0/probe"].shape == (1, 1, WIDTH)
    attention = "MAPHead_0/MultiHeadDotProductAttention_0"
    assert siglip[f"{attention}/key/kernel"].shape == (WIDTH, HEADS, WIDTH // HEADS)
    assert siglip[f"{attention}/out/kernel"].shape == (HEADS, WIDTH // HEADS, WIDTH)


def test_swiglu_gate_half_comes_first(references):
    """`mlp.weights_in` packs gate then value rows (transformers splits it into gate_proj,
    up_proj in that order); the canonical Dense_0 kernel keeps the gate in its first half."""
    reference, folder = references("dinov2_swiglu")
    arrays = checkpoints.read_checkpoint(folder).arrays
    mlp = reference.encoder.layer[0].mlp
    kernel = arrays["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"]
    np.testing.assert_array_equal(kernel[:, :88], mlp.gate_proj.weight.detach().numpy().T)
    np.testing.assert_array_equal(kernel[:, 88:], mlp.up_proj.weight.detach().numpy().T)


def test_defaults_are_transformers_config_defaults():
    """Fields a config leaves out take transformers' defaults, as transformers builds them."""
    for family, config_class in [
            ("dinov2", transformers.Dinov2Config),
            ("dinov2_with_registers", transformers.Dinov2WithRegistersConfig),
            ("clip_vision_model", transformers.CLIPVisionConfig),
            ("siglip_vision_model", transformers.SiglipVisionConfig)]:
        config = config_class()
        assert {k: getattr(config, k) for k in families.DEFAULTS[family]} == (
            families.DEFAULTS[family]), family


@pytest.mark.parametrize("name, key", [
    ("clip", "vision_model.embeddings.position_ids"),
    ("siglip_vision_model", "embeddings.position_ids"),
])
def test_position_id_buffers_of_older_files_are_ignored(references, tmp_path, name, key):
    from safetensors.numpy import load_file, save_file

    folder = shutil.copytree(references(name)[1], tmp_path / "old")
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    tensors[key] = np.arange(17)[None]  # transformers < 4.31 saved this buffer
    save_file(tensors, path, metadata={"format": "pt"})
    checkpoint = checkpoints.read_checkpoint(str(folder))
    assert key in checkpoint.ignored
    nhwc, _ = torch_reference.images(size=16)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras_vit.ViT(weights=str(folder))(nhwc)),
        keras.ops.convert_to_numpy(keras_vit.ViT(weights=references(name)[1])(nhwc)))


def test_siglip_config_with_only_its_model_type_reads_as_the_base_model(tmp_path):
    """A SigLIP base config written by `to_diff_dict` may keep only the tower's model_type."""
    config = {"model_type": "siglip", "architectures": ["SiglipModel"],
              "vision_config": {"model_type": "siglip_vision_model"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch = checkpoints.read_checkpoint(str(tmp_path), config_only=True).architecture
    assert (arch.spec.name, arch.image_size, arch.pooling) == ("B/16", (224, 224), "map")
    assert (arch.spec.approximate_gelu, arch.spec.layer_norm_epsilon) == (True, 1e-6)


# ------------------------------------------------------------------ against transformers


@pytest.mark.parametrize("name", sorted(CASES))
def test_vit_equals_transformers(references, name):
    reference, folder = references(name)
    model = keras_vit.ViT(weights=folder)
    nhwc, nchw = torch_reference.images(size=16)
    with torch.no_grad():
        expected = CASES[name][1](reference, nchw)
    torch_reference.assert_close(model(nhwc), expected)


def test_clip_without_top_gives_the_pooled_token_before_projection(references):
    reference, folder = references("clip")
    model = keras_vit.ViT(weights=folder, include_top=False)
    nhwc, nchw = torch_reference.images(size=16)
    with torch.no_grad():
        pooled = reference.vision_model(pixel_values=nchw).pooler_output
    torch_reference.assert_close(model(nhwc), pooled)
    assert model.output_shape == (None, WIDTH)


def test_a_size_of_partial_patches_is_the_whole_patches_it_covers(tmp_path):
    """SigLIP So400m/14 at 384 px reads 27 x 27 patches (378 px), as transformers' convolution
    does: keras_vit's model takes the 378 px those cover, with the same output."""
    config = transformers.SiglipVisionConfig(**{**TOWER, "image_size": 18}, intermediate_size=64)
    reference = torch_reference.randomize(transformers.SiglipVisionModel(config), seed=9)
    folder = torch_reference.save_hf(reference, tmp_path / "siglip18")
    assert checkpoints.read_checkpoint(folder).architecture.image_size == (16, 16)
    model = keras_vit.ViT(weights=folder)
    nhwc, nchw = torch_reference.images(size=18)
    with torch.no_grad():
        expected = reference(pixel_values=nchw).pooler_output
    torch_reference.assert_close(model(nhwc[:, :16, :16]), expected)


def _dinov2_at_half_size(tmp_path, config_class, model_class, seed):
    config = config_class(**{**TOWER, "image_size": 32}, mlp_ratio=2)
    reference = torch_reference.randomize(model_class(config), seed=seed)
    folder = torch_reference.save_hf(reference, tmp_path / f"dinov2_{seed}")
    model = keras_vit.ViT(weights=folder, image_size=16)
    nhwc, nchw = torch_reference.images(size=16, seed=seed)
    with torch.no_grad():
        expected = reference(pixel_values=nchw).pooler_output.numpy()
    ours = keras.ops.convert_to_numpy(model(nhwc))
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


def test_dinov2_position_embeddings_resized_at_load_equal_transformers_at_run_time(tmp_path):
    """A DINOv2 stored for an 8x8 grid (32 px), run at 16 px (4x4), by both libraries.

    transformers resizes the position embeddings at every call (`interpolate_pos_encoding`):
    `Dinov2Model` with `F.interpolate(mode="bicubic", align_corners=False)`, PyTorch's bicubic
    with a = -0.75, taps clamped to the edge, no antialias; `Dinov2WithRegistersModel` the same
    with `antialias=True`, PyTorch's antialiased bicubic (a = -0.5, renormalized, the kernel
    widened by the scale). keras_vit resizes them once, at load, with the method the reader
    records for each (`VariantSpec.position_interpolation`: `"pytorch_bicubic"` and keras_vit's
    `"bicubic"`), so both agree within float32 rounding. Before the reader recorded
    `"pytorch_bicubic"`, `Dinov2Model` differed by 2.3e-2 to 4.5e-2 of the output's scale over 4
    seeds (these position embeddings are white noise, the worst case).
    """
    for seed in range(2):
        plain = _dinov2_at_half_size(tmp_path, transformers.Dinov2Config,
                                     transformers.Dinov2Model, seed=seed)
        assert plain < 1e-5
    registers = _dinov2_at_half_size(tmp_path, transformers.Dinov2WithRegistersConfig,
                                     transformers.Dinov2WithRegistersModel, seed=2)
    assert registers < 1e-5


def test_dinov2_dynamic_size_equals_transformers_at_every_size(tmp_path):
    """`dynamic_image_size=True` resizes at each call as transformers' `Dinov2Model` does."""
    config = transformers.Dinov2Config(**{**TOWER, "image_size": 32}, mlp_ratio=2)
    reference = torch_reference.randomize(transformers.Dinov2Model(config), seed=5)
    folder = torch_reference.save_hf(reference, tmp_path / "dinov2_dynamic")
    model = keras_vit.ViT(weights=folder, dynamic_image_size=True)
    assert model.get_layer("position_embedding").interpolation == "pytorch_bicubic"
    for size in ((16, 16), (24, 40), (48, 48)):
        nhwc, nchw = torch_reference.images(size=size, seed=6)
        with torch.no_grad():
            expected = reference(pixel_values=nchw).pooler_output
        torch_reference.assert_close(model(nhwc), expected)


# ------------------------------------------------------------------ refusals


def _copy(references, name, tmp_path, config):
    """A copy of reference `name` whose config.json is `config(its config)`."""
    folder = shutil.copytree(references(name)[1], tmp_path / "copy")
    with open(os.path.join(folder, "config.json")) as f:
        data = json.load(f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config(data), f)
    return str(folder)


def test_siglip_without_its_head_is_refused(references, tmp_path):
    folder = _copy(references, "siglip_vision_model", tmp_path,
                   lambda c: {**c, "vision_use_head": False})
    with pytest.raises(ValueError, match=r"config\.json vision_use_head=False: this SigLIP "
                                         r"tower has no pooled output"):
        keras_vit.ViT(weights=folder)


def test_unknown_hidden_act_is_named(references, tmp_path):
    folder = _copy(references, "clip", tmp_path, lambda c: {
        **c, "vision_config": {**c["vision_config"], "hidden_act": "relu"}})
    with pytest.raises(ValueError, match=r"vision_config hidden_act 'relu' is not supported: "
                                         r"expected one of \['gelu', "):
        checkpoints.read_checkpoint(folder)


def test_dinov2_classifier_is_refused_naming_the_backbone(tmp_path):
    config = transformers.Dinov2Config(**TOWER, mlp_ratio=2, num_labels=3)
    folder = torch_reference.save_hf(
        transformers.Dinov2ForImageClassification(config), tmp_path / "classifier")
    with pytest.raises(ValueError, match=r"Dinov2ForImageClassification classifies from the "
                                         r"\[class\] token concatenated with the mean of the "
                                         r"patch tokens.*load its backbone.*Dinov2Model"):
        keras_vit.ViT(weights=folder)


def test_clip_classifier_is_refused(tmp_path):
    config = transformers.CLIPConfig(vision_config=dict(**TOWER, intermediate_size=64),
                                     text_config=TEXT, num_labels=3)
    folder = torch_reference.save_hf(
        transformers.CLIPForImageClassification(config), tmp_path / "classifier")
    with pytest.raises(ValueError, match=r"CLIPForImageClassification classifies the mean of "
                                         r"the patch tokens before CLIP's final LayerNorm"):
        keras_vit.ViT(weights=folder)


def test_projection_width_contradicting_the_weights_is_named(references, tmp_path):
    folder = _copy(references, "clip", tmp_path, lambda c: {**c, "projection_dim": 16})
    with pytest.raises(ValueError, match=r"projection_dim 16 of the config contradicts "
                                         r"visual_projection\.weight of 24 rows"):
        keras_vit.ViT(weights=folder)


@pytest.mark.parametrize("model_type, missing", [
    ("beit", "relative position bias"),
    ("data2vec-vision", "relative position bias"),
    ("dinov3_vit", r"rotary position embeddings \(RoPE\)"),
])
def test_families_needing_missing_pieces_are_refused_naming_them(references, tmp_path,
                                                                 model_type, missing):
    folder = _copy(references, "dinov2", tmp_path, lambda c: {**c, "model_type": model_type})
    with pytest.raises(ValueError, match=rf"model_type '{model_type}' is not supported: it "
                                         rf"needs {missing}.*which keras_vit does not have; "
                                         rf"supported transformers model types: vit, deit, "
                                         rf"vit_mae, dinov2, dinov2_with_registers, clip, "
                                         rf"clip_vision_model, siglip, siglip_vision_model$"):
        keras_vit.ViT(weights=folder)


def test_unknown_model_type_lists_every_supported_one(references, tmp_path):
    folder = _copy(references, "dinov2", tmp_path, lambda c: {**c, "model_type": "swin"})
    with pytest.raises(ValueError, match=r"model_type 'swin' is not supported; supported "
                                         r"transformers model types: vit, deit, vit_mae, "
                                         r"dinov2, dinov2_with_registers, clip, "
                                         r"clip_vision_model, siglip, siglip_vision_model$"):
        checkpoints.read_checkpoint(folder)


@pytest.mark.parametrize("name, option", [
    ("clip_vision_model", "activation='quick_gelu'"),
    ("siglip_vision_model", "pooling='map'"),
])
def test_writing_clip_and_siglip_is_refused(references, tmp_path, name, option):
    model = keras_vit.ViT(weights=references(name)[1])
    with pytest.raises(ValueError, match=rf"transformers' ViT layout, the one keras_vit "
                                         rf"writes, has .*; this model has {option} and "
                                         rf"cannot be written in it"):
        checkpoints.save_pretrained(model, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


def _spec(**options):
    return dataclasses.replace(variants.parse_variant("mu/4"), **options)


@pytest.mark.parametrize("spec, pooling, message", [
    (_spec(pre_norm=True), "token",
     "no LayerNorm before the blocks; this model has pre_norm=True"),
    (_spec(patch_bias=False), "token",
     "a patch embedding bias; this model has patch_bias=False"),
    (_spec(activation="quick_gelu"), "token",
     "a GELU MLP; this model has activation='quick_gelu'"),
    (_spec(), "map", "no attention-probe \\(MAP\\) pooling; this model has pooling='map'"),
    (_spec(layer_scale=1e-5, activation="quick_gelu"), "token",
     "Dinov2Model, the layout keras_vit writes a DINOv2 in, has a GELU or SwiGLU MLP; this "
     "model has activation='quick_gelu'"),
    (_spec(num_registers=2), "gap", "Dinov2WithRegistersModel, the layout keras_vit writes a "
     "DINOv2 in, has its output on the \\[class\\] token; this model has pooling='gap'"),
    (_spec(layer_scale=1e-5, mlp_dim=100, activation="swiglu"), "token",
     "transformers' Dinov2Model builds its MLP width from a whole mlp_ratio; none gives "
     "this model's 100 \\(swiglu, width 32\\)"),
])
def test_write_names_each_option_it_cannot_hold(spec, pooling, message):
    architecture = converters.Architecture(spec=spec, image_size=(16, 16), pooling=pooling,
                                           mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ValueError, match=message):
        source.write({}, architecture)


# ------------------------------------------------------------------ writing DINOv2 back


@pytest.mark.parametrize("name", ["dinov2", "dinov2_swiglu", "dinov2_with_registers"])
def test_dinov2_round_trips_through_transformers(references, tmp_path, name):
    reference, folder = references(name)
    model = keras_vit.ViT(weights=folder)
    written = checkpoints.save_pretrained(model, tmp_path / "out", layout="transformers")
    reloaded = transformers.AutoModel.from_pretrained(written).eval()
    assert type(reloaded) is type(reference)
    nhwc, nchw = torch_reference.images(size=16)
    with torch.no_grad():
        torch_reference.assert_close(model(nhwc), reloaded(pixel_values=nchw).pooler_output)
    # The file holds what transformers wrote, the mask token (zeros) aside.
    from safetensors.numpy import load_file

    original = load_file(os.path.join(folder, "model.safetensors"))
    ours = load_file(os.path.join(written, "model.safetensors"))
    assert sorted(ours) == sorted(original)
    for key, value in original.items():
        if key != "embeddings.mask_token":
            np.testing.assert_allclose(ours[key], value, rtol=0, atol=1e-6, err_msg=key)
    for field in ("mlp_ratio", "use_swiglu_ffn", "layerscale_value", "layer_norm_eps"):
        assert getattr(reloaded.config, field) == getattr(reference.config, field), field
    processor = transformers.AutoImageProcessor.from_pretrained(written)
    assert type(processor).__name__.startswith("BitImageProcessor")  # DINOv2's
    assert (processor.crop_size["height"], processor.size["shortest_edge"]) == (16, 16)


def test_a_fine_tuned_dinov2_with_a_head_is_not_written(references, tmp_path):
    model = keras_vit.ViT(weights=references("dinov2")[1], num_classes=5)
    with pytest.raises(ValueError, match=r"Dinov2Model, the layout keras_vit writes a DINOv2 in, "
                                         r"has no head .*; this model has num_classes=5"):
        checkpoints.save_pretrained(model, tmp_path / "out")
