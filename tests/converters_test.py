"""transformers and timm checkpoints <-> keras_vit, against those libraries' own forward passes.

The references are tiny models their own library built and saved (`tests/torch_reference.py`).
"""

import json
import os

import keras
import numpy as np
import pytest

import torch_reference
from hub_server import fake_hub, go_offline, never_the_real_hub  # noqa: F401

import keras_vit
from keras_vit import checkpoints

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")
pytest.importorskip("safetensors")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=16, patch_size=4)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


_randomize, _images, _assert_close, _save_hf = (
    torch_reference.randomize, torch_reference.images, torch_reference.assert_close,
    torch_reference.save_hf)


# ------------------------------------------------------------------ transformers, reading


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    config = transformers.ViTConfig(**TINY, num_labels=5,
                                    id2label={i: f"dish_{i}" for i in range(5)})
    model = _randomize(transformers.ViTForImageClassification(config))
    processor = transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return model, _save_hf(model, tmp_path_factory.mktemp("hf_vit"), processor)


def test_transformers_vit_classifier_equals_transformers(hf_vit):
    reference, folder = hf_vit
    model = keras_vit.ViT(weights=folder)
    nhwc, nchw = _images()
    with torch.no_grad():
        logits = reference(pixel_values=nchw).logits
    _assert_close(model(nhwc), logits)
    # Its config, not the paper's defaults: exact GELU, epsilon 1e-12, 5 classes.
    block = model.get_layer("encoder_block_0")
    assert (block.approximate_gelu, block.layer_norm_epsilon) == (False, 1e-12)
    assert model.get_layer("encoder_norm").epsilon == 1e-12
    assert model.output_shape == (None, 5)


def test_hf_reference_through_the_hub_then_offline_from_its_cache(hf_vit, fake_hub,
                                                                   monkeypatch):
    _, folder = hf_vit
    files = {name: open(os.path.join(folder, name), "rb").read() for name in os.listdir(folder)}
    fake_hub.add("food/vit-tiny", files)
    nhwc, _ = _images()
    expected = keras.ops.convert_to_numpy(keras_vit.ViT(weights=folder)(nhwc))
    model = keras_vit.ViT(weights="hf://food/vit-tiny")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(nhwc)), expected)
    assert sorted(p for m, p in fake_hub.hub_requests() if m == "GET") == sorted(
        f"/food/vit-tiny/resolve/{rev}/{name}" for rev, name in [
            ("main", "config.json")] + [(fake_hub.repos["food/vit-tiny"]["refs"]["main"], n)
                                        for n in ("model.safetensors",
                                                  "preprocessor_config.json")])
    # Offline: the cache alone, no request, the same model; and its classes by name.
    go_offline(monkeypatch)
    before = len(fake_hub.requests)
    again = keras_vit.ViT(weights="hf://food/vit-tiny")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(nhwc)), expected)
    top = keras_vit.decode_predictions(expected, top=1, labels="hf://food/vit-tiny")
    assert top[0][0][1] == f"dish_{int(np.argmax(expected[0]))}"
    assert len(fake_hub.requests) == before


def test_hf_reference_with_only_pickles_is_refused(fake_hub, tmp_path):
    config = transformers.ViTConfig(**TINY)
    folder = tmp_path / "pickled"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    fake_hub.add("old/vit", {"config.json": (folder / "config.json").read_bytes(),
                             "pytorch_model.bin": b"not unpickled"})
    with pytest.raises(ValueError, match=r"hf://old/vit holds only pickled weights "
                                         r"\(pytorch_model\.bin\)\. keras_vit never unpickles"):
        keras_vit.ViT(weights="hf://old/vit")
    assert [p for _, p in fake_hub.hub_requests() if p.endswith(".bin")] == []


def test_sharded_checkpoint_loads_as_the_whole(hf_vit, tmp_path):
    reference, folder = hf_vit
    reference.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len([n for n in os.listdir(tmp_path / "sharded") if n.endswith(".safetensors")]) > 1
    nhwc, _ = _images()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras_vit.ViT(weights=str(tmp_path / "sharded"))(nhwc)),
        keras.ops.convert_to_numpy(keras_vit.ViT(weights=folder)(nhwc)))


