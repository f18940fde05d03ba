"""Fine-tuning with the training binary: `--init_from` and the paper's recipe as defaults."""

import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import finetune, lora, model_layers
from training import config as config_lib
from training import flags as training_flags
from training import train


@pytest.fixture(scope="module")
def pretrained(tfds_data_dir, tmp_path_factory, tiny_config):
    """A tiny token-pooling ViT trained on 16x16 digits (a 4x4 grid), saved as model.keras."""
    workdir = str(tmp_path_factory.mktemp("pretrained"))
    config = tiny_config(tfds_data_dir, pooling="token", representation_size=16, train_steps=150,
                         mixup=0.0)
    model, metrics = train.train_and_evaluate(config, workdir)
    return os.path.join(workdir, "model.keras"), model, metrics


def test_for_finetuning_takes_the_recipe_then_the_overrides():
    config = config_lib.Config.for_finetuning("x.keras", learning_rate=0.03, image_size=48)
    assert (config.optimizer, config.weight_decay, config.schedule) == ("sgd", 0.0, "cosine")
    assert (config.grad_clip_norm, config.warmup_steps, config.mixup) == (1.0, 100, 0.0)
    assert (config.learning_rate, config.image_size, config.init_from) == (0.03, 48, "x.keras")


def config_from_argv(*args):
    """The `Config` of `python -m training.train ARGS` (the flags are reset afterwards)."""
    training_flags.define_training_flags()
    try:
        training_flags.FLAGS(["train", *args])
        return training_flags.config_from_flags()
    finally:
        training_flags.FLAGS.unparse_flags()


def test_init_from_flag_switches_the_unset_flags_to_the_recipe(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"")
    config = config_from_argv(f"--workdir={tmp_path}", f"--init_from={path}",
                              "--learning_rate=0.03", "--epochs=3")
    assert (config.optimizer, config.weight_decay, config.mixup) == ("sgd", 0.0, 0.0)
    # Given on the command line: kept.
    assert (config.learning_rate, config.epochs) == (0.03, 3)
    config = config_from_argv(f"--workdir={tmp_path}")
    assert (config.optimizer, config.weight_decay, config.init_from) == ("adamw", 0.05, None)


def test_init_from_errors(tmp_path):
    with pytest.raises(ValueError, match=r"init_from file '.*missing.keras' does not exist"):
        config_lib.Config(init_from=str(tmp_path / "missing.keras")).validate()
    with pytest.raises(ValueError, match=r"init_from must be a path to a '.keras' or "
                                         r"'.weights.h5' file, or a Hub checkpoint "
                                         r"\('hf://ORG/NAME', a folder with config.json and "
                                         r"safetensors\), received 'model.pt'"):
        config_lib.Config(init_from="model.pt").validate()
    with pytest.raises(ValueError, match=r"Unknown init_position_embeddings 'zeros'"):
        config_lib.Config(init_position_embeddings="zeros").validate()


