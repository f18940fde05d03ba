"""LoRA fine-tuning (`keras_vit.finetune.enable_lora` and friends), on every backend."""

import dataclasses
import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import finetune, lora, model_layers, variants

IMAGES = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
LABELS = np.array([0, 1, 2, 1])


def pretrained(**kwargs):
    """A 2-block ViT at 16x16 with random non-zero weights everywhere (head included: a zero
    head would make every model's logits equal)."""
    spec = dataclasses.replace(variants.parse_variant("mu/4"), depth=2)
    model = keras_vit.ViT(spec, image_size=16, num_classes=3, **kwargs)
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    return model


def set_adapters(model, seed=2):
    """Random non-zero A and B on every LoRA layer (B starts at zero: no effect until trained)."""
    rng = np.random.default_rng(seed)
    for layer in lora.lora_layers(model):
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))


def predict(model, images=IMAGES):
    return keras.ops.convert_to_numpy(model(images, training=False))


def fit_two_steps(model):
    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(IMAGES, LABELS, batch_size=4, epochs=2, verbose=0, shuffle=False)


def test_adapters_change_nothing_until_trained_and_only_they_and_the_head_train():
    model = pretrained()
    before = predict(model)
    frozen = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    assert finetune.enable_lora(model, 4) is model
    np.testing.assert_array_equal(predict(model), before)
    # Width 32, MLP 128, rank 4, two blocks: qkv 4 (32 + 96), attention_output 4 (32 + 32),
    # mlp_in 4 (32 + 128), mlp_out 4 (128 + 32) = 2,048 per block; head 32 * 3 + 3.
    trainable, total = lora.count_parameters(model)
    assert trainable == 2 * 2048 + 99
    assert total == model.count_params()
    names = sorted(v.path for v in model.trainable_variables)
    assert names == sorted(
        [f"encoder_block_{i}/{layer}/lora_kernel_{ab}" for i in range(2)
         for layer in ("qkv", "attention_output", "mlp_dense_1", "mlp_dense_2")
         for ab in "ab"] + ["head/kernel", "head/bias"])
    fit_two_steps(model)
    after = predict(model)
    assert np.abs(after - before).max() > 1e-2
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if variable.path in frozen and not variable.trainable:
            np.testing.assert_array_equal(value, frozen[variable.path], err_msg=variable.path)
    moved = [layer for layer in lora.lora_layers(model)
             if np.abs(keras.ops.convert_to_numpy(layer.lora_kernel_b)).max() > 1e-4]
    assert len(moved) == 8


@pytest.mark.parametrize("targets, layers", [
    ("attention", ["qkv", "attention_output"]),
    (["mlp"], ["mlp_dense_1", "mlp_dense_2"]),
    ("qkv, mlp_out", ["qkv", "mlp_dense_2"]),
    (("all",), ["qkv", "attention_output", "mlp_dense_1", "mlp_dense_2"]),
])
def test_targets_choose_the_projections_of_every_block(targets, layers):
    model = pretrained()
    finetune.enable_lora(model, 2, targets=targets, alpha=4)
    chosen = lora.lora_layers(model)
    assert [layer.path for layer in chosen] == [
        f"encoder_block_{i}/{name}" for i in range(2) for name in layers]
    assert {(layer.lora_rank, layer.lora_alpha) for layer in chosen} == {(2, 4)}


def test_train_norms_trains_every_layer_norm():
    model = pretrained()
    finetune.enable_lora(model, 2, targets="qkv", train_norms=True)
    norms = sorted({v.path.rsplit("/", 1)[0] for v in model.trainable_variables
                    if v.path.endswith(("gamma", "beta"))})
    assert norms == ["encoder_block_0/attention_norm", "encoder_block_0/mlp_norm",
                     "encoder_block_1/attention_norm", "encoder_block_1/mlp_norm",
                     "encoder_norm"]