def test_transformers_vit_takes_the_checkpoints_mean_and_std(hf_vit):
    reference, folder = hf_vit
    model = keras_vit.ViT(weights=folder, include_preprocessing=True)
    raw = np.random.default_rng(5).integers(0, 256, (2, 16, 16, 3)).astype("float32")
    normalized = (raw / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        logits = reference(
            pixel_values=torch.from_numpy(normalized.transpose(0, 3, 1, 2).astype("float32")))
    _assert_close(model(raw), logits.logits)
    batch = keras_vit.preprocess_images(raw.astype("uint8"), preset=folder)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(batch), normalized, atol=1e-5)


def test_folded_normalization_takes_the_pipelines_inputs(hf_vit):
    from keras_vit import finetune

    reference, folder = hf_vit
    model = keras_vit.ViT(weights=folder)
    finetune.fold_input_normalization(model, IMAGENET_MEAN, IMAGENET_STD)
    x = np.random.default_rng(6).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    normalized = ((x + 1) / 2 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        logits = reference(pixel_values=torch.from_numpy(
            normalized.transpose(0, 3, 1, 2).astype("float32"))).logits
    _assert_close(model(x), logits)
    with pytest.raises(ValueError, match=r"must have 3 values each"):
        finetune.fold_input_normalization(model, [0.5], [0.5])


@pytest.mark.parametrize("size, crop", [(256, 224), ({"shortest_edge": 256},
                                                      {"height": 224, "width": 224})],
                         ids=["pre_4_26_ints", "dicts"])
def test_deit_processor_crop_is_read(size, crop):
    from keras_vit.converters import transformers as source

    config = {"do_center_crop": True, "size": size, "crop_size": crop, "resample": 3,
              "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
    assert source.preprocessing(config, (224, 224)) == dict(
        mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_fraction=0.875, interpolation="bicubic")


def test_transformers_class_names_decode(hf_vit):
    _, folder = hf_vit
    logits = np.array([[0.0, 3.0, 1.0, 0.0, 0.0]], "float32")
    top = keras_vit.decode_predictions(logits, top=2, labels=folder)
    assert [(i, name) for i, name, _ in top[0]] == [(1, "dish_1"), (2, "dish_2")]


def test_transformers_vit_fine_tunes_like_a_preset(hf_vit):
    _, folder = hf_vit
    model = keras_vit.ViT(weights=folder, image_size=24, num_classes=3)
    assert model.get_layer("position_embedding").embeddings.shape == (1, 1 + 36, 32)
    head = model.get_layer("head")
    assert float(np.abs(keras.ops.convert_to_numpy(head.kernel)).max()) == 0.0
    source = keras_vit.ViT(weights=folder)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("encoder_block_1").qkv.kernel),
        keras.ops.convert_to_numpy(source.get_layer("encoder_block_1").qkv.kernel))


@pytest.mark.parametrize("pooler", [True, False], ids=["vitmodel_pooler", "dino_no_pooler"])
def test_transformers_vit_backbone_returns_its_pooled_output(tmp_path, pooler):
    config = transformers.ViTConfig(**TINY)
    reference = _randomize(transformers.ViTModel(config, add_pooling_layer=pooler), seed=1)
    folder = _save_hf(reference, tmp_path / "backbone")
    model = keras_vit.ViT(weights=folder)
    nhwc, nchw = _images()
    with torch.no_grad():
        out = reference(pixel_values=nchw)
    expected = out.pooler_output if pooler else out.last_hidden_state[:, 0]
    _assert_close(model(nhwc), expected)
    assert ("pre_logits" in [layer.name for layer in model.layers]) == pooler
    assert "head" not in [layer.name for layer in model.layers]


@pytest.mark.parametrize("distilled", [True, False], ids=["with_teacher", "class_token_head"])
def test_transformers_deit_equals_transformers(tmp_path, distilled):
    config = transformers.DeiTConfig(**TINY, num_labels=4)
    cls = (transformers.DeiTForImageClassificationWithTeacher if distilled
           else transformers.DeiTForImageClassification)
    reference = _randomize(cls(config), seed=2)
    model = keras_vit.ViT(weights=_save_hf(reference, tmp_path / "deit"))
    nhwc, nchw = _images()
    with torch.no_grad():
        logits = reference(pixel_values=nchw).logits  # distilled: the mean of the two heads
    _assert_close(model(nhwc), logits)
    # [class], distillation, 16 patches; one head on the pair, or on the [class] token.
    assert model.get_layer("position_embedding").embeddings.shape == (1, 18, 32)
    assert model.get_layer("head").kernel.shape == ((64, 4) if distilled else (32, 4))


