"""The binaries on Hub checkpoints: `--init_from` a transformers folder, `predict --weights`."""

import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.preprocessing import preprocess_images
from training import predict as predict_lib
from training import train

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A transformers ViT classifier (16x16, 4x4 patches, 5 named classes, random weights)."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the binaries need the TensorFlow backend")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=4, num_labels=5, id2label={i: f"class_{i}" for i in range(5)})
    model = transformers.ViTForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    folder = str(tmp_path_factory.mktemp("hf") / "vit")
    model.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=MEAN,
                                   image_std=STD).save_pretrained(folder)
    return folder, model


def test_init_from_a_transformers_checkpoint_fine_tunes_it(hf_folder, tfds_data_dir, tmp_path,
                                                           tiny_config):
    folder, _ = hf_folder
    config = tiny_config(tfds_data_dir, init_from=folder, train_steps=1, warmup_steps=0,
                         learning_rate=1e-9)
    model, metrics = train.train_and_evaluate(config, str(tmp_path / "run"))
    source = keras_vit.ViT(weights=folder)
    assert metrics["global_step"] == 1
    # digits: 10 classes at 8x8 (grayscale given as RGB): a zero head, a 2x2 grid.
    assert model.input_shape == (None, 8, 8, 3)
    assert model.get_layer("head").kernel.shape == (32, 10)
    assert float(np.abs(np.array(model.get_layer("head").kernel)).max()) < 1e-6
    assert model.get_layer("position_embedding").embeddings.shape == (1, 5, 32)
    block = model.get_layer("encoder_block_0")
    assert (block.layer_norm_epsilon, block.approximate_gelu) == (1e-12, False)
    np.testing.assert_allclose(np.array(block.qkv.kernel),
                               np.array(source.get_layer("encoder_block_0").qkv.kernel),
                               atol=1e-6)
    # The pipeline's [-1, 1] pixels, folded into the patch embedding for the checkpoint's
    # ImageNet mean and std: the kernel scaled by 1 / (2 std) per input channel.
    kernel = np.array(model.get_layer("patch_embedding").projection.kernel)
    source_kernel = np.array(source.get_layer("patch_embedding").projection.kernel)
    np.testing.assert_allclose(kernel, source_kernel / (2 * np.array(STD))[:, None], atol=1e-6)


def test_predict_names_the_checkpoints_classes(hf_folder, tmp_path):
    folder, reference = hf_folder
    import sklearn.datasets

    photo = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images", "china.jpg")
    lines = []
    results, errors = predict_lib.predict(folder, [photo], top=3, print_fn=lines.append)
    assert errors == {}
    # transformers on the same pixels: resized as predict resizes, normalized with the
    # checkpoint's mean and std.
    pixels = predict_lib.read_image(photo)
    raw = np.asarray(preprocess_images(pixels, image_size=16, rescale=False))
    normalized = (raw / 255.0 - np.array(MEAN)) / np.array(STD)
    with torch.no_grad():
        logits = reference(pixel_values=torch.from_numpy(
            normalized.transpose(0, 3, 1, 2).astype("float32"))).logits[0].numpy()
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)[:3]
    assert [(i, name) for i, name, _ in results[photo]] == [(int(i), f"class_{i}")
                                                             for i in order]
    np.testing.assert_allclose([p for _, _, p in results[photo]], probabilities[order],
                               atol=1e-4)
