"""The library's features on the DINOv2, CLIP and SigLIP towers (issue 33), on every backend.

Four small models, one per new option set, each with random non-zero weights (a zero head, or
LayerScale at 1e-5, would make mistakes invisible):

- `dinov2_registers`: LayerScale and 4 register tokens, [class]-token pooling, no head;
- `clip`: pre-encoder LayerNorm, patch embedding without bias, QuickGELU, LayerNorm epsilon
  1e-5, and the projection as the head (8 outputs);
- `siglip_map`: attention pooling (`MAPHead`), no [class] token, no head;
- `swiglu`: DINOv2-g's SwiGLU MLP (packed `mlp_dense_1` of 2 mlp_dim outputs) with LayerScale.

Each is checked with fine-tuning (`finetune.adapt`, `ViT(weights=...)` of a `.keras` file and of
a Hub folder `checkpoints.save_pretrained` wrote), any image size, gradient checkpointing, LoRA,
int8 quantization and few-shot features. The exports and the
training binary are in `tests/training/families_test.py`.
"""

import dataclasses
import gc
import warnings

import keras
import numpy as np
import pytest
from layer_testing import loss_and_gradients, to_numpy

import keras_vit
from keras_vit import checkpoints, fewshot, finetune, lora, model_layers, variants

MU4 = variants.parse_variant("mu/4")  # width 32, 1 block, 2 heads, MLP 128, 4x4 patches
FAMILIES = {
    "dinov2_registers": (
        dataclasses.replace(MU4, layer_scale=1e-5, num_registers=4), dict(num_classes=0)),
    "clip": (
        dataclasses.replace(MU4, pre_norm=True, patch_bias=False, activation="quick_gelu",
                            layer_norm_epsilon=1e-5),
        dict(num_classes=8)),
    "siglip_map": (MU4, dict(pooling="map", num_classes=0)),
    "swiglu": (dataclasses.replace(MU4, activation="swiglu", layer_scale=1e-5),
               dict(num_classes=0)),
}
NAMES = list(FAMILIES)
# What `ViT()` builds for each, by layer (the option under test is really there).
FAMILY_LAYERS = {
    "dinov2_registers": {"class_token", "register_tokens"},
    "clip": {"class_token", "pre_norm", "head"},
    "siglip_map": set(),
    "swiglu": {"class_token"},
}
OPTIONAL_LAYERS = {"class_token", "register_tokens", "pre_norm", "head"}
IMAGES = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")


def build(name, *, seed=1, **overrides):
    """The family's model at 16x16 (`overrides` replace `ViT` arguments), weights ~ N(0, 0.2)."""
    spec, kwargs = FAMILIES[name]
    model = keras_vit.ViT(spec, image_size=16, **{**kwargs, **overrides})
    randomize(model, seed)
    return model


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if keras.backend.standardize_dtype(variable.dtype).startswith("float"):
            variable.assign(rng.normal(0, 0.2, variable.shape).astype(variable.dtype))


def images(height=16, width=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (3, height, width, 3)).astype("float32")


def weights_by_path(model):
    return {v.path: to_numpy(v) for v in model.weights}


def layer_output(model, name):
    """The output of `model`'s layer `name` on IMAGES (e.g. the pooled features)."""
    return to_numpy(keras.Model(model.input, model.get_layer(name).output)(IMAGES))


@pytest.mark.parametrize("name", NAMES)
def test_each_family_has_its_layers(name):
    model = build(name)
    present = {layer.name for layer in model.layers} & OPTIONAL_LAYERS
    assert present == FAMILY_LAYERS[name]
    block = model_layers.transformer_blocks(model)[0]
    spec = FAMILIES[name][0]
    assert (block.activation, block.layer_scale) == (spec.activation, spec.layer_scale)
    pooling = model_layers.find_layer(model, "pooling")
    assert pooling.pooling == ("map" if name == "siglip_map" else "token")
    assert model.output_shape == (None, 8 if name == "clip" else 32)


