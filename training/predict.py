"""Classifies image files with a released checkpoint, a URL or a saved model: the top-k table.

    python -m training.predict --weights=augreg_b16_i21k_i1k_224 cat.jpg dog.png
    python -m training.predict --weights=WORKDIR/model.keras --top=3 digits/*.png
    python -m training.predict --weights=https://.../ViT-B_16.npz --rollout_dir=OUT photo.jpg

`--weights` is a preset name (`keras_vit.presets`, downloaded once into the Keras cache), a
`.keras` model, a released `.npz` checkpoint by path or URL (its architecture read from its
arrays), or a Hub checkpoint (`hf://ORG/NAME[@REVISION]`, a folder with `config.json` and
safetensors: its config's architecture, mean and std, and class names). Each image (JPEG, PNG, any size) is resized and center-cropped as the checkpoint's
evaluation did (`keras_vit.preprocessing.preprocess_images`), and its top classes are printed
with their probabilities; class names come from the checkpoint's label set (`--labels`), by class
count when the checkpoint does not say. With `--rollout_dir`, each image's attention-rollout
overlay is written there (`keras_vit.explain`). An unreadable image, or one of more than
`--max_pixels` pixels (100 million; read from its header, never decoded), is reported by name,
the others are still classified, and the exit code is 1.
"""

import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit import (  # noqa: E402
    checkpoints, downloads, explain, hub, labels, model_layers, presets)
from keras_vit.preprocessing import preprocess_images  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import model_loading  # noqa: E402

# Label sets by head width, for models that do not say which they were trained on.
_LABELS_BY_CLASSES = {1000: "imagenet2012", 21843: "imagenet21k"}


def load_classifier(weights):
    """(model, preset or None) for a preset name, a `.keras` path, an `.npz` path or URL, or a
    Hub checkpoint (`hf://ORG/NAME`, a folder).

    A Hub checkpoint's model normalizes raw pixels itself (its own mean and std); its "preset"
    is the checkpoint's `keras_vit.converters.Architecture` (`labels` its class names).
    """
    weights = os.fspath(weights)
    if hub.is_reference(weights):
        checkpoint = checkpoints.read_checkpoint(weights, config_only=True)
        model = keras_vit.ViT(weights=weights, include_preprocessing=True)
        arch = checkpoint.architecture
        return model, types.SimpleNamespace(labels=arch.class_names,
                                            crop_fraction=arch.crop_fraction)
    if weights.endswith(".keras") and not downloads.is_url(weights):
        return model_loading.load_model(weights), None
    if weights.endswith(".npz"):
        path = downloads.fetch(weights) if downloads.is_url(weights) else weights
        if not os.path.isfile(path):
            raise ValueError(f"weights file {path!r} does not exist")
        info = checkpoints.inspect_npz(path)
        if info.get("variant") is None or info.get("num_classes") is None:
            raise ValueError(f"{weights!r} holds no classifier ({info['description']})")
        model = keras_vit.ViT(
            info["variant"], image_size=info["image_size"] or 224,
            num_classes=info["num_classes"], pooling=info["pooling"],
            representation_size=info["representation_size"], weights=path)
        return model, None
    preset = presets.get(weights)
    return keras_vit.ViT(weights=weights), preset


# Images larger than this are refused before they are decoded: decoding and resizing hold about
# 17 bytes per pixel above the process's 0.8 GB (peak RSS measured on the 2-core CPU with a
# mu/4 model: 1.2 GB for a 5000x5000 PNG, 2.5 GB for 10000x10000, the limit).
DEFAULT_MAX_PIXELS = 100_000_000


