"""timm's DINOv2, CLIP and SigLIP image towers <-> keras_vit, against timm's own forward pass.

The references are tiny timm models of the registered names (width 32, 2 blocks, 2 heads, 28x28
images in 14x14 patches: 4 patches), every parameter random, saved by timm
(`tests/torch_reference.py`). The names' other arguments (LayerScale, registers, pre-norm,
epsilon, activation, SwiGLU, pooling) are the ones timm registers for them.
"""

import ast
import dataclasses
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest

import torch_reference
from hub_server import fake_hub, go_offline, never_the_real_hub  # noqa: F401

import keras_vit
from keras_vit import checkpoints, variants
from keras_vit.converters import timm_architectures

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
pytest.importorskip("safetensors")

TINY = dict(img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2)
BLOCK = "Transformer/encoderblock_{}"
POSEMB = "Transformer/posembed_input/pos_embedding"
MAP = "MAPHead_0/MultiHeadDotProductAttention_0"

# id -> (timm name, model_args beyond TINY, what the checkpoint reads as).
CASES = {
    "dinov2": ("vit_small_patch14_dinov2", {},
               dict(layer_scale=1e-5, pooling="token", num_classes=0, mlp_dim=128)),
    "dinov2_reg4": ("vit_base_patch14_reg4_dinov2", {},
                    dict(layer_scale=1e-5, num_registers=4, pooling="token", mlp_dim=128)),
    # int(32 * 5.33334) = 170 packed outputs: a gate and a value half of 85.
    "dinov2_giant_swiglu": ("vit_giant_patch14_reg4_dinov2", {},
                            dict(activation="swiglu", layer_scale=1e-5, num_registers=4,
                                 mlp_dim=85, pooling="token")),
    "clip_openai_quickgelu": ("vit_base_patch16_clip_quickgelu_224", dict(num_classes=16),
                              dict(activation="quick_gelu", pre_norm=True, patch_bias=False,
                                   layer_norm_epsilon=1e-5, num_classes=16, pooling="token")),
    "clip_laion": ("vit_base_patch32_clip_224", dict(num_classes=16),
                   dict(activation="gelu", approximate_gelu=False, pre_norm=True,
                        patch_bias=False, layer_norm_epsilon=1e-5, num_classes=16)),
    "siglip": ("vit_base_patch16_siglip_224", {},
               dict(pooling="map", approximate_gelu=False, num_classes=0)),
    "siglip_tanh_classifier": ("vit_so400m_patch16_siglip_256", dict(num_classes=3),
                               dict(pooling="map", approximate_gelu=True, num_classes=3,
                                    mlp_dim=119)),  # int(32 * 3.7362)
    "siglip_gap": ("vit_base_patch16_siglip_gap_224", {}, dict(pooling="gap", num_classes=0)),
    # Registers whose position rows are in timm's pos_embed (no_embed_class=False): folded in.
    "registers_in_pos_embed": ("vit_base_patch16_224", dict(reg_tokens=2, num_classes=5),
                               dict(num_registers=2, pooling="token", num_classes=5)),
    # timm pools the patch tokens only: registers stay out of the mean.
    "gap_registers": ("vit_base_patch16_siglip_gap_224", dict(reg_tokens=1, no_embed_class=True),
                      dict(num_registers=1, pooling="gap")),
    "no_qkv_bias": ("vit_base_patch16_224", dict(qkv_bias=False, num_classes=2),
                    dict(num_classes=2)),
}


def _timm_model(name, args, seed=0):
    model = timm.create_model(name, pretrained=False, **args)
    return torch_reference.randomize(model, seed=seed)


@pytest.fixture(scope="module", params=sorted(CASES))
def reference(request, tmp_path_factory):
    """(case id, timm model, its saved folder)."""
    name, extra, _ = CASES[request.param]
    args = dict(TINY, **extra)
    model = _timm_model(name, args, seed=sorted(CASES).index(request.param))
    folder = torch_reference.save_timm(model, tmp_path_factory.mktemp(request.param), args)
    return request.param, model, folder