# -- Fine-tuning: finetune.adapt and ViT(weights=...) ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_adapt_to_a_new_image_size_interpolates_the_position_embeddings_only(name):
    model = build(name)
    adapted = finetune.adapt(model, image_size=24)
    assert adapted.input_shape == (None, 24, 24, 3)
    assert [layer.name for layer in adapted.layers] == [layer.name for layer in model.layers]
    before, after = weights_by_path(model), weights_by_path(adapted)
    assert before.keys() == after.keys()
    posemb = model.get_layer("position_embedding")
    # 16/4 = 4 -> 24/4 = 6: a 6x6 grid after the [class] token (none with map pooling);
    # the registers carry no position embedding.
    prefix = 0 if name == "siglip_map" else 1
    assert posemb.num_prefix_tokens == prefix
    expected = finetune.resize_position_embeddings(
        before["position_embedding/embeddings"], (6, 6), num_prefix_tokens=prefix)
    assert expected.shape == (1, prefix + 36, 32)
    np.testing.assert_array_equal(after["position_embedding/embeddings"], expected)
    for path in before.keys() - {"position_embedding/embeddings"}:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    if name == "dinov2_registers":
        assert after["register_tokens/tokens"].shape == (1, 4, 32)
    out = to_numpy(adapted(images(24, 24)))
    assert out.shape == (3, 8 if name == "clip" else 32) and np.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_adapt_to_new_classes_puts_a_zero_head_on_the_pooled_features(name):
    model = build(name)
    adapted = finetune.adapt(model, num_classes=10)
    names = [layer.name for layer in adapted.layers]
    # The CLIP-like model's projection (its 8-output head) is replaced, not stacked upon.
    assert names[-2:] == ["pooling", "head"]
    assert names.count("head") == 1
    head = adapted.get_layer("head")
    assert head.kernel.shape == (32, 10)
    assert np.abs(to_numpy(head.kernel)).max() == 0 and np.abs(to_numpy(head.bias)).max() == 0
    # A MAP head is kept (it is the pooling), weights and all.
    pooling = adapted.get_layer("pooling")
    assert type(pooling) is type(model.get_layer("pooling"))
    for original, copy in zip(model.get_layer("pooling").weights, pooling.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(copy), to_numpy(original))
    # The new head reads the original's pooled representation (before CLIP's projection).
    features = to_numpy(fewshot.feature_model(adapted)(IMAGES))
    np.testing.assert_allclose(features, layer_output(model, "pooling"), rtol=1e-5, atol=1e-5)
    assert np.abs(features).max() > 0.1
    np.testing.assert_array_equal(to_numpy(adapted(IMAGES)), np.zeros((3, 10), "float32"))


@pytest.mark.parametrize("name", NAMES)
def test_vit_loads_a_saved_keras_model_at_another_size_and_classes(name, tmp_path):
    model = build(name)
    path = str(tmp_path / "model.keras")
    model.save(path)
    spec, kwargs = FAMILIES[name]
    same = keras_vit.ViT(spec, image_size=16, weights=path, **kwargs)
    np.testing.assert_allclose(to_numpy(same(IMAGES)), to_numpy(model(IMAGES)), atol=1e-6)
    other = keras_vit.ViT(spec, image_size=24, weights=path,
                          **{**kwargs, "num_classes": 10})
    expected = finetune.adapt(model, image_size=24, num_classes=10)
    assert [w.path for w in other.weights] == [w.path for w in expected.weights]
    for got, want in zip(other.weights, expected.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want), err_msg=got.path)


# The Hub layouts `save_pretrained` writes for each family (transformers writes DINOv2's but not
# CLIP's or SigLIP's; timm writes all four, folding the [class] token's position embedding).
HUB_LAYOUTS = [("dinov2_registers", "transformers"), ("swiglu", "transformers"),
               *((name, "timm") for name in NAMES)]


@pytest.mark.parametrize("name, layout", HUB_LAYOUTS)
def test_vit_loads_a_hub_folder_at_another_size_and_classes(name, layout, tmp_path):
    # What `ViT(weights=folder)` and the training binary's --init_from read.
    model = build(name)
    folder = checkpoints.save_pretrained(model, tmp_path / "hub", layout=layout)
    reloaded = keras_vit.ViT(weights=folder)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(to_numpy(reloaded(IMAGES)), to_numpy(model(IMAGES)),
                               rtol=1e-5, atol=1e-5)
    adapted = keras_vit.ViT(weights=folder, image_size=24, num_classes=10)
    expected = finetune.adapt(reloaded, image_size=24, num_classes=10)
    assert [w.path for w in adapted.weights] == [w.path for w in expected.weights]
    for got, want in zip(adapted.weights, expected.weights, strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=1e-6, atol=1e-6,
                                   err_msg=got.path)


def test_input_normalization_folds_into_a_patch_embedding_without_bias_only_at_mean_half():
    model = build("clip")
    before = to_numpy(model(IMAGES))
    # mean 0.5: a pure scale, exact without a bias. IMAGES were (x / 255 - 0.5) / 0.25 of
    # pixels x; the model now takes x / 127.5 - 1, which is IMAGES / 2.
    finetune.fold_input_normalization(model, mean=[0.5] * 3, std=[0.25] * 3)
    np.testing.assert_allclose(to_numpy(model(IMAGES / 2)), before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"patch embedding without bias: its input "
                                         r"normalization mean \[0.48, 0.5, 0.5\]"):
        finetune.fold_input_normalization(model, mean=[0.48, 0.5, 0.5], std=[0.25] * 3)


