"""Tests of training/export.py: the raw-image serving signature, reloaded without keras_vit."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="SavedModel export needs the TensorFlow backend",
)

# Loads the SavedModel in a process that never imports keras_vit (or training), runs the
# signature on the saved inputs and writes the outputs and the signature's description.
_LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    saved_model, inputs, output = sys.argv[1:4]
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    arrays = np.load(inputs)
    results = {}
    for name in arrays.files:
        outputs = serve(images=tf.constant(arrays[name]))
        for key, value in outputs.items():
            results[f"{name}/{key}"] = value.numpy()
    np.savez(output, **results)
    (spec,) = serve.structured_input_signature[1].values()
    print(json.dumps({
        "input": [spec.name, spec.dtype.name, spec.shape.as_list()],
        "outputs": {k: [v.dtype.name, v.shape.as_list()]
                    for k, v in serve.structured_outputs.items()},
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("keras_vit", "training")),
    }))
    """
)


def _model(channels):
    import keras_vit

    model = keras_vit.ViT("mu/4", image_size=16, num_classes=5, num_channels=channels)
    # The head is zero-initialized: give it weights so that the logits differ per image.
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape))
    head.bias.assign(np.arange(5, dtype="float32") * 0.1)
    return model


def _images(channels):
    rng = np.random.default_rng(1)
    return {
        "native": rng.integers(0, 256, size=(3, 16, 16, channels), dtype=np.uint8),
        "small": rng.integers(0, 256, size=(2, 8, 8, channels), dtype=np.uint8),
        "odd": rng.integers(0, 256, size=(1, 13, 21, channels), dtype=np.uint8),
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_saved_model_serves_raw_uint8_images_without_keras_vit(
    tmp_path, channels, run_outside_checkout
):
    from training import export, input_pipeline

    model = _model(channels)
    output_dir = export.export_saved_model(model, str(tmp_path / "saved_model"))
    images = _images(channels)
    description, outputs = run_outside_checkout(_LOADER, output_dir, images, tmp_path)

    assert description["modules"] == []
    assert description["input"] == ["images", "uint8", [None, None, None, channels]]
    assert description["outputs"] == {
        "logits": ["float32", [None, 5]], "probabilities": ["float32", [None, 5]],
    }
    for name, batch in images.items():
        # What evaluation does: resize to the model's 16x16, x / 127.5 - 1, then the model.
        expected = keras.ops.convert_to_numpy(
            model(input_pipeline.preprocess_for_eval(batch, 16), training=False))
        logits, probabilities = outputs[f"{name}/logits"], outputs[f"{name}/probabilities"]
        assert logits.shape == (len(batch), 5)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(
            probabilities, keras.ops.convert_to_numpy(keras.ops.softmax(expected)), atol=1e-5)
    assert len({tuple(row) for row in outputs["native/logits"].round(5)}) == 3


def test_export_replaces_an_older_export(tmp_path):
    from training import export

    target = tmp_path / "saved_model"
    target.mkdir()
    (target / "stale.txt").write_text("from an older export")
    export.export_saved_model(_model(1), str(target))
    assert sorted(os.listdir(target)) == ["assets", "fingerprint.pb", "saved_model.pb",
                                          "variables"]
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_export_cli_from_model_keras(tmp_path, repo_root, subprocess_env):
    model = _model(1)
    model.save(tmp_path / "model.keras")
    proc = subprocess.run(
        [sys.executable, "-m", "training.export", f"--model={tmp_path / 'model.keras'}",
         f"--output={tmp_path / 'out'}"],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    import tensorflow as tf

    serve = tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"]
    images = _images(1)["small"]
    from training import input_pipeline

    expected = keras.ops.convert_to_numpy(
        model(input_pipeline.preprocess_for_eval(images, 16), training=False))
    np.testing.assert_allclose(serve(images=tf.constant(images))["logits"].numpy(), expected,
                               rtol=1e-4, atol=1e-4)


def test_export_cli_rejects_a_missing_model(tmp_path, repo_root, subprocess_env):
    proc = subprocess.run(
        [sys.executable, "-m", "training.export", f"--model={tmp_path / 'missing.keras'}",
         f"--output={tmp_path / 'out'}"],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "training.export: error: model file" in proc.stderr
    assert "missing.keras' does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_export_rejects_a_file_that_is_not_a_keras_model(tmp_path):
    from training import export

    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="model.h5' is not a .keras file"):
        export.export_saved_model(str(tmp_path / "model.h5"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