def test_transformers_mae_encoder_equals_unmasked_mae(tmp_path):
    config = transformers.ViTMAEConfig(
        **TINY, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=32)
    reference = _randomize(transformers.ViTMAEForPreTraining(config), seed=5)
    folder = _save_hf(reference, tmp_path / "mae")
    model = keras_vit.ViT(weights=folder)
    nhwc, nchw = _images()
    # MAE masks 75% of the patches at random; unmasked, with the identity shuffle, its
    # encoder is what keras_vit runs.
    reference.config.mask_ratio = 0.0
    reference.vit.embeddings.config.mask_ratio = 0.0
    noise = torch.arange(16, dtype=torch.float32).expand(2, 16)
    with torch.no_grad():
        hidden = reference.vit(pixel_values=nchw, noise=noise).last_hidden_state
    _assert_close(model(nhwc), hidden[:, 0])


# ------------------------------------------------------------------ timm, reading


def _timm_model(name, seed, **kwargs):
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, **kwargs)
    return _randomize(timm.create_model(name, pretrained=False, **args), seed=seed), args


_save_timm = torch_reference.save_timm


@pytest.mark.parametrize("name, kwargs", [
    ("vit_base_patch16_224", dict(num_classes=6)),
    ("vit_base_patch16_224", dict(num_classes=0)),
    ("deit_base_distilled_patch16_224", dict(num_classes=6)),
    ("vit_base_patch16_224", dict(num_classes=6, global_pool="avg", class_token=False,
                                  fc_norm=False)),
], ids=["classifier", "backbone", "deit_distilled", "gap"])
def test_timm_equals_timm(tmp_path, name, kwargs):
    reference, args = _timm_model(name, seed=6, **kwargs)
    folder = _save_timm(reference, tmp_path / "timm", args)
    model = keras_vit.ViT(weights=folder)
    nhwc, nchw = _images()
    with torch.no_grad():
        expected = reference(nchw)
    _assert_close(model(nhwc), expected)
    block = model.get_layer("encoder_block_0")
    assert (block.approximate_gelu, block.layer_norm_epsilon) == (False, 1e-6)


def test_timm_config_states_mean_std_and_crop(tmp_path):
    reference, args = _timm_model("deit_base_distilled_patch16_224", seed=7, num_classes=3)
    folder = _save_timm(reference, tmp_path / "timm_deit", args)
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["pretrained_cfg"]["crop_pct"] == 0.9  # timm's DeiT evaluation
    checkpoint = checkpoints.read_checkpoint(folder)
    arch = checkpoint.architecture
    assert (arch.mean, arch.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (arch.crop_fraction, arch.interpolation, arch.pooling) == (0.9, "bicubic",
                                                                      "distilled")
    assert checkpoint.layout == "timm deit_base_distilled_patch16_224"


# ------------------------------------------------------------------ writing back


def _keras_model(**kwargs):
    model = keras_vit.ViT("mu/4", image_size=16, **kwargs)
    rng = np.random.default_rng(11)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32")
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("approximate_gelu", [True, False], ids=["tanh_gelu", "exact_gelu"])
def test_save_pretrained_transformers_loads_in_transformers(tmp_path, approximate_gelu):
    model = _keras_model(num_classes=4, approximate_gelu=approximate_gelu)
    folder = checkpoints.save_pretrained(model, tmp_path / "out", layout="transformers",
                                         class_names=["a", "b", "c", "d"])
    reference = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(reference).__name__ == "ViTForImageClassification"
    assert reference.config.id2label[2] == "c"
    nhwc, nchw = _images()
    with torch.no_grad():
        _assert_close(model(nhwc), reference(pixel_values=nchw).logits)
    # And back: the written folder reads into the same model.
    reloaded = keras_vit.ViT(weights=folder, approximate_gelu=approximate_gelu)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(nhwc)),
                               keras.ops.convert_to_numpy(model(nhwc)), atol=1e-5)


def test_save_pretrained_timm_loads_in_timm(tmp_path):
    model = _keras_model(num_classes=4)
    folder = checkpoints.save_pretrained(model, tmp_path / "out", layout="timm")
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    # As timm reads a Hub repo (`hf-hub:ORG/NAME`): config.json, then the weights.
    from_folder = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    # And a bare file with the config's arguments.
    from_file = timm.create_model(
        config["architecture"], pretrained=True,
        pretrained_cfg_overlay=dict(file=os.path.join(folder, "model.safetensors"),
                                    num_classes=4),
        **config["model_args"]).eval()
    nhwc, nchw = _images()
    with torch.no_grad():
        _assert_close(model(nhwc), from_folder(nchw))
        _assert_close(model(nhwc), from_file(nchw))