def test_fine_tune_at_a_higher_resolution(pretrained, tfds_data_dir, tmp_path, tiny_config):
    path, source, source_metrics = pretrained
    config = tiny_config(tfds_data_dir, **{**config_lib.FINETUNE_DEFAULTS, "init_from": path,
                                           "image_size": 24, "train_steps": 0, "epochs": 1,
                                           "warmup_steps": 5})
    start = []
    original_adapt = finetune.adapt

    def spy(*args, **kwargs):
        model = original_adapt(*args, **kwargs)
        start.append([np.array(w) for w in model.get_weights()])
        return model

    finetune.adapt = spy
    try:
        model, metrics = train.train_and_evaluate(config, str(tmp_path))
    finally:
        finetune.adapt = original_adapt
    assert model.input_shape == (None, 24, 24, 1)
    # 16x16 images in 4x4 patches -> 4x4 grid; at 24x24 a 6x6 grid: 1 + 36 rows.
    assert model.get_layer("position_embedding").embeddings.shape == (1, 37, 32)
    # Digits again: the classes match, so the trained head and pre-logits stay.
    assert [l.name for l in model.layers][-2:] == ["pre_logits", "head"]
    # The run started from the source's weights, the position embeddings interpolated.
    (initial,) = start
    expected = finetune.adapt(source, image_size=24)
    for got, want in zip(initial, expected.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert metrics["global_step"] == 1438 // 16
    # One epoch of SGD on a model that saw 150 steps: it learns (chance is 0.1; the source
    # reaches 0.27 at 16x16, this 0.35 at 24x24 on the 2-core CPU).
    assert metrics["eval_accuracy"] > 0.2
    saved = keras.saving.load_model(os.path.join(tmp_path, "model.keras"))
    assert saved.input_shape == (None, 24, 24, 1)


def test_fine_tune_to_other_classes_attaches_a_zero_head(pretrained, tfds_data_dir, tmp_path,
                                                         tiny_config):
    path, source, _ = pretrained
    # The same model with a 3-class head: fine-tuning on digits' 10 classes replaces it.
    three = finetune.adapt(source, num_classes=3)
    three_path = str(tmp_path / "three.keras")
    three.save(three_path)
    config = tiny_config(tfds_data_dir, **{**config_lib.FINETUNE_DEFAULTS,
                                           "init_from": three_path, "train_steps": 1, "warmup_steps": 0,
                                           "learning_rate": 1e-9, "remat": True})
    model, _ = train.train_and_evaluate(config, str(tmp_path / "run"))
    # --remat applies to a model from --init_from too (saved without it).
    assert [block.remat for block in model_layers.transformer_blocks(model)] == [True]
    assert "pre_logits" not in [l.name for l in model.layers]
    head = model.get_layer("head")
    assert head.kernel.shape == (32, 10)
    # One step at a negligible rate: the head is still (almost exactly) zero.
    assert float(np.abs(np.array(head.kernel)).max()) < 1e-6


def test_reinitialized_position_embeddings_differ(pretrained, tfds_data_dir, tmp_path,
                                                  tiny_config):
    path, source, _ = pretrained
    config = tiny_config(tfds_data_dir, init_from=path, image_size=24, train_steps=1,
                         learning_rate=1e-9, warmup_steps=0,
                         init_position_embeddings="reinitialize")
    model, _ = train.train_and_evaluate(config, str(tmp_path))
    interpolated = finetune.adapt(source, image_size=24)
    got = np.array(model.get_layer("position_embedding").embeddings)
    want = np.array(interpolated.get_layer("position_embedding").embeddings)
    assert got.shape == want.shape == (1, 37, 32)
    assert np.abs(got - want).max() > 0.01


def test_grayscale_data_is_given_to_an_rgb_model_as_rgb(tfds_data_dir, tmp_path, tiny_config):
    import keras_vit

    path = str(tmp_path / "rgb.keras")
    keras_vit.ViT("mu/4", image_size=8, num_classes=10, num_channels=3).save(path)
    config = tiny_config(tfds_data_dir, init_from=path, train_steps=2, warmup_steps=0)
    model, metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert model.input_shape == (None, 8, 8, 3)
    assert metrics["global_step"] == 2


def test_lora_flags_and_errors(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"")
    config = config_from_argv(f"--workdir={tmp_path}", f"--init_from={path}", "--lora_rank=8",
                              "--lora_targets=attention,mlp_in", "--lora_train_norms")
    assert (config.lora_rank, config.lora_targets, config.lora_train_norms) == (
        8, "attention,mlp_in", True)
    assert config.optimizer == "sgd"  # the fine-tuning recipe, LoRA or not
    with pytest.raises(ValueError, match=r"lora_rank=4 needs init_from: LoRA adapts a "
                                         r"pre-trained model"):
        config_lib.Config(lora_rank=4).validate()
    with pytest.raises(ValueError, match=r"Unknown LoRA target 'q'"):
        config_lib.Config(init_from=str(path), lora_rank=4, lora_targets="q").validate()
    with pytest.raises(ValueError, match=r"lora_rank must be an integer >= 0, received -1"):
        config_lib.Config(init_from=str(path), lora_rank=-1).validate()


def test_lora_fine_tuning_trains_adapters_and_head_saves_them_and_resumes(
        pretrained, tfds_data_dir, tmp_path, tiny_config):
    import tensorflow as tf

    path, source, _ = pretrained
    workdir = str(tmp_path / "lora")
    config = tiny_config(tfds_data_dir, **{
        **config_lib.FINETUNE_DEFAULTS, "init_from": path, "lora_rank": 2,
        "lora_targets": "attention,mlp_in", "train_steps": 2, "warmup_steps": 0,
        "checkpoint_every_steps": 2, "learning_rate": 0.1, "export": True})
    model, metrics = train.train_and_evaluate(config, workdir)
    # mu/4 (1 block, width 32, MLP 128), rank 2: qkv 2 (32 + 96) + attention_output
    # 2 (32 + 32) + mlp_in 2 (32 + 128) = 704 adapter weights; the kept head (digits again)
    # 16 x 10 + 10 behind the frozen 16-wide pre-logits.
    assert metrics["num_trainable_parameters"] == 704 + 170
    assert metrics["num_parameters"] == source.count_params() + 704
    # Frozen weights are the pre-trained ones, bit for bit; the adapters and the head moved.
    start = {v.path: np.array(v) for v in finetune.adapt(source, image_size=8).weights}
    moved = []
    for variable in model.weights:
        if variable.trainable:
            moved.append(np.abs(np.array(variable) - start.get(variable.path, 0)).max() > 1e-6)
        else:
            np.testing.assert_array_equal(np.array(variable), start[variable.path],
                                          err_msg=variable.path)
    assert sum(moved) >= 5  # the three B's and the head's kernel and bias (A may move too)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype("float32")
    want = np.array(model(images, training=False))
    # model.keras is the merged model; lora_weights.npz restores the run on the source.
    saved = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    assert lora.lora_layers(saved) == []
    np.testing.assert_allclose(np.array(saved(images)), want, rtol=1e-5, atol=1e-5)
    restored = finetune.load_lora_weights(finetune.adapt(source, image_size=8),
                                          os.path.join(workdir, "lora_weights.npz"))
    np.testing.assert_allclose(np.array(restored(images)), want, rtol=1e-6, atol=1e-6)
    serving = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    assert serving.signatures["serving_default"] is not None
    # The checkpoint holds the adapters (under the optimizer's references to its variables),
    # and a rerun restores them: fresh ones would have B = 0, and A = B = 0 would stop LoRA
    # learning (both gradients 0).
    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", "ckpt-2"))
    tensors = [reader.get_tensor(key) for key in reader.get_variable_to_shape_map()]
    layers = lora.lora_layers(model)
    assert len(layers) == 3
    for layer in layers:
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            assert any(np.array_equal(np.array(variable), t) for t in tensors), variable.path
    resumed, metrics = train.train_and_evaluate(config, workdir)
    assert (metrics["resumed_from_step"], metrics["global_step"]) == (2, 2)
    for got, want in zip(lora.lora_layers(resumed), layers):
        np.testing.assert_array_equal(np.array(got.lora_kernel_b), np.array(want.lora_kernel_b))
        np.testing.assert_array_equal(np.array(got.lora_kernel_a), np.array(want.lora_kernel_a))
    assert np.abs(np.array(layers[0].lora_kernel_b)).max() > 1e-4


@pytest.mark.slow
def test_higher_resolution_transfer_on_digits(tfds_data_dir, tmp_path, tiny_config):
    """The proof of benchmarks/finetune_transfer.py in miniature: a 1-block ViT pre-trained on
    16x16 digits (4x4 grid), moved to 24x24 (6x6 grid). Interpolated position embeddings keep
    much of what was learned; re-initialized ones lose it, and the same fine-tuning budget does
    not win it back. Seen on the 2-core CPU: pre-trained 0.886-0.889; at 24x24 untrained 0.45-0.57
    interpolated against 0.11-0.22 re-initialized; fine-tuned 100 steps 0.864-0.866 interpolated
    against 0.60-0.65 re-initialized."""
    pre_config = tiny_config(tfds_data_dir, image_size=16, pooling="token", train_steps=400,
                             global_batch_size=32, warmup_steps=20, mixup=0.0,
                             checkpoint_every_steps=1000)
    source, source_metrics = train.train_and_evaluate(pre_config, str(tmp_path / "pre"))
    path = str(tmp_path / "pre" / "model.keras")
    pretrained = source_metrics["eval_accuracy"]
    assert pretrained > 0.8

    def accuracy(model, image_size):
        return train.evaluate_accuracy(model, "digits", data_dir=tfds_data_dir,
                                       image_size=image_size)

    # The helper measures what the binary's own evaluation measured.
    assert accuracy(source, 16) == pytest.approx(pretrained, abs=1e-9)
    interpolated = accuracy(finetune.adapt(source, image_size=24), 24)
    reinitialized = accuracy(
        finetune.adapt(source, image_size=24, position_embeddings="reinitialize"), 24)
    assert interpolated > 0.35
    assert interpolated > reinitialized + 0.15

    fine_tuned = {}
    for position_embeddings in ("interpolate", "reinitialize"):
        config = tiny_config(tfds_data_dir, **{
            **config_lib.FINETUNE_DEFAULTS, "init_from": path, "image_size": 24,
            "init_position_embeddings": position_embeddings, "train_steps": 100,
            "warmup_steps": 10, "global_batch_size": 32, "checkpoint_every_steps": 1000})
        _, metrics = train.train_and_evaluate(config, str(tmp_path / position_embeddings))
        assert metrics["global_step"] == 100
        fine_tuned[position_embeddings] = metrics["eval_accuracy"]
    assert fine_tuned["interpolate"] > fine_tuned["reinitialize"] + 0.1
    assert fine_tuned["interpolate"] > interpolated + 0.2
    assert fine_tuned["interpolate"] > pretrained - 0.05


def test_a_contradicting_variant_is_not_recorded(pretrained, tfds_data_dir, tmp_path,
                                                 tiny_config):
    import json

    from training import state

    path, source, _ = pretrained
    assert state.variant_of(source) == "mu/4"
    # --variant=S/16 beside a mu/4 init_from: the mu/4 is trained, and recorded as such.
    config = tiny_config(tfds_data_dir, init_from=path, variant="S/16",
                         image_size=source.input_shape[1], train_steps=1, warmup_steps=0)
    model, metrics = train.train_and_evaluate(config, str(tmp_path))
    assert model.count_params() == source.count_params()
    assert metrics["variant"] == "mu/4"
    assert json.loads((tmp_path / "config.json").read_text())["variant"] == "mu/4"
    custom = keras_vit.ViT(keras_vit.variants.VariantSpec(
        size="x", patch_size=8, hidden_dim=48, depth=2, mlp_dim=96, num_heads=4),
        image_size=16, num_classes=3)
    assert state.variant_of(custom) == "width 48, depth 2, MLP 96, 4 heads/8"