# -- Any image size ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_dynamic_image_size_equals_the_fixed_size_model_at_its_own_size(name):
    model = build(name)
    spec, kwargs = FAMILIES[name]
    dynamic = keras_vit.ViT(spec, image_size=16, dynamic_image_size=True, **kwargs)
    assert dynamic.input_shape == (None, None, None, 3)
    dynamic.set_weights(model.get_weights())
    for height, width in [(16, 16), (24, 32)]:
        fixed = model if (height, width) == (16, 16) else finetune.adapt(
            model, image_size=(height, width))
        batch = images(height, width)
        expected = to_numpy(fixed(batch))
        assert np.abs(expected).max() > 0.1
        np.testing.assert_allclose(to_numpy(dynamic(batch)), expected, rtol=1e-5, atol=1e-5)


# -- Gradient checkpointing -------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_remat_gradients_equal_those_without(name, remat_calls):
    # Two blocks, with dropout and stochastic depth: the masks are drawn once, before the
    # recomputed part, so that a recomputation applies the same ones.
    spec, kwargs = FAMILIES[name]
    spec = dataclasses.replace(spec, depth=2)
    options = dict(kwargs, dropout=0.1, drop_path_rate=0.3)

    def make(**remat):
        keras.utils.set_random_seed(5)  # the same random draws for every model
        model = keras_vit.ViT(spec, image_size=16, **options, **remat)
        randomize(model, seed=3)
        return model

    def make_in_scope():
        with keras.RematScope(mode="full"):
            return make()

    x = images(seed=4)
    model = make()
    loss, grads = loss_and_gradients(model, x)
    assert not remat_calls
    # A scope that selects activation functions selects no block (the block's `activation`
    # is the form of its MLP, not a Keras activation): same outputs, nothing recomputed.
    with keras.RematScope(mode="activations"):
        activations_scope = make()
    np.testing.assert_array_equal(to_numpy(activations_scope(x)), to_numpy(model(x)))
    activations_scope(x, training=True)
    assert not remat_calls
    assert max(np.abs(g).max() for g in grads) > 1e-2
    for make_remat in (lambda: make(remat=True), make_in_scope):
        remat_model = make_remat()
        count = len(remat_calls)
        remat_loss, remat_grads = loss_and_gradients(remat_model, x)
        assert len(remat_calls) - count >= 2  # both blocks recomputed
        assert remat_loss == pytest.approx(loss, rel=1e-5)
        for variable, grad, remat_grad in zip(remat_model.trainable_variables, grads,
                                              remat_grads, strict=True):
            np.testing.assert_allclose(remat_grad, grad, rtol=1e-4,
                                       atol=1e-5 * max(np.abs(grad).max(), 1e-3),
                                       err_msg=variable.path)


# -- LoRA -------------------------------------------------------------------------------------

BLOCK_TARGETS = ("qkv", "attention_output", "mlp_dense_1", "mlp_dense_2")
MAP_TARGETS = ("query", "key_value", "attention_output", "mlp_dense_1", "mlp_dense_2")


def lora_paths(model):
    return sorted(layer.path for layer in lora.lora_layers(model))