def _expected_shapes(case):
    """Canonical key -> shape, worked out from the contract for each case."""
    _, _, facts = CASES[case]
    width, heads, hd = 32, 2, 16
    mlp = facts.get("mlp_dim", 128)
    packed = 2 * mlp if facts.get("activation") == "swiglu" else mlp
    pooling = facts.get("pooling", "token")
    prefix = 0 if pooling in ("gap", "map") else 1
    shapes = {"embedding/kernel": (14, 14, 3, width), POSEMB: (1, prefix + 4, width),
              "Transformer/encoder_norm/scale": (width,),
              "Transformer/encoder_norm/bias": (width,)}
    if facts.get("patch_bias", True):
        shapes["embedding/bias"] = (width,)
    if prefix:
        shapes["cls"] = (1, 1, width)
    if facts.get("num_registers"):
        shapes["reg"] = (1, facts["num_registers"], width)
    if facts.get("pre_norm"):
        shapes.update({"pre_norm/scale": (width,), "pre_norm/bias": (width,)})
    for i in range(2):
        block = BLOCK.format(i)
        attention = f"{block}/MultiHeadDotProductAttention_1"
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            shapes.update({f"{block}/{norm}/scale": (width,), f"{block}/{norm}/bias": (width,)})
        for part in ("query", "key", "value"):
            shapes.update({f"{attention}/{part}/kernel": (width, heads, hd),
                           f"{attention}/{part}/bias": (heads, hd)})
        shapes.update({f"{attention}/out/kernel": (heads, hd, width),
                       f"{attention}/out/bias": (width,),
                       f"{block}/MlpBlock_3/Dense_0/kernel": (width, packed),
                       f"{block}/MlpBlock_3/Dense_0/bias": (packed,),
                       f"{block}/MlpBlock_3/Dense_1/kernel": (mlp, width),
                       f"{block}/MlpBlock_3/Dense_1/bias": (width,)})
        if facts.get("layer_scale"):
            shapes.update({f"{block}/LayerScale_attention/scale": (width,),
                           f"{block}/LayerScale_mlp/scale": (width,)})
    if pooling == "map":
        shapes["MAPHead_0/probe"] = (1, 1, width)
        for part in ("query", "key", "value"):
            shapes.update({f"{MAP}/{part}/kernel": (width, heads, hd),
                           f"{MAP}/{part}/bias": (heads, hd)})
        shapes.update({f"{MAP}/out/kernel": (heads, hd, width), f"{MAP}/out/bias": (width,),
                       "MAPHead_0/LayerNorm_0/scale": (width,),
                       "MAPHead_0/LayerNorm_0/bias": (width,),
                       "MAPHead_0/MlpBlock_0/Dense_0/kernel": (width, mlp),
                       "MAPHead_0/MlpBlock_0/Dense_0/bias": (mlp,),
                       "MAPHead_0/MlpBlock_0/Dense_1/kernel": (mlp, width),
                       "MAPHead_0/MlpBlock_0/Dense_1/bias": (width,)})
    if facts.get("num_classes"):
        shapes.update({"head/kernel": (width, facts["num_classes"]),
                       "head/bias": (facts["num_classes"],)})
    return shapes


# ------------------------------------------------------------------ reading


@pytest.mark.backend_independent
def test_timm_family_reads_as_its_architecture(reference):
    case, model, folder = reference
    name, _, facts = CASES[case]
    checkpoint = checkpoints.read_checkpoint(folder)
    arch = checkpoint.architecture
    assert checkpoint.layout == f"timm {name}"
    assert (arch.image_size, arch.pooling, arch.num_classes) == (
        (28, 28), facts.get("pooling", "token"), facts.get("num_classes", 0))
    spec = arch.spec
    expected = dict(patch_size=14, hidden_dim=32, depth=2, num_heads=2, mlp_dim=128,
                    layer_norm_epsilon=1e-6, approximate_gelu=False, activation="gelu",
                    layer_scale=None, num_registers=0, pre_norm=False, patch_bias=True,
                    distillation_token=False)
    expected.update({k: v for k, v in facts.items() if k in expected})
    assert {k: getattr(spec, k) for k in expected} == expected
    shapes = {k: tuple(v.shape) for k, v in checkpoint.arrays.items()}
    assert shapes == _expected_shapes(case)