def test_merged_model_computes_the_adapted_model_without_adapters():
    model = pretrained()
    base = predict(model)
    kernel = keras.ops.convert_to_numpy(model.get_layer("encoder_block_1").qkv.kernel)
    finetune.enable_lora(model, 3, alpha=6)
    set_adapters(model)
    adapted = predict(model)
    assert np.abs(adapted - base).max() > 0.1  # the adapters matter
    merged = finetune.merge_lora(model)
    assert lora.lora_layers(merged) == []
    assert merged.count_params() == pretrained().count_params()
    assert len(merged.trainable_variables) == len(merged.weights)
    np.testing.assert_allclose(predict(merged), adapted, rtol=1e-5, atol=1e-5)
    # Each merged kernel is W + (alpha / r) A B.
    layer = model.get_layer("encoder_block_1").qkv
    want = (kernel + 2.0 * keras.ops.convert_to_numpy(layer.lora_kernel_a)
            @ keras.ops.convert_to_numpy(layer.lora_kernel_b))
    got = keras.ops.convert_to_numpy(merged.get_layer("encoder_block_1").qkv.kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_saved_lora_model_reloads_merged(tmp_path):
    model = pretrained()
    finetune.enable_lora(model, 2)
    set_adapters(model)
    path = str(tmp_path / "lora.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert lora.lora_layers(reloaded) == []
    np.testing.assert_allclose(predict(reloaded), predict(model), rtol=1e-5, atol=1e-5)


def test_adapter_file_holds_only_what_was_trained_and_restores_it(tmp_path):
    base_weights = pretrained().get_weights()
    model = pretrained()
    finetune.enable_lora(model, 2, targets="attention", train_norms=True)
    set_adapters(model)
    model.get_layer("head").kernel.assign(np.full((32, 3), 0.05, "float32"))
    path = str(tmp_path / "adapters.npz")
    finetune.save_lora_weights(model, path)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert sorted(arrays) == sorted(
        [v.path for v in model.trainable_variables] + ["__lora_settings__"])
    # 2 blocks x (qkv 2 (32 + 96) + attention_output 2 (32 + 32)) + head 99 + norms 5 x 64.
    assert sum(a.size for k, a in arrays.items() if k != "__lora_settings__") == 2 * 384 + 99 + 320
    assert os.listdir(tmp_path) == ["adapters.npz"]  # written in place, no temporary left

    # A fresh copy of the pre-trained model: LoRA is enabled as the file says.
    fresh = pretrained()
    fresh.set_weights(base_weights)
    finetune.load_lora_weights(fresh, path)
    np.testing.assert_allclose(predict(fresh), predict(model), rtol=1e-6, atol=1e-6)
    assert [(layer.path, layer.lora_rank) for layer in lora.lora_layers(fresh)] == [
        (layer.path, layer.lora_rank) for layer in lora.lora_layers(model)]
    assert sorted(v.path for v in fresh.trainable_variables) == sorted(
        v.path for v in model.trainable_variables)


def test_adapter_file_errors(tmp_path):
    model = pretrained()
    with pytest.raises(ValueError,
                       match=r"has no LoRA layers: call keras_vit.finetune.enable_lora"):
        finetune.save_lora_weights(model, str(tmp_path / "a.npz"))
    finetune.enable_lora(model, 2)
    with pytest.raises(ValueError, match=r"LoRA adapter path '.*a.h5' must end in '.npz'"):
        finetune.save_lora_weights(model, str(tmp_path / "a.h5"))
    path = str(tmp_path / "a.npz")
    finetune.save_lora_weights(model, path)
    # Another head: the shapes are named.
    other = finetune.adapt(pretrained(), num_classes=5)
    weights = other.get_weights()
    with pytest.raises(ValueError, match=r"head/kernel has shape \(32, 3\), the model's "
                                         r"variable has \(32, 5\)"):
        finetune.load_lora_weights(other, path)
    # Nothing was assigned before the check failed.
    for got, want in zip(other.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    # Another rank.
    ranked = pretrained()
    finetune.enable_lora(ranked, 4)
    with pytest.raises(ValueError, match=r"holds adapters with rank 2; model .* has LoRA with "
                                         r"rank 4"):
        finetune.load_lora_weights(ranked, path)
    np.savez(str(tmp_path / "plain.npz"), x=np.zeros(3))
    with pytest.raises(ValueError, match=r"is not a LoRA adapter file"):
        finetune.load_lora_weights(pretrained(), str(tmp_path / "plain.npz"))
    # Read by the one safe .npz reader (keras_vit.checkpoints.read_npz): never unpickled.
    np.savez(str(tmp_path / "pickled.npz"), x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"array 'x' holds pickled Python objects"):
        finetune.load_lora_weights(pretrained(), str(tmp_path / "pickled.npz"))


def test_bad_arguments_are_clear_errors():
    model = pretrained()
    with pytest.raises(ValueError, match=r"Unknown LoRA target 'query': expected roles qkv, "
                                         r"attention_output, mlp_in, mlp_out or groups"):
        finetune.enable_lora(model, 2, targets="query")
    with pytest.raises(ValueError, match=r"rank"):
        finetune.enable_lora(model, 0)
    with pytest.raises(ValueError, match=r"alpha must be a positive number or None, received -1"):
        finetune.enable_lora(model, 2, alpha=-1)
    with pytest.raises(ValueError, match=r"targets is empty"):
        finetune.enable_lora(model, 2, targets="")
    assert lora.lora_layers(model) == []  # nothing half-done
    assert len(model.trainable_variables) == len(model.weights)
    finetune.enable_lora(model, 2)
    with pytest.raises(ValueError, match=r"already has LoRA on 8 layers"):
        finetune.enable_lora(model, 2)
    with pytest.raises(ValueError, match=r"has no TransformerBlock"):
        finetune.enable_lora(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), 2)


def test_dynamic_image_size_and_hybrid_models_take_lora():
    dynamic = pretrained(dynamic_image_size=True)
    finetune.enable_lora(dynamic, 2)
    set_adapters(dynamic)
    wide = np.random.default_rng(3).uniform(-1, 1, (2, 16, 24, 3)).astype("float32")
    np.testing.assert_allclose(predict(finetune.merge_lora(dynamic), wide),
                               predict(dynamic, wide), rtol=1e-5, atol=1e-5)
    spec = dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                               resnet_width=32)
    hybrid = keras_vit.ViT(spec, image_size=32, num_classes=3)
    finetune.enable_lora(hybrid, 2, targets="mlp")
    # The ResNet stem is frozen with the rest.
    stem = [v for v in hybrid.weights if v.path.startswith(("conv_root", "gn_root"))]
    assert stem and not any(v.trainable for v in stem)
    assert len(lora.lora_layers(hybrid)) == 2
    assert model_layers.find_layer(hybrid, "head").trainable
