"""Tests of `python -m training.predict` on scikit-learn's two real photos."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import checkpoints, labels
from keras_vit.preprocessing import preprocess_images


@pytest.fixture(scope="module")
def photos():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the binaries need the TensorFlow backend")
    import sklearn.datasets

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    return [os.path.join(folder, "china.jpg"), os.path.join(folder, "flower.jpg")]


@pytest.fixture(scope="module")
def tf(photos):
    import tensorflow

    return tensorflow


@pytest.fixture(scope="module")
def imagenet_npz(tmp_path_factory):
    """A 1000-class mu/4 classifier at 32x32 with random non-zero weights, as a released .npz."""
    model = keras_vit.ViT("mu/4", image_size=32, num_classes=1000)
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32")
                       for w in model.get_weights()])
    path = str(tmp_path_factory.mktemp("npz") / "mu4_imagenet.npz")
    checkpoints.save_npz(model, path)
    return model, path


def test_predict_names_the_top_classes_of_real_photos(photos, imagenet_npz, tmp_path, tf):
    from training import predict

    model, path = imagenet_npz
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    lines = []
    results, errors = predict.predict(path, [photos[0], str(broken), photos[1]], top=3,
                                      rollout_dir=str(tmp_path / "rollout"),
                                      print_fn=lines.append)
    assert list(results) == photos
    assert list(errors) == [str(broken)] and "cannot read image" in errors[str(broken)]
    names = labels.class_names("imagenet2012")
    for photo in photos:
        # TensorFlow's JPEG decoder, as the binary's: PIL's rounds differently.
        pixels = tf.io.decode_jpeg(tf.io.read_file(photo), channels=3).numpy()
        logits = np.asarray(model.predict_on_batch(preprocess_images(pixels, image_size=32)))[0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        expected = np.argsort(-p)[:3]
        assert [index for index, _, _ in results[photo]] == expected.tolist()
        for index, name, probability in results[photo]:
            assert name == names[index]
            assert probability == pytest.approx(p[index], rel=1e-4)
        assert os.path.getsize(tmp_path / "rollout" / (os.path.basename(photo) + ".rollout.png"))
    assert lines[0].split() == ["image", "rank", "class", "probability", "name"]
    assert len(lines) == 1 + 3 + 1 + 3


def test_predict_binary_exit_code_and_table(photos, imagenet_npz, tmp_path, repo_root,
                                            subprocess_env):
    _, path = imagenet_npz
    missing = str(tmp_path / "missing.png")
    out = subprocess.run(
        [sys.executable, "-m", "training.predict", f"--weights={path}", "--top=2",
         "--labels=none", photos[0], missing],
        cwd=repo_root, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "1 of 2 images could not be read" in out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    china = next(i for i, row in enumerate(rows) if row and row[0] == "china.jpg")
    # --labels=none: the name column is the class index.
    assert rows[china][1] == "1" and rows[china][2] == rows[china][4]
    assert rows[china + 1][0] == "2"
    assert any(row[:2] == ["missing.png", "error:"] for row in rows)


def test_a_grayscale_model_gets_grayscale_pixels(photos, tmp_path):
    # A model trained on digits (one channel) classifies an RGB photo: decoded as grayscale.
    from training import predict

    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10, num_channels=1)
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    path = str(tmp_path / "gray.keras")
    model.save(path)
    results, errors = predict.predict(path, photos[:1], top=2, print_fn=lambda line: None)
    assert not errors and len(results[photos[0]]) == 2
    gray = predict.read_image(photos[0], channels=1)
    assert gray.shape == (427, 640, 1)
    logits = np.asarray(model.predict_on_batch(preprocess_images(gray, image_size=16)))[0]
    assert results[photos[0]][0][0] == int(np.argmax(logits))
    # Ten classes: no label set matches, the names are the indices.
    assert results[photos[0]][0][1] == str(results[photos[0]][0][0])