@pytest.mark.backend_independent
def test_timm_family_arrays_are_timms_reshaped(reference):
    case, model, folder = reference
    arrays = checkpoints.read_checkpoint(folder).arrays
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    facts = CASES[case][2]
    if facts.get("layer_scale"):
        np.testing.assert_array_equal(
            arrays[f"{BLOCK.format(1)}/LayerScale_mlp/scale"], state["blocks.1.ls2.gamma"])
    if case in ("dinov2_reg4", "dinov2_giant_swiglu"):  # no_embed_class: a zero class row
        np.testing.assert_array_equal(arrays[POSEMB][:, 0], 0.0)
        np.testing.assert_array_equal(arrays[POSEMB][:, 1:], state["pos_embed"])
        np.testing.assert_array_equal(arrays["cls"], state["cls_token"])
        np.testing.assert_array_equal(arrays["reg"], state["reg_token"])
    if case == "registers_in_pos_embed":  # rows [cls, reg, reg, patches]: reg rows folded in
        pos = state["pos_embed"]
        np.testing.assert_array_equal(arrays[POSEMB], np.concatenate([pos[:, :1], pos[:, 3:]], 1))
        np.testing.assert_allclose(arrays["reg"], state["reg_token"] + pos[:, 1:3])
    if facts.get("activation") == "swiglu":  # gate half first, as timm's SwiGLUPacked
        np.testing.assert_array_equal(arrays[f"{BLOCK.format(0)}/MlpBlock_3/Dense_0/kernel"],
                                      state["blocks.0.mlp.fc1.weight"].T)
    if facts.get("pooling") == "map":
        kv = state["attn_pool.kv.weight"]  # (2D, D): keys' rows, then values'
        np.testing.assert_array_equal(arrays[f"{MAP}/value/kernel"].reshape(32, 32), kv[32:].T)
        np.testing.assert_array_equal(arrays["MAPHead_0/probe"], state["attn_pool.latent"])
    if facts.get("pre_norm"):
        np.testing.assert_array_equal(arrays["pre_norm/scale"], state["norm_pre.weight"])


@pytest.mark.backend_independent
@pytest.mark.parametrize("arch, input_size, expected", [
    # SwiGLU: int(1536 * 5.33334) = 8192 packed outputs, 4096 after the gate.
    ("vit_giant_patch14_reg4_dinov2", 518,
     dict(hidden_dim=1536, depth=40, num_heads=24, mlp_dim=4096, activation="swiglu",
          layer_scale=1e-5, num_registers=4, pooling="token", image_size=(518, 518))),
    ("vit_large_patch14_clip_quickgelu_336", 336,
     dict(hidden_dim=1024, depth=24, num_heads=16, mlp_dim=4096, activation="quick_gelu",
          pre_norm=True, patch_bias=False, layer_norm_epsilon=1e-5, image_size=(336, 336))),
    ("vit_so400m_patch14_siglip_384", 384,
     dict(hidden_dim=1152, depth=27, num_heads=16, mlp_dim=4304, pooling="map",
          approximate_gelu=False, image_size=(384, 384))),
    ("vit_so400m_patch16_siglip_gap_256", 256,
     dict(patch_size=16, mlp_dim=4304, pooling="gap", approximate_gelu=True)),
], ids=["dinov2_giant_reg4", "clip_large_quickgelu", "siglip_so400m", "siglip_gap_tanh"])
def test_a_hub_config_without_model_args_reads_as_the_registered_model(tmp_path, arch,
                                                                       input_size, expected):
    # What timm's Hub repos hold: the name and its pretrained_cfg, no model_args.
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"architecture": arch, "num_classes": 0, "pretrained_cfg": {
            "input_size": [3, input_size, input_size], "mean": [0.5] * 3, "std": [0.5] * 3}}, f)
    arch = checkpoints.read_checkpoint(str(tmp_path), config_only=True).architecture
    found = {k: getattr(arch, k) if hasattr(arch, k) else getattr(arch.spec, k)
             for k in expected}
    assert found == expected