@pytest.mark.parametrize("name", NAMES)
def test_lora_adapters_save_load_and_merge(name, tmp_path):
    model = build(name, num_classes=3)
    before = to_numpy(model(IMAGES))
    finetune.enable_lora(model, 2)
    np.testing.assert_array_equal(to_numpy(model(IMAGES)), before)  # B starts at zero
    expected = [f"encoder_block_0/{n}" for n in BLOCK_TARGETS]
    if name == "siglip_map":
        # Every role also adapts the same projections of the MAP head.
        expected += [f"pooling/{n}" for n in MAP_TARGETS]
    assert lora_paths(model) == sorted(expected)
    block = model_layers.transformer_blocks(model)[0]
    # SwiGLU's packed gate|value kernel takes one adapter of 2 * mlp_dim outputs.
    assert tuple(block.mlp_dense_1.lora_kernel_b.shape) == (
        2, 256 if name == "swiglu" else 128)
    # Rank 2, width 32, MLP 128: qkv 2 (32 + 96) + attention_output 2 (32 + 32) + mlp_in
    # 2 (32 + 128) (SwiGLU: 2 (32 + 256)) + mlp_out 2 (128 + 32) = 1,024 (SwiGLU 1,280); the
    # MAP head's query 2 (32 + 32) + key_value 2 (32 + 64) + attention_output 2 (32 + 32)
    # + MLP 2 (32 + 128) twice = 1,088; head 32 * 3 + 3.
    adapters = {"swiglu": 1280, "siglip_map": 1024 + 1088}.get(name, 1024)
    trainable, total = lora.count_parameters(model)
    assert trainable == adapters + 99
    assert total == model.count_params()
    # LayerScale gammas, LayerNorms and the probe are frozen without train_norms.
    assert {v.path for v in model.trainable_variables if "lora" not in v.path} == {
        "head/kernel", "head/bias"}

    rng = np.random.default_rng(2)
    for layer in lora.lora_layers(model):
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    adapted = to_numpy(model(IMAGES))
    assert np.abs(adapted - before).max() > 1e-2
    path = str(tmp_path / "adapters.npz")
    lora.save_lora_weights(model, path)
    fresh = build(name, num_classes=3)
    finetune.load_lora_weights(fresh, path)
    assert lora_paths(fresh) == lora_paths(model)
    np.testing.assert_allclose(to_numpy(fresh(IMAGES)), adapted, rtol=1e-5, atol=1e-5)
    merged = finetune.merge_lora(model)
    assert lora.lora_layers(merged) == []
    np.testing.assert_allclose(to_numpy(merged(IMAGES)), adapted, rtol=1e-4, atol=1e-4)
    # A merged SigLIP model saves and reloads as a plain one.
    merged.save(tmp_path / "merged.keras")
    reloaded = keras.saving.load_model(tmp_path / "merged.keras")
    np.testing.assert_allclose(to_numpy(reloaded(IMAGES)), adapted, rtol=1e-4, atol=1e-4)


def test_lora_attention_target_adapts_the_map_heads_attention_and_training_moves_it():
    model = finetune.adapt(build("siglip_map"), num_classes=3)
    finetune.enable_lora(model, 2, targets="attention")
    assert lora_paths(model) == sorted(
        ["encoder_block_0/qkv", "encoder_block_0/attention_output", "pooling/query",
         "pooling/key_value", "pooling/attention_output"])
    assert lora.target_layers(model, "mlp_out")[-1].path == "pooling/mlp_dense_2"
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Two epochs: in the first, the zero head passes no gradient to the adapters.
    model.fit(IMAGES, np.array([0, 1, 2]), batch_size=3, epochs=2, verbose=0, shuffle=False)
    pooling = model.get_layer("pooling")
    for layer in (pooling.query, pooling.key_value, pooling.attention_output):
        assert np.abs(to_numpy(layer.lora_kernel_b)).max() > 1e-5, layer.path


@pytest.mark.parametrize("name", NAMES)
def test_lora_train_norms_trains_layer_norms_and_layer_scale(name, tmp_path):
    model = build(name, num_classes=3)
    finetune.enable_lora(model, 2, train_norms=True)
    trained = {v.path for v in model.trainable_variables if "lora" not in v.path}
    norms = {"encoder_block_0/attention_norm", "encoder_block_0/mlp_norm", "encoder_norm"}
    norms |= {"pre_norm"} if name == "clip" else set()
    norms |= {"pooling/norm"} if name == "siglip_map" else set()
    expected = {f"{n}/{w}" for n in norms for w in ("gamma", "beta")}
    if FAMILIES[name][0].layer_scale is not None:
        expected |= {"encoder_block_0/attention_scale/gamma", "encoder_block_0/mlp_scale/gamma"}
    assert trained == expected | {"head/kernel", "head/bias"}
    # Trained values (norms and gammas too) saved; loaded into a fresh copy of the pre-trained
    # model, they are back, and the same variables train.
    rng = np.random.default_rng(4)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    path = str(tmp_path / "adapters.npz")
    lora.save_lora_weights(model, path)
    fresh = build(name, num_classes=3)
    assert np.abs(to_numpy(fresh(IMAGES)) - to_numpy(model(IMAGES))).max() > 1e-2
    finetune.load_lora_weights(fresh, path)
    assert {v.path for v in fresh.trainable_variables} == {
        v.path for v in model.trainable_variables}
    np.testing.assert_allclose(to_numpy(fresh(IMAGES)), to_numpy(model(IMAGES)),
                               rtol=1e-5, atol=1e-5)


# -- int8 quantization ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _frozen_heap():
    # As in quantization_test: Dense.quantize runs a full gc.collect() per layer.
    gc.freeze()
    yield
    gc.unfreeze()


