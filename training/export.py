"""`model.keras` -> TensorFlow SavedModel whose serving signature takes raw uint8 images.

    python -m training.export --model=WORKDIR/model.keras --output_dir=OUT

The `serving_default` signature takes `images`, a uint8 batch (B, H, W, C) of any height and
width, and returns `logits` (B, num_classes) and `probabilities` (their softmax), both float32.
It resizes and normalizes the images itself with `input_pipeline.preprocess_for_eval`, the
function evaluation uses, so a deployed model sees exactly what it was evaluated on. The
SavedModel is plain TensorFlow: `tf.saved_model.load(OUT)` runs it without `keras_vit` (and
without Keras) installed.

Example:

```python
serve = tf.saved_model.load("OUT").signatures["serving_default"]
outputs = serve(images=tf.zeros([2, 8, 8, 1], tf.uint8))
outputs["probabilities"].shape  # (2, num_classes)
```
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from keras_vit.files import atomic_write  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import input_pipeline  # noqa: E402
from training.model_loading import load_model  # noqa: E402

SIGNATURE = "serving_default"


def export_saved_model(model, output_dir):
    """Writes `model` as a SavedModel with a raw-image `serving_default` signature.

    The directory appears complete or not at all: the SavedModel is written next to it under a
    temporary name and renamed into place, replacing an older export.

    Args:
        model: `keras.Model` taking (B, height, width, C) images in [-1, 1] and returning
            logits, or the path of such a model saved as `.keras`.
        output_dir: str. Directory of the SavedModel.

    Returns:
        str: `output_dir`.

    Raises:
        ValueError: the model file is missing or not a `.keras` file, or the model does not take
            images of a known size.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    input_shape = tuple(model.input_shape)
    if len(input_shape) != 4 or None in input_shape[1:]:
        raise ValueError(
            f"model {model.name!r} takes inputs of shape {input_shape}; expected images "
            "(batch, height, width, channels) of a fixed size"
        )
    height, width, channels = input_shape[1:]

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        pixels = input_pipeline.preprocess_for_eval(images, (height, width))
        # Logits are float32 even under mixed precision (the model's head runs in float32); the
        # cast only pins the signature's dtype.
        logits = tf.cast(model(pixels, training=False), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive.add_endpoint(
        SIGNATURE,
        serve,
        input_signature=[tf.TensorSpec((None, None, None, channels), tf.uint8, name="images")],
    )
    output_dir = os.path.abspath(os.fspath(output_dir))
    with atomic_write(output_dir, directory=True) as temporary:
        archive.write_out(temporary, verbose=False)
    logging.info(
        "Exported %s to %s: %s(images: uint8 (B, H, W, %d)) -> logits, probabilities; images "
        "are resized to %dx%d", model.name, output_dir, SIGNATURE, channels, height, width)
    return output_dir


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    flags = training_flags.FLAGS
    try:
        export_saved_model(flags.model, flags.output_dir)
    except ValueError as exc:
        raise SystemExit(f"training.export: error: {exc}") from None


if __name__ == "__main__":
    training_flags.define_export_flags()
    # --helpshort lists the flags of the defining module too.
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