# ------------------------------------------------------------------ keras_vit equals timm


def test_timm_family_equals_timm(reference):
    case, model, folder = reference
    ours = keras_vit.ViT(weights=folder)
    nhwc, nchw = torch_reference.images(size=28)
    with torch.no_grad():
        expected = model(nchw)  # timm's default forward: pooled features or logits
    torch_reference.assert_close(ours(nhwc), expected)


# ------------------------------------------------------------------ written back for timm


def test_timm_family_written_back_loads_in_timm(reference, tmp_path):
    case, model, folder = reference
    ours = keras_vit.ViT(weights=folder)
    written = checkpoints.save_pretrained(ours, tmp_path / "out", layout="timm")
    # As timm reads a Hub repo: config.json (a registered name and model_args), then weights.
    reloaded = timm.create_model("local-dir:" + written, pretrained=True).eval()
    nhwc, nchw = torch_reference.images(size=28)
    with torch.no_grad():
        torch_reference.assert_close(ours(nhwc), reloaded(nchw))
        torch_reference.assert_close(ours(nhwc), model(nchw))
    # Every tensor timm's model has, and no other (timm loads strictly).
    with open(os.path.join(written, "config.json")) as f:
        config = json.load(f)
    assert config["architecture"] == {
        "dinov2": "vit_base_patch14_dinov2", "dinov2_reg4": "vit_base_patch14_reg4_dinov2",
        "dinov2_giant_swiglu": "vit_giant_patch14_reg4_dinov2",
        "clip_openai_quickgelu": "vit_base_patch16_clip_224",
        "clip_laion": "vit_base_patch16_clip_224", "siglip": "vit_base_patch16_siglip_224",
        "siglip_tanh_classifier": "vit_base_patch16_siglip_224",
        "siglip_gap": "vit_base_patch16_224",
        "registers_in_pos_embed": "vit_base_patch16_224", "gap_registers": "vit_base_patch16_224",
        "no_qkv_bias": "vit_base_patch16_224"}[case]


def _keras_model(pooling="token", **options):
    spec = dataclasses.replace(variants.parse_variant("mu/4"), **options)
    model = keras_vit.ViT(spec, image_size=16, num_classes=3, pooling=pooling)
    rng = np.random.default_rng(11)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("pooling, options", [
    # Random class-token position rows, written into timm's no_embed_class layout by folding.
    ("token", dict(layer_scale=1e-5, num_registers=2, activation="quick_gelu", pre_norm=True,
                   patch_bias=False)),
    ("token", dict(activation="swiglu", layer_scale=0.1, num_registers=1)),
    ("map", dict(approximate_gelu=True, layer_norm_epsilon=1e-5, pre_norm=True,
                 patch_bias=False)),
], ids=["registers_quickgelu_prenorm", "swiglu", "map_clip_epsilon"])
def test_keras_vit_family_model_written_for_timm_loads_in_timm(tmp_path, pooling, options):
    model = _keras_model(pooling, **options)
    folder = checkpoints.save_pretrained(model, tmp_path / "out", layout="timm")
    reloaded = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    nhwc, nchw = torch_reference.images()
    with torch.no_grad():
        torch_reference.assert_close(model(nhwc), reloaded(nchw))
    again = keras_vit.ViT(weights=folder)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(nhwc)),
                               keras.ops.convert_to_numpy(model(nhwc)), atol=1e-5)