def test_save_pretrained_distilled_round_trips_through_both_libraries(tmp_path):
    config = transformers.DeiTConfig(**TINY, num_labels=4, hidden_act="gelu")
    source = _randomize(transformers.DeiTForImageClassificationWithTeacher(config), seed=8)
    model = keras_vit.ViT(weights=_save_hf(source, tmp_path / "deit"))
    nhwc, nchw = _images()
    hf_folder = checkpoints.save_pretrained(model, tmp_path / "hf", layout="transformers")
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(hf_folder).eval()
    with torch.no_grad():
        _assert_close(model(nhwc), reloaded(pixel_values=nchw).logits)
    with pytest.raises(ValueError, match="LayerNorm epsilon 1e-6.*1e-12"):
        checkpoints.save_pretrained(model, tmp_path / "timm", layout="timm")
    # A distilled model of timm's epsilon goes to timm's DeiT.
    timm_source, args = _timm_model("deit_base_distilled_patch16_224", seed=10, num_classes=4)
    model = keras_vit.ViT(weights=_save_timm(timm_source, tmp_path / "timm_deit", args))
    folder = checkpoints.save_pretrained(model, tmp_path / "timm_out", layout="timm")
    reloaded = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    with torch.no_grad():
        _assert_close(model(nhwc), reloaded(nchw))


def test_save_pretrained_refuses_what_the_layout_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="Unknown layout 'onnx'"):
        checkpoints.save_pretrained(_keras_model(num_classes=2), tmp_path / "x", layout="onnx")
    with pytest.raises(ValueError, match="pooling 'gap' cannot be written"):
        checkpoints.save_pretrained(_keras_model(num_classes=2, pooling="gap"), tmp_path / "y")
    with pytest.raises(ValueError, match="no pre-logits layer before its classifier"):
        checkpoints.save_pretrained(
            _keras_model(num_classes=2, representation_size=8), tmp_path / "z")
    assert not os.path.exists(tmp_path / "y") and not os.path.exists(tmp_path / "z")


# ------------------------------------------------------------------ errors


def _rewrite(folder, tensors=None, config=None):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    if tensors is not None:
        arrays = tensors(load_file(path))
        save_file(arrays, path, metadata={"format": "pt"})
    if config is not None:
        with open(os.path.join(folder, "config.json")) as f:
            data = json.load(f)
        data = config(data)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(data, f)


@pytest.fixture
def hf_copy(hf_vit, tmp_path):
    import shutil

    return shutil.copytree(hf_vit[1], tmp_path / "copy")


def test_unknown_model_type_lists_the_supported_ones(hf_copy):
    _rewrite(hf_copy, config=lambda c: {**c, "model_type": "swin"})
    with pytest.raises(ValueError, match=r"model_type 'swin' is not supported; supported "
                                         r"transformers model types: vit, deit, vit_mae"):
        keras_vit.ViT(weights=str(hf_copy))


def test_config_contradicting_weights_names_key_and_shapes(hf_copy):
    _rewrite(hf_copy, config=lambda c: {**c, "intermediate_size": 128})
    with pytest.raises(ValueError, match=r"key 'vit\.encoder\.layer\.0\.intermediate\.dense"
                                         r"\.weight' has shape \(32, 64\), expected \(32, 128\)"):
        keras_vit.ViT(weights=str(hf_copy))


def test_missing_key_is_named(hf_copy):
    key = "vit.encoder.layer.1.layernorm_after.bias"
    _rewrite(hf_copy, tensors=lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(ValueError, match=f"key '{key}' is missing from the checkpoint"):
        keras_vit.ViT(weights=str(hf_copy))


def test_unexpected_key_is_named(hf_copy):
    _rewrite(hf_copy, tensors=lambda t: {**t, "vit.extra.weight": np.ones(3, "float32")})
    with pytest.raises(ValueError, match=r"unexpected key 'vit\.extra\.weight' of shape \(3,\)"):
        keras_vit.ViT(weights=str(hf_copy))


def test_failed_load_leaves_the_model_untouched(hf_copy):
    model = keras_vit.ViT(weights=str(hf_copy))
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    _rewrite(hf_copy, tensors=lambda t: {
        **t, "classifier.weight": np.ones((5, 16), "float32")})
    with pytest.raises(ValueError, match="classifier.weight"):
        checkpoints.load_checkpoint(model, checkpoints.read_checkpoint(str(hf_copy)))
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))


