"""Tests of training/convert.py: a released .npz -> a .keras model, adapted and reported."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints
from training import convert


@pytest.fixture(name="npz")
def npz_fixture(tmp_path):
    """A mu/4 checkpoint at 16x16 with pre-logits and 10 classes, random weights."""
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10, representation_size=16)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    return checkpoints.save_npz(model, tmp_path / "ViT-mu_4.npz"), model


def test_convert_adapts_resolution_and_head(tmp_path, npz):
    path, source = npz
    lines = []
    output = tmp_path / "out" / "model.keras"
    # Another class count: the pre-logits go with the head, as in the paper's fine-tuning.
    convert.convert(path, output, variant="mu/4", image_size=24, num_classes=3,
                    print_fn=lines.append)
    assert lines == [
        f"Checkpoint {path}: original ViT layout; looks like mu/4 (width 32, depth 1, 2 heads, "
        f"MLP 128), pooling 'token', 16x16 images, representation_size 16, 10 classes.",
        f"Loaded 21 arrays from {path} (original ViT layout).",
        "Resized Transformer/posembed_input/pos_embedding: (1, 17, 32) -> (1, 37, 32).",
        "Dropped head/kernel, head/bias, pre_logits/kernel, pre_logits/bias.",
        "Zero-initialized head/kernel, head/bias.",
        f"Wrote {output}: vit_mu4, 15,651 parameters, input (24, 24, 3), output (3,).",
    ]
    assert sorted(os.listdir(output.parent)) == ["model.keras"]
    model = keras.saving.load_model(output, compile=False)
    assert model.get_layer("head").kernel.shape == (32, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head").kernel),
                                  np.zeros((32, 3)))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("encoder_norm").gamma),
        keras.ops.convert_to_numpy(source.get_layer("encoder_norm").gamma))


def test_convert_defaults_to_the_checkpoints_model(tmp_path, npz):
    path, source = npz
    output = tmp_path / "same.keras"
    summary = convert.convert(path, output, print_fn=lambda line: None)
    assert summary.resized == summary.dropped == []
    model = keras.saving.load_model(output, compile=False)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images)),
                                  keras.ops.convert_to_numpy(source(images)))


def test_convert_keeps_pre_logits_when_asked(tmp_path, npz):
    path, source = npz
    lines = []
    convert.convert(path, tmp_path / "m.keras", num_classes=3, representation_size=16,
                    print_fn=lines.append)
    assert lines[2] == "Dropped head/kernel, head/bias."
    model = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("pre_logits").kernel),
        keras.ops.convert_to_numpy(source.get_layer("pre_logits").kernel))


def test_convert_rejects_bad_output_and_leaves_nothing(tmp_path, npz):
    path, _ = npz
    with pytest.raises(ValueError, match=r"--output '.*model\.h5' must end in '\.keras'"):
        convert.convert(path, tmp_path / "model.h5", print_fn=lambda line: None)
    with pytest.raises(ValueError, match=r"key 'embedding/kernel' has shape \(4, 4, 3, 32\), "
                       r"expected \(8, 8, 3, 32\)"):
        convert.convert(path, tmp_path / "m.keras", variant="mu/8", print_fn=lambda line: None)
    assert sorted(os.listdir(tmp_path)) == ["ViT-mu_4.npz"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="the binary runs under the TensorFlow backend")
def test_command_line(tmp_path, npz, repo_root, subprocess_env):
    path, _ = npz
    output = tmp_path / "model.keras"
    command = [sys.executable, "-m", "training.convert", f"--npz={path}", "--variant=mu/4",
               "--image_size=32", "--num_classes=5", "--pooling=token", f"--output={output}"]
    proc = subprocess.run(command, cwd=repo_root, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Resized Transformer/posembed_input/pos_embedding: (1, 17, 32) -> (1, 65, 32)." in (
        proc.stdout)
    assert "Dropped head/kernel, head/bias, pre_logits/kernel, pre_logits/bias." in proc.stdout
    assert "Dropped" not in proc.stderr  # The summary is printed once, not logged as well.
    assert keras.saving.load_model(output, compile=False).output_shape == (None, 5)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    proc = subprocess.run(command[:3] + [f"--npz={bad}", f"--output={tmp_path / 'b.keras'}"],
                          cwd=repo_root, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"training.convert: error: {str(bad)!r} is not an .npz file: it is not a zip archive "
        f"(a truncated download, or another format)")
