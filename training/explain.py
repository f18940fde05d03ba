"""Writes the attention maps and the paper's analysis plots of a trained model.

    python -m training.explain --model=WORKDIR/model.keras --images=a.png,b.jpg,dir/ \
        --output_dir=OUT
    python -m training.explain --model=WORKDIR/model.keras --dataset=cifar10_jpeg \
        --data_dir=DIR --num_images=128 --output_dir=OUT

Images (PNG/JPEG files, directories of them, glob patterns, and/or the first `--num_images` of
a TFDS split) are resized and normalized as evaluation does (`input_pipeline`), converted to the
model's channels. OUT receives (see `keras_vit.explain`):

    rollout.png                         image | attention rollout | overlay, for the first
                                        --rollout_images images (the paper's Figure 6)
    patch_embedding_filters.png         principal components of the patch embedding (Fig. 7 left)
    position_embedding_similarity.png   position-embedding cosine similarity (Fig. 7 centre)
    mean_attention_distance.png         mean attention distance per head vs depth (Fig. 7 right)
    analysis.json                       the numbers behind the plots
"""

import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from keras_vit import explain as vit_explain  # noqa: E402
from keras_vit.layers import PatchEmbedding  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import input_pipeline, outputs  # noqa: E402
from training.model_loading import load_model  # noqa: E402

