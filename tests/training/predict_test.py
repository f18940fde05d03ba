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


def _png_header_only(path, width, height):
    """A PNG file whose header says width x height, with no pixel data (a decoder would fail)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))


def test_images_over_the_pixel_limit_are_refused_from_their_header(photos, imagenet_npz,
                                                                   tmp_path):
    from training import predict

    _, path = imagenet_npz
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 20000, 20000)  # 400 million pixels: 3.3 GB to decode and resize
    results, errors = predict.predict(path, [str(huge), photos[0]], print_fn=lambda line: None)
    assert list(results) == [photos[0]]
    assert errors == {str(huge): (
        f"image {str(huge)!r} has 20000x20000 = 400000000 pixels, more than "
        "--max_pixels=100000000; raise the limit (0: none) to classify it")}
    # china.jpg is 640x427 = 273,280 pixels: one pixel over a limit of 273,279.
    _, errors = predict.predict(path, [photos[0]], max_pixels=273_279,
                                print_fn=lambda line: None)
    assert errors[photos[0]].startswith(f"image {photos[0]!r} has 640x427 = 273280 pixels, more "
                                        "than --max_pixels=273279;")
    results, _ = predict.predict(path, [photos[0]], max_pixels=273_280,
                                 print_fn=lambda line: None)
    assert list(results) == [photos[0]]
    with pytest.raises(ValueError, match=r"max_pixels must be an integer of 0 or more \(0: no "
                                         r"limit\), received -1"):
        predict.predict(path, [photos[0]], max_pixels=-1)