@pytest.mark.parametrize("pooling, options, message", [
    ("token", dict(activation="swiglu", layer_norm_epsilon=1e-5),
     r"timm registers its SwiGLU MLP \(SwiGLUPacked\) for DINOv2 giant only"),
    ("token", dict(pre_norm=True),
     r"timm's patch embedding has a bias exactly when there is no pre-norm"),
    ("token", dict(layer_norm_epsilon=1e-12),
     r"timm's ViT has LayerNorm epsilon 1e-6 \(1e-5 for its CLIP names\)"),
    ("token", dict(distillation_token=True, num_registers=2),
     r"timm's distilled DeiT layout has no register tokens"),
    ("map", dict(num_registers=1), r"timm global_pool 'map' with reg_tokens is not supported"),
    ("map", dict(activation="quick_gelu"), r"timm's MAP head \(attn_pool\) has the blocks' "
                                           r"activation; .* this model's blocks are 'quick_gelu'"),
], ids=["swiglu_epsilon", "pre_norm_with_patch_bias", "epsilon", "distilled_registers",
        "map_registers", "map_quick_gelu"])
def test_what_timm_cannot_hold_is_refused_when_writing(tmp_path, pooling, options, message):
    with pytest.raises(ValueError, match=message):
        checkpoints.save_pretrained(_keras_model(pooling, **options), tmp_path / "x",
                                    layout="timm")
    assert not os.path.exists(tmp_path / "x")


# ------------------------------------------------------------------ refused by name


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    args = dict(TINY, num_classes=2)
    model = _timm_model("vit_base_patch16_224", args)
    return torch_reference.save_timm(model, tmp_path_factory.mktemp("vit"), args)


