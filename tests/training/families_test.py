"""The DINOv2 / CLIP / SigLIP towers (issue 33) through the binaries: exports and --init_from.

One small model per export format (exports are slow): the SigLIP-like model (`pooling="map"`,
no [class] token) as LiteRT and ONNX, the DINOv2-with-registers-like model (LayerScale, 4
register tokens) as a SavedModel; each file is run in its own runtime, in a process without
keras_vit, and compared with the Keras model on the same uint8 images. The library-side checks
of the same models are in `tests/families_features_test.py`.
"""

import dataclasses
import os
import textwrap

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="SavedModel and LiteRT export and the training binary "
                                    "need TensorFlow")

# Runs an exported file on the saved images without keras_vit, Keras or TensorFlow (LiteRT's
# interpreter, onnxruntime) or without keras_vit (a SavedModel, in TensorFlow); writes the
# logits. (export_formats_test and export_test check the files' signatures and descriptions.)
_RUNTIME = textwrap.dedent(
    """
    import json, sys
    import numpy as np

    path, inputs, output = sys.argv[1:4]
    images = np.load(inputs)["images"]
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        logits = Interpreter(model_path=path).get_signature_runner()(images=images)["logits"]
    elif path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        (logits,) = session.run(["logits"], {"images": images})
    else:
        import tensorflow as tf

        serve = tf.saved_model.load(path).signatures["serving_default"]
        logits = serve(images=tf.constant(images))["logits"].numpy()
    np.savez(output, logits=logits)
    print(json.dumps({"modules": sorted(
        m for m in sys.modules if m.split(".")[0] in ("keras_vit", "training"))}))
    """
)


def family_model(name, num_classes=5):
    """A 16x16 mu/4 of the family, weights ~ N(0, 0.2) (head included)."""
    import keras_vit
    from keras_vit import variants

    mu4 = variants.parse_variant("mu/4")
    spec, pooling = {
        "siglip_map": (mu4, "map"),
        "dinov2_registers": (dataclasses.replace(mu4, layer_scale=1e-5, num_registers=4),
                             "token"),
    }[name]
    model = keras_vit.ViT(spec, image_size=16, num_classes=num_classes, pooling=pooling)
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    return model


def run_exported(path, images, tmp_path, run_outside_checkout):
    description, outputs = run_outside_checkout(_RUNTIME, path, {"images": images}, tmp_path)
    assert description["modules"] == []
    return outputs["logits"]


def expected_logits(model, images):
    """The Keras model's logits on uint8 images at its own size, normalized x / 127.5 - 1."""
    return keras.ops.convert_to_numpy(model(images.astype("float32") / 127.5 - 1.0))


IMAGES = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("format, name, model_name", [
    pytest.param("saved_model", "saved_model", "dinov2_registers", marks=tensorflow_only),
    pytest.param("litert", "model.tflite", "siglip_map", marks=tensorflow_only),
    ("onnx", "model.onnx", "siglip_map"),
])
def test_export_runs_in_its_runtime_as_the_keras_model(format, name, model_name, tmp_path,
                                                       run_outside_checkout):
    if format == "onnx" and BACKEND == "jax":
        pytest.skip("ONNX export runs on the TensorFlow or PyTorch backend")
    from training import export

    model = family_model(model_name)
    expected = expected_logits(model, IMAGES)
    assert len({tuple(row) for row in expected.round(3)}) == len(IMAGES)  # per-image logits
    out = export.export(model, tmp_path / name, format=format)
    logits = run_exported(out, IMAGES, tmp_path, run_outside_checkout)
    assert logits.shape == (4, 5)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


@tensorflow_only
def test_init_from_a_dinov2_with_registers_hub_folder_with_lora(tfds_data_dir, tmp_path,
                                                                tiny_config, monkeypatch):
    """--init_from a transformers folder (`Dinov2WithRegistersModel`): adapted to the run's 8x8
    digits and 10 classes, its registers and LayerScale gammas kept, frozen under LoRA."""
    import keras_vit
    from keras_vit import checkpoints, finetune, model_layers
    from training import train

    source = family_model("dinov2_registers", num_classes=0)  # a backbone, as DINOv2's
    folder = checkpoints.save_pretrained(source, tmp_path / "dinov2")
    starts = []
    original_adapt = finetune.adapt

    def spy(*args, **kwargs):
        model = original_adapt(*args, **kwargs)
        starts.append([np.array(w) for w in model.get_weights()])
        return model

    monkeypatch.setattr(finetune, "adapt", spy)
    config = tiny_config(tfds_data_dir, init_from=folder, train_steps=2, warmup_steps=0,
                         lora_rank=2)
    model, metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert metrics["global_step"] == 2
    assert model.input_shape == (None, 8, 8, 3)
    # The run started from the folder's model: position embeddings interpolated to the 2x2
    # grid, a zero head for digits' 10 classes, every other weight (registers, gammas) as saved.
    (start,) = starts
    expected = original_adapt(keras_vit.ViT(weights=folder), image_size=8, num_classes=10)
    for got, want in zip(start, expected.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert model.get_layer("position_embedding").embeddings.shape == (1, 1 + 4, 32)
    # LoRA leaves the registers and the LayerScale gammas as they were.
    np.testing.assert_array_equal(np.array(model.get_layer("register_tokens").tokens),
                                  np.array(source.get_layer("register_tokens").tokens))
    block, source_block = (model_layers.transformer_blocks(m)[0] for m in (model, source))
    for scale in ("attention_scale", "mlp_scale"):
        np.testing.assert_array_equal(np.array(getattr(block, scale).gamma),
                                      np.array(getattr(source_block, scale).gamma))
    saved = keras.saving.load_model(os.path.join(tmp_path, "run", "model.keras"))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-5)


def test_init_from_a_clip_folder_folds_its_normalization_into_a_new_patch_bias(tmp_path):
    """CLIP's patch embedding has no bias, and its mean is not 0.5: `--init_from` gives the
    model a zero bias, then folds the normalization into kernel and bias, so that the model fed
    the pipeline's [-1, 1] pixels computes what the checkpoint computes on its own inputs."""
    import types

    import keras_vit
    from keras_vit import checkpoints, variants
    from training import state

    clip = dataclasses.replace(variants.parse_variant("mu/4"), pre_norm=True, patch_bias=False,
                               activation="quick_gelu", layer_norm_epsilon=1e-5)
    source = keras_vit.ViT(clip, image_size=16, num_classes=8)  # the projection is the head
    rng = np.random.default_rng(3)
    for variable in source.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    folder = checkpoints.save_pretrained(source, tmp_path / "clip", layout="timm", mean=mean,
                                         std=std)
    model = state.load_pretrained(types.SimpleNamespace(init_from=folder))
    assert model.get_layer("patch_embedding").use_bias
    pixels = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(source((pixels / 255 - np.array(mean)) / np.array(std)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(pixels / 127.5 - 1)), expected,
                               atol=1e-4 * np.abs(expected).max())