def quantize(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the float layers' "no quantize method" warnings
        model.quantize("int8")


def kernels(model):
    return {v.path: keras.backend.standardize_dtype(v.dtype) for v in model.weights
            if v.path.endswith("/kernel")}


@pytest.mark.parametrize("name", NAMES)
def test_int8_quantization_is_close_to_float_and_reloads(name, tmp_path, _frozen_heap):
    model = build(name)
    reference = to_numpy(model(IMAGES))
    quantize(model)
    int8 = {path for path, dtype in kernels(model).items() if dtype == "int8"}
    expected = {f"encoder_block_0/{n}/kernel" for n in BLOCK_TARGETS}
    expected |= {"head/kernel"} if name == "clip" else set()
    expected |= {f"pooling/{n}/kernel" for n in MAP_TARGETS} if name == "siglip_map" else set()
    assert int8 == expected
    # LayerScale, the tokens and the patch embedding stay float.
    floats = {v.path for v in model.weights
              if keras.backend.standardize_dtype(v.dtype) == "float32"}
    assert "patch_embedding/projection/kernel" in floats
    if FAMILIES[name][0].layer_scale is not None:
        assert {"encoder_block_0/attention_scale/gamma",
                "encoder_block_0/mlp_scale/gamma"} <= floats
    out = to_numpy(model(IMAGES))
    # As in quantization_test: int8 weights and activations, within 10% of the largest output.
    scale = np.abs(reference).max()
    error = np.abs(out - reference).max()
    assert scale > 0.1 and 0 < error <= 0.1 * scale, (error, scale)

    path = str(tmp_path / "int8.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert kernels(reloaded) == kernels(model)
    for original, loaded in zip(model.weights, reloaded.weights, strict=True):
        assert original.path == loaded.path
        np.testing.assert_array_equal(to_numpy(loaded), to_numpy(original), err_msg=loaded.path)
    np.testing.assert_allclose(to_numpy(reloaded(IMAGES)), out, rtol=0, atol=1e-6)


def test_map_head_config_records_its_quantized_sublayers(_frozen_heap):
    from keras_vit.layers import MAPHead

    head = MAPHead(num_heads=2, mlp_dim=16, name="head")
    tokens = images(5, 8)[..., 0]  # (3, 5, 8)
    head(tokens)
    float_config = head.get_config()
    for name in ("key_value", "mlp_dense_2"):
        getattr(head, name).quantize("int8")
    config = head.get_config()
    assert {k: v for k, v in config.items() if k != "dtype"} == {
        k: v for k, v in float_config.items() if k != "dtype"}
    policy = keras.dtype_policies.deserialize(config["dtype"])
    assert isinstance(policy, keras.dtype_policies.DTypePolicyMap)
    assert {name: policy[name].name for name in policy} == {
        "key_value": "int8_from_float32", "mlp_dense_2": "int8_from_float32"}
    copy = MAPHead.from_config({**config, "name": "renamed"})
    copy.build((None, 5, 8))
    assert [(v.path.split("/", 1)[1], v.dtype) for v in copy.weights] == [
        (v.path.split("/", 1)[1], v.dtype) for v in head.weights]
    copy.set_weights(head.get_weights())
    np.testing.assert_array_equal(to_numpy(copy(tokens)), to_numpy(head(tokens)))
    assert copy.get_config()["dtype"] == config["dtype"]


# -- Few-shot linear probes -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["siglip_map", "clip"])
def test_fewshot_features_are_the_pooled_representation(name):
    model = build(name, num_classes=5 if name == "siglip_map" else 8)
    features_model = fewshot.feature_model(model)
    pooled = layer_output(model, "pooling")
    assert pooled.shape == (3, 32)
    features, labels = fewshot.extract_features(features_model, [(IMAGES, np.arange(3))] * 2)
    assert features.shape == (6, 32) and labels.tolist() == [0, 1, 2, 0, 1, 2]
    np.testing.assert_allclose(features[:3], pooled, rtol=1e-5, atol=1e-5)
    # Before the head: CLIP's projection (and a SigLIP head) map the features to the outputs.
    head = model.get_layer("head")
    projected = features[:3] @ to_numpy(head.kernel) + to_numpy(head.bias)
    np.testing.assert_allclose(projected, to_numpy(model(IMAGES)), rtol=1e-4, atol=1e-4)
    # A tower without a head (num_classes=0) is its own feature model: the same features.
    backbone = build(name, num_classes=0)
    backbone.set_weights(model.get_weights()[:-2])
    assert fewshot.feature_model(backbone) is backbone
    np.testing.assert_allclose(to_numpy(backbone(IMAGES)), pooled, rtol=1e-5, atol=1e-5)