def test_variant_contradicting_the_config(hf_vit):
    with pytest.raises(ValueError, match=r"variant 'B/16' contradicts weights"):
        keras_vit.ViT("B/16", weights=hf_vit[1])


def test_unsupported_timm_architecture_is_named(tmp_path):
    reference, args = _timm_model("vit_base_patch16_224", seed=9, num_classes=2)
    folder = _save_timm(reference, tmp_path / "t", args)
    _rewrite(folder, config=lambda c: {**c, "architecture": "vit_medium_patch16_gap_240"})
    with pytest.raises(ValueError, match="timm architecture 'vit_medium_patch16_gap_240' is "
                                         "not supported"):
        keras_vit.ViT(weights=folder)


# ------------------------------------------------------------------ a distilled model in keras_vit


def test_a_distilled_model_adapts_explains_and_saves(tmp_path):
    from keras_vit import explain, finetune

    config = transformers.DeiTConfig(**TINY, num_labels=4)
    source = _randomize(transformers.DeiTForImageClassificationWithTeacher(config), seed=12)
    model = keras_vit.ViT(weights=_save_hf(source, tmp_path / "deit"))
    nhwc, _ = _images()
    # Both prefix tokens reach the head: the last block computes every token.
    assert model.get_layer("encoder_block_1").output.shape == (None, 18, 32)
    tuned = finetune.adapt(model, image_size=24, num_classes=3)
    assert tuned.get_layer("position_embedding").embeddings.shape == (1, 2 + 36, 32)
    assert tuned.get_layer("head").kernel.shape == (64, 3)
    np.testing.assert_array_equal(  # the [class] and distillation rows are kept as they are
        keras.ops.convert_to_numpy(tuned.get_layer("position_embedding").embeddings)[:, :2],
        keras.ops.convert_to_numpy(model.get_layer("position_embedding").embeddings)[:, :2])
    # Rollout over 2 prefix tokens: one map per image over the 4x4 grid, resized to the image.
    maps = keras.ops.convert_to_numpy(explain.attention_rollout(model, nhwc))
    assert maps.shape == (2, 16, 16) and np.isfinite(maps).all()
    path = str(tmp_path / "deit.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(nhwc)),
                                  keras.ops.convert_to_numpy(model(nhwc)))
    with pytest.raises(ValueError, match="pooling 'gap' cannot be used with a distillation"):
        keras_vit.ViT(weights=str(tmp_path / "deit"), pooling="gap")
    with pytest.raises(ValueError, match="pooling 'distilled' needs a distillation token"):
        keras_vit.ViT("mu/4", image_size=16, pooling="distilled")


def test_a_safetensors_file_without_its_config_is_refused(hf_vit, tmp_path):
    import shutil

    path = tmp_path / "model.safetensors"
    shutil.copyfile(os.path.join(hf_vit[1], "model.safetensors"), path)
    with pytest.raises(ValueError, match=r"model\.safetensors: no config\.json beside the "
                                         r"weights\. keras_vit builds the model its config "
                                         r"describes and never guesses"):
        keras_vit.ViT(weights=str(path))
    shutil.copyfile(os.path.join(hf_vit[1], "config.json"), tmp_path / "config.json")
    assert keras_vit.ViT(weights=str(path)).output_shape == (None, 5)


def test_transformers_vit_without_qkv_biases(tmp_path):
    config = transformers.ViTConfig(**TINY, num_labels=3, qkv_bias=False)
    reference = _randomize(transformers.ViTForImageClassification(config), seed=13)
    model = keras_vit.ViT(weights=_save_hf(reference, tmp_path / "nobias"))
    nhwc, nchw = _images()
    with torch.no_grad():
        _assert_close(model(nhwc), reference(pixel_values=nchw).logits)
    # The fused projection's bias is zero where the checkpoint has none.
    assert float(np.abs(keras.ops.convert_to_numpy(
        model.get_layer("encoder_block_0").qkv.bias)).max()) == 0.0


def test_old_gamma_beta_layer_norm_names_are_read(hf_vit, hf_copy):
    reference, _ = hf_vit

    def rename(tensors):
        return {(k[:-len(".weight")] + ".gamma" if "layernorm" in k and k.endswith(".weight")
                 else k[:-len(".bias")] + ".beta" if "layernorm" in k and k.endswith(".bias")
                 else k): v for k, v in tensors.items()}

    _rewrite(hf_copy, tensors=rename)
    nhwc, nchw = _images()
    with torch.no_grad():
        _assert_close(keras_vit.ViT(weights=str(hf_copy))(nhwc),
                      reference(pixel_values=nchw).logits)