__all__ = [
    "IMAGE_SUFFIXES",
    "explain_model",
    "image_files",
    "load_dataset_images",
    "load_image_files",
    "main",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(entries):
    """Expands files, directories (their PNG/JPEG files, sorted) and glob patterns."""
    files = []
    for entry in entries:
        if os.path.isdir(entry):
            found = sorted(os.path.join(entry, name) for name in os.listdir(entry)
                           if name.lower().endswith(IMAGE_SUFFIXES))
        elif any(char in entry for char in "*?["):
            found = sorted(glob.glob(entry))
        else:
            found = [entry] if os.path.isfile(entry) else []
        if not found:
            raise ValueError(f"images {entry!r}: no such file, or no PNG/JPEG file in it")
        files.extend(found)
    return files


def load_image_files(paths, image_size, channels):
    """Reads PNG/JPEG files into a float32 batch (B, H, W, channels) in [-1, 1]."""
    images = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        try:
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            raise ValueError(f"images {path!r} is not a PNG or JPEG image") from None
        images.append(input_pipeline.preprocess_for_eval(image, image_size).numpy())
    return np.stack(images)


def load_dataset_images(dataset, *, data_dir, split, num_images, image_size, channels):
    """The first `num_images` of a TFDS split, as evaluation sees them; and their class names."""
    common = dict(data_dir=data_dir, image_size=image_size, eval_split=split, channels=channels)
    info = input_pipeline.dataset_info(dataset, **common)
    evaluation = input_pipeline.eval_dataset(
        dataset, global_batch_size=num_images, cache=False, **common)
    with input_pipeline.explain_data_errors():
        images, labels = next(iter(evaluation))
    names = [info.class_names[i] for i in np.argmax(labels.numpy(), axis=-1)]
    return images.numpy(), names


def explain_model(model, images, output_dir, *, titles=None, rollout_images=8, batch_size=32,
                  head_fusion="mean", discard_ratio=0.0, num_components=28, progress=True):
    """Computes the analyses of `keras_vit.explain` and writes their PNGs and analysis.json.

    Every file is written atomically (`keras_vit.files.atomic_write`): a failure leaves each
    file of an earlier run as it was, or a new one complete, never one half-written.

    Returns:
        dict: the file names written, by analysis.
    """
    os.makedirs(output_dir, exist_ok=True)
    count = len(images)
    verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
    bar = keras.utils.Progbar(count, verbose=verbose, unit_name="image")
    maps, distance_sum = [], None
    for start in range(0, count, batch_size):
        batch = images[start:start + batch_size]
        if start < rollout_images:
            maps.append(vit_explain.attention_rollout(
                model, batch[:rollout_images - start], head_fusion=head_fusion,
                discard_ratio=discard_ratio, batch_size=batch_size))
        # The mean over this batch's images, weighted back into the mean over all images.
        distances = vit_explain.mean_attention_distance(model, batch, batch_size=batch_size)
        distances = distances.astype("float64") * len(batch)
        distance_sum = distances if distance_sum is None else distance_sum + distances
        bar.update(min(start + batch_size, count))
    distances = distance_sum / count
    written = {}
    shown = min(rollout_images, count)
    written["rollout"] = vit_explain.plot_attention_rollout(
        images[:shown], np.concatenate(maps), os.path.join(output_dir, "rollout.png"),
        titles=None if titles is None else titles[:shown])
    height, width = images.shape[1:3]
    written["mean_attention_distance"] = vit_explain.plot_mean_attention_distance(
        distances, os.path.join(output_dir, "mean_attention_distance.png"),
        image_size=max(height, width))
    similarity = vit_explain.position_embedding_similarity(model)
    written["position_embedding_similarity"] = vit_explain.plot_position_embedding_similarity(
        similarity, os.path.join(output_dir, "position_embedding_similarity.png"))
    components, variance = vit_explain.patch_embedding_components(
        model, n=min(num_components, *_filter_matrix_shape(model)), return_variance=True)
    if components.shape[-1] in (1, 3):
        written["patch_embedding_filters"] = vit_explain.plot_patch_embedding_filters(
            components, os.path.join(output_dir, "patch_embedding_filters.png"))
    else:
        # A hybrid's patch embedding projects CNN feature maps, not pixels.
        logging.info("Patch embedding filters have %d channels: not drawn as images",
                     components.shape[-1])
    analysis = {
        "model": model.name,
        "num_images": count,
        "mean_attention_distance": distances.tolist(),
        "position_embedding_similarity_by_relation":
            vit_explain.similarity_by_relation(similarity),
        "patch_embedding_explained_variance_ratio": variance.tolist(),
        "files": {key: os.path.basename(path) for key, path in written.items()},
    }
    outputs.write_text(os.path.join(output_dir, "analysis.json"),
                       json.dumps(analysis, indent=2) + "\n")
    return written


def _filter_matrix_shape(model):
    for layer in model.layers:
        if isinstance(layer, PatchEmbedding):
            kernel = layer.projection.kernel
            return kernel.shape[-1], int(np.prod(kernel.shape[:-1]))
    raise ValueError(f"Model {model.name!r} has no PatchEmbedding layer")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    flags = training_flags.FLAGS
    try:
        model = load_model(flags.model)
        height, width, channels = tuple(model.input_shape)[1:]
        if not flags.images and not flags.dataset:
            raise ValueError("no images: give --images=FILES and/or --dataset=NAME")
        for name in ("num_images", "rollout_images", "batch_size", "num_components"):
            if flags[name].value < 1:
                raise ValueError(f"--{name} must be at least 1, received {flags[name].value}")
        images, titles = [], []
        if flags.images:
            paths = image_files(flags.images)
            images.append(load_image_files(paths, (height, width), channels))
            titles += [os.path.basename(path) for path in paths]
        if flags.dataset:
            batch, names = load_dataset_images(
                flags.dataset, data_dir=flags.data_dir or None, split=flags.split,
                num_images=flags.num_images, image_size=(height, width), channels=channels)
            images.append(batch)
            titles += names
        written = explain_model(
            model, np.concatenate(images), flags.output_dir, titles=titles,
            rollout_images=flags.rollout_images, batch_size=flags.batch_size,
            head_fusion=flags.head_fusion, discard_ratio=flags.discard_ratio,
            num_components=flags.num_components)
    except ValueError as exc:
        raise SystemExit(f"training.explain: error: {exc}") from None
    for path in written.values():
        print(path, flush=True)


if __name__ == "__main__":
    training_flags.define_explain_flags()
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