def _with_config(folder, tmp_path, change):
    copy = shutil.copytree(folder, tmp_path / "copy")
    with open(os.path.join(copy, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(copy, "config.json"), "w") as f:
        json.dump(change(config), f)
    return str(copy)


@pytest.mark.backend_independent
@pytest.mark.parametrize("arch, message", [
    ("beit_base_patch16_224", r"timm architecture 'beit_base_patch16_224': timm BEiT models "
                              r"\(beit_\*, beitv2_\*, beit3_\*\) are not supported: keras_vit's "
                              r"attention has no relative position bias"),
    ("eva02_base_patch14_224", r"timm architecture 'eva02_base_patch14_224': timm EVA models "
                               r"\(eva_\*, eva02_\*\) are not supported: keras_vit has no rotary "
                               r"position embeddings \(RoPE\) and no SwiGLU MLP with a "
                               r"sub-LayerNorm"),
    ("vit_base_patch16_rope_224", r"timm architecture 'vit_base_patch16_rope_224': timm ViTs "
                                  r"with rotary position embeddings \(vit_\*_rope_\*, "
                                  r"vit_\*_dinov3\*\) are not supported"),
    ("vit_base_patch16_dinov3", r"'vit_base_patch16_dinov3': timm ViTs with rotary position"),
    ("vit_medium_patch16_gap_240", r"timm architecture 'vit_medium_patch16_gap_240' is not "
                                   r"supported; supported: vit_\{tiny,small,base,large,huge\}_"
                                   r"patch\{P\}_\{IMAGE\}; .*_dinov2; .*_clip.*; .*_siglip"),
], ids=["beit", "eva02", "rope", "dinov3", "unknown"])
def test_timm_families_keras_vit_cannot_express_are_refused_by_name(saved_vit, tmp_path, arch,
                                                                     message):
    folder = _with_config(saved_vit, tmp_path, lambda c: {**c, "architecture": arch})
    with pytest.raises(ValueError, match=message):
        checkpoints.read_checkpoint(folder)


@pytest.mark.backend_independent
def test_timm_qk_norm_is_refused(tmp_path):
    args = dict(TINY, num_classes=2, qk_norm=True)
    folder = torch_reference.save_timm(_timm_model("vit_base_patch16_224", args),
                                       tmp_path / "qk", args)
    with pytest.raises(ValueError, match=r"timm model_args qk_norm=True is not supported: "
                                         r"keras_vit's attention has no LayerNorm on the "
                                         r"queries and keys"):
        keras_vit.ViT(weights=folder)


@pytest.mark.backend_independent
@pytest.mark.parametrize("model_args, message", [
    (dict(global_pool="avg", class_token=False), r"timm global_pool 'avg' with fc_norm"),
    (dict(global_pool="map", class_token=True), r"timm global_pool 'map' with a class token"),
    (dict(global_pool="map", class_token=False, act_layer="quick_gelu"),
     r"timm global_pool 'map' with 'quick_gelu' blocks is not supported"),
    (dict(global_pool="map", class_token=False, reg_tokens=1),
     r"timm global_pool 'map' with reg_tokens is not supported: timm's attention pool leaves "
     r"the registers out"),
    (dict(norm_layer="rmsnorm"), r"timm norm_layer 'rmsnorm' is not supported"),
    (dict(final_norm=False), r"timm model_args \['final_norm'\] are not supported"),
], ids=["avg_fc_norm", "map_class_token", "map_quick_gelu", "map_registers", "rmsnorm",
        "final_norm"])
def test_timm_arguments_keras_vit_cannot_express_are_refused(saved_vit, tmp_path, model_args,
                                                             message):
    folder = _with_config(saved_vit, tmp_path, lambda c: {
        **c, "model_args": {**c["model_args"], **model_args}})
    with pytest.raises(ValueError, match=message):
        checkpoints.read_checkpoint(folder)


# ------------------------------------------------------------------ the table is timm's registry


def _registered_model_args(path):
    """name -> the `model_args` of each `@register_model` function of a timm module.

    timm's Python objects become the table's strings: `partial(LayerNorm, eps=e)` ->
    `norm_eps=e`, `SwiGLUPacked` -> `mlp_layer='swiglu_packed'`, `nn.SiLU` -> `'silu'`.
    """
    with open(path) as f:
        tree = ast.parse(f.read())
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for statement in node.body:
            if (isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name)
                    and statement.targets[0].id == "model_args"):
                args = {}
                for keyword in statement.value.keywords:
                    value = keyword.value
                    if ast.unparse(value).startswith("partial(LayerNorm, eps="):
                        args["norm_eps"] = ast.literal_eval(value.keywords[0].value)
                    elif ast.unparse(value) == "SwiGLUPacked":
                        args[keyword.arg] = "swiglu_packed"
                    elif ast.unparse(value) == "nn.SiLU":
                        args[keyword.arg] = "silu"
                    else:  # constants and arithmetic on them (mlp_ratio=48 / 11)
                        try:
                            args[keyword.arg] = eval(compile(ast.Expression(value), path, "eval"))
                        except NameError:  # another object (block_fn=ResPostBlock): its name
                            args[keyword.arg] = ast.unparse(value)
                found[node.name] = args
    return found


@pytest.mark.backend_independent
def test_every_table_entry_is_what_timm_registers():
    models = os.path.dirname(timm.models.__file__)
    registered = {**_registered_model_args(os.path.join(models, "vision_transformer.py")),
                  **_registered_model_args(os.path.join(models, "deit.py"))}
    patterns = [f.pattern for f in timm_architectures.FAMILIES]
    ours = sorted(n for n in registered if any(re.fullmatch(p, n) for p in patterns))
    # Every DINOv2, CLIP and SigLIP name timm has is in the table.
    families = sorted(n for n in registered if re.search(r"_dinov2$|_clip_|_siglip_", n))
    assert [n for n in families if n not in ours] == []
    assert len(ours) == 94
    for name in ours:
        _, args = timm_architectures.registered_args(name)
        # VisionTransformer's own defaults, where a name leaves them out.
        expected = {"patch_size": 16, "mlp_ratio": 4.0, **registered[name]}
        expected["img_size"] = timm.models.get_pretrained_cfg(name).input_size[-1]
        assert args == expected, name