def read_image(path, channels=3, *, max_pixels=DEFAULT_MAX_PIXELS):
    """The uint8 pixels (H, W, channels) of a JPEG/PNG/BMP/GIF file; ValueError if unreadable.

    `channels` 1 gives grayscale (for a model trained on grayscale data such as digits), 3 RGB.
    An image of more than `max_pixels` pixels (0: no limit) is refused from its header, before
    it is decoded.
    """
    if max_pixels:
        size = _header_size(path)
        if size is not None and size[0] * size[1] > max_pixels:
            width, height = size
            raise ValueError(
                f"image {path!r} has {width}x{height} = {width * height} pixels, more than "
                f"--max_pixels={max_pixels}; raise the limit (0: none) to classify it")
    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    except (tf.errors.OpError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read image {path!r}: {reason}") from None
    return image.numpy()


def _header_size(path):
    """(width, height) from the image file's header (nothing decoded), or None if unknown."""
    import PIL.Image

    # PIL's own limit (an error above 179 million pixels) would hide the size; this is the check.
    previous, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
    try:
        with PIL.Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None  # not a format PIL knows, or unreadable: the decoder will say
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = previous


def predict(weights, image_paths, *, top=5, label_set="auto", rollout_dir=None, print_fn=print,
            max_pixels=DEFAULT_MAX_PIXELS):
    """Classifies `image_paths`; prints a table; returns ({path: [(index, name, p)]}, errors).

    Args:
        weights: str. A preset name, `.keras` path, `.npz` path or URL, or Hub checkpoint
            (`hf://ORG/NAME[@REVISION]`, a folder with `config.json` and safetensors).
        image_paths: list of str.
        top: int. Classes printed per image.
        label_set: str. "auto" (the preset's, else by class count), "imagenet2012",
            "imagenet21k" or "none" (class indices only).
        rollout_dir: str or None. Directory to write `<image name>.rollout.png` into.
        print_fn: callable receiving each output line.
        max_pixels: int. Larger images are reported as errors without being decoded; 0 for no
            limit. Defaults to `DEFAULT_MAX_PIXELS` (100 million).

    Returns:
        (results, errors): the top classes of each readable image, and {path: message} of the
        others.
    """
    if not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 0:
        raise ValueError(f"max_pixels must be an integer of 0 or more (0: no limit), received "
                         f"{max_pixels!r}")
    model, preset = load_classifier(weights)
    num_classes = model_layers.num_classes(model)
    if num_classes is None:
        raise ValueError(f"{weights!r} is a model without a classification head")
    if label_set == "auto":
        label_set = preset.labels if preset is not None else _LABELS_BY_CLASSES.get(num_classes)
    elif label_set == "none":
        label_set = None
    if not label_set:
        names = None
    elif isinstance(label_set, str):
        names = labels.class_names(label_set)
    else:
        names = label_set  # a Hub checkpoint's own class names
    if names is not None and len(names) != num_classes:
        raise ValueError(f"label set {label_set!r} has {len(names)} classes; the model has "
                         f"{num_classes}")
    image_size = tuple(model.input_shape[1:3])
    crop_fraction = preset.crop_fraction if preset is not None else 1.0
    raw_input = model_layers.find_layer(model, "preprocessing") is not None
    results, errors = {}, {}
    print_fn(f"{'image':<32} {'rank':>4} {'class':>6}  {'probability':>11}  name")
    for path in image_paths:
        try:
            pixels = read_image(path, channels=model.input_shape[-1], max_pixels=max_pixels)
        except ValueError as exc:
            errors[path] = str(exc)
            print_fn(f"{_short(path):<32} error: {exc}")
            continue
        batch = np.asarray(preprocess_images(pixels, image_size=image_size,
                                             crop_fraction=crop_fraction, rescale=False))
        scaled = batch / 127.5 - 1.0
        logits = np.asarray(model.predict_on_batch(batch if raw_input else scaled))
        probabilities = _softmax(logits[0].astype("float64"))
        order = np.argsort(-probabilities, kind="stable")[:top]
        rows = [(int(i), names[i] if names else str(int(i)), float(probabilities[i]))
                for i in order]
        results[path] = rows
        for rank, (index, name, p) in enumerate(rows, 1):
            print_fn(f"{_short(path) if rank == 1 else '':<32} {rank:>4} {index:>6}  "
                     f"{p:>11.4f}  {name}")
        if rollout_dir:
            os.makedirs(rollout_dir, exist_ok=True)
            maps = np.asarray(explain.attention_rollout(model, batch if raw_input else scaled))
            out = os.path.join(rollout_dir, os.path.basename(path) + ".rollout.png")
            explain.plot_attention_rollout(scaled, maps, out, titles=[rows[0][1]])
    return results, errors


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _short(path):
    name = os.path.basename(path)
    return name if len(name) <= 32 else name[:29] + "..."


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give one or more image files: python -m training.predict "
                             "--weights=NAME IMAGE [IMAGE ...]")
    flags = training_flags.FLAGS
    try:
        _, errors = predict(flags.weights, paths, top=flags.top, label_set=flags.labels,
                            rollout_dir=flags.rollout_dir, max_pixels=flags.max_pixels)
    except ValueError as exc:
        raise SystemExit(f"training.predict: error: {exc}") from None
    if errors:
        print(f"training.predict: {len(errors)} of {len(paths)} images could not be read",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    training_flags.define_predict_flags()
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
