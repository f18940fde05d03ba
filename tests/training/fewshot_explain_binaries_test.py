"""Tests of the binaries training.fewshot and training.explain, of their atomic writes, and of
few-shot during training."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the binaries need the TensorFlow backend"
)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A random-init ViT-mu/4 for 8x8 grayscale digits, saved as .keras."""
    import keras_vit

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    keras_vit.ViT("mu/4", image_size=8, num_classes=10, num_channels=1).save(str(path))
    return str(path)


def _run(module, args, repo_root, env):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_fewshot_binary_on_digits(tmp_path, digits_model, tfds_data_dir, repo_root,
                                  subprocess_env):
    output = tmp_path / "fewshot.json"
    proc = _run("training.fewshot", [
        f"--model={digits_model}", "--dataset=digits", f"--data_dir={tfds_data_dir}",
        "--shots=1,10", "--seeds=2", f"--output={output}"], repo_root, subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(output.read_text())
    assert record["dataset"] == "digits" and record["eval_split"] == "test"
    assert sorted(record["results"]) == ["1", "10"]
    for shot, result in record["results"].items():
        assert len(result["accuracies"]) == 2
        assert result["mean"] == pytest.approx(np.mean(result["accuracies"]))
        assert f"digits {shot}-shot: {100 * result['mean']:.2f}%" in proc.stdout
    # Even random ViT features separate digits far above chance (10%) with 10 shots (measured
    # 57% with 5 shots).
    assert record["results"]["10"]["mean"] > 0.3
    assert sorted(os.listdir(tmp_path)) == ["fewshot.json"]  # no temporary left beside it


@pytest.mark.slow
def test_explain_binary_writes_every_png(tmp_path, digits_model, tfds_data_dir, repo_root,
                                         subprocess_env):
    import matplotlib.image

    image = tmp_path / "digit.png"
    matplotlib.image.imsave(str(image), np.random.default_rng(0).random((20, 12, 3)))
    out = tmp_path / "out"
    proc = _run("training.explain", [
        f"--model={digits_model}", f"--images={image}", "--dataset=digits",
        f"--data_dir={tfds_data_dir}", "--num_images=5", "--rollout_images=3",
        f"--output_dir={out}"], repo_root, subprocess_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == [
        "analysis.json", "mean_attention_distance.png", "patch_embedding_filters.png",
        "position_embedding_similarity.png", "rollout.png"]
    # Three rows of 2-inch panels at 100 dpi: the PNG file and the first 2 digits.
    assert matplotlib.image.imread(str(out / "rollout.png")).shape[:2] == (600, 600)
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["num_images"] == 6
    assert np.array(analysis["mean_attention_distance"]).shape == (1, 2)
    assert set(analysis["position_embedding_similarity_by_relation"]) == {
        "same_row", "same_column", "neither"}


def test_explain_binary_errors(tmp_path, digits_model, repo_root, subprocess_env):
    proc = _run("training.explain", [f"--model={digits_model}", f"--output_dir={tmp_path}",
                                     f"--images={tmp_path / 'missing.png'}"],
                repo_root, subprocess_env())
    assert proc.returncode != 0
    assert "training.explain: error: images" in proc.stderr
    assert "missing.png': no such file, or no PNG/JPEG file in it" in proc.stderr
    assert "DeprecationWarning" not in proc.stderr


def test_explain_model_failing_keeps_the_previous_analysis_json(tmp_path, monkeypatch):
    import keras_vit
    from training import explain

    model = keras_vit.ViT("mu/4", image_size=8, num_classes=10, num_channels=1)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype("float32")
    written = explain.explain_model(model, images, str(tmp_path), progress=False)
    previous = (tmp_path / "analysis.json").read_text()
    assert json.loads(previous)["files"] == {
        key: os.path.basename(path) for key, path in written.items()}
    # A value json cannot write: open(path, "w") would have emptied the old file and written
    # part of the new one before failing.
    monkeypatch.setattr(explain.vit_explain, "similarity_by_relation",
                        lambda similarity: {"same_row": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        explain.explain_model(model, images, str(tmp_path), progress=False)
    assert (tmp_path / "analysis.json").read_text() == previous
    assert sorted(os.listdir(tmp_path)) == [
        "analysis.json", "mean_attention_distance.png", "patch_embedding_filters.png",
        "position_embedding_similarity.png", "rollout.png"]


@pytest.mark.parametrize("options,pooling", [
    (dict(num_registers=4, layer_scale=1e-5), "token"),  # DINOv2 with registers
    (dict(distillation_token=True, num_registers=1), "distilled"),  # DeiT, and a register
    (dict(pre_norm=True, patch_bias=False), "map"),  # SigLIP-like: no [class] token
])
def test_explain_model_on_the_later_families(tmp_path, options, pooling):
    import dataclasses

    import keras_vit
    from training import explain

    spec = dataclasses.replace(keras_vit.variants.parse_variant("mu/4"), **options)
    model = keras_vit.ViT(spec, image_size=8, num_classes=0, pooling=pooling, num_channels=1)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 8, 8, 1)).astype("float32")
    explain.explain_model(model, images, str(tmp_path), progress=False)
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert np.shape(analysis["mean_attention_distance"]) == (1, 2)  # (depth, heads)
    assert sorted(os.listdir(tmp_path)) == [
        "analysis.json", "mean_attention_distance.png", "patch_embedding_filters.png",
        "position_embedding_similarity.png", "rollout.png"]


def test_fewshot_record_is_written_whole_or_not_at_all(tmp_path):
    from training import fewshot

    path = tmp_path / "out" / "fewshot.json"
    fewshot.write_record(str(path), {"results": {"1": {"mean": 0.5}}})
    assert json.loads(path.read_text()) == {"results": {"1": {"mean": 0.5}}}
    with pytest.raises(TypeError, match="not JSON serializable"):
        fewshot.write_record(str(path), {"results": {"1": {"mean": 0.25}}, "bad": object()})
    assert json.loads(path.read_text()) == {"results": {"1": {"mean": 0.5}}}
    assert os.listdir(path.parent) == ["fewshot.json"]


def test_the_old_binary_path_is_gone():
    # training.inspect, training.explain's old name, was removed before the first release.
    import importlib.machinery

    import training

    find_spec = importlib.machinery.PathFinder.find_spec
    assert find_spec("training.inspect", training.__path__) is None
    assert find_spec("training.explain", training.__path__) is not None


def test_fewshot_during_training_is_logged_to_tensorboard(tmp_path, tfds_data_dir, tiny_config):
    from tensorboard.backend.event_processing import event_accumulator

    from training.train import train_and_evaluate

    config = tiny_config(tfds_data_dir, fewshot_dataset="digits", fewshot_every_steps=4,
                         fewshot_shots="1,2", fewshot_seeds=2)
    train_and_evaluate(config, str(tmp_path))
    events = event_accumulator.EventAccumulator(str(tmp_path / "logs" / "eval"))
    events.Reload()
    tags = set(events.Tags()["tensors"])
    assert {"fewshot/digits_1shot", "fewshot/digits_2shot", "fewshot/digits_1shot_std"} <= tags
    # Every 4 steps and at the last (6th) step.
    assert [e.step for e in events.Tensors("fewshot/digits_1shot")] == [4, 6]
    import tensorflow as tf

    for event in events.Tensors("fewshot/digits_2shot"):
        assert 0.0 < float(tf.make_ndarray(event.tensor_proto)) <= 1.0


def test_bad_fewshot_settings_fail_before_writing(tmp_path, tfds_data_dir, tiny_config):
    # The binary's FewshotEvaluator raises the same errors (the class, the count, what is
    # available): the training run stops with them before writing anything.
    from training.train import train_and_evaluate

    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match="fewshot_shots must be comma-separated positive"):
        train_and_evaluate(tiny_config(tfds_data_dir, fewshot_dataset="digits",
                                       fewshot_shots="1,x"), str(workdir))
    with pytest.raises(ValueError, match="500-shot evaluation needs 500 training examples"):
        train_and_evaluate(tiny_config(tfds_data_dir, fewshot_dataset="digits",
                                       fewshot_shots="500"), str(workdir))
    assert not workdir.exists()
