"""`model.keras` -> a deployable file: TensorFlow SavedModel, LiteRT (`.tflite`) or ONNX.

    python -m training.export --model=WORKDIR/model.keras --output=OUT                # SavedModel
    python -m training.export --model=M.keras --output=m.tflite --format=litert [--quantize=...]
    python -m training.export --model=M.keras --output=m.onnx --format=onnx

Every format takes raw images and returns `logits` (B, num_classes) and `probabilities` (their
softmax), both float32; none needs `keras_vit`, Keras or TensorFlow to run.

- `saved_model` (the default): signature `serving_default(images)`, a uint8 batch
  (B, H, W, C) of any height and width, resized and normalized inside with
  `input_pipeline.preprocess_for_eval`, the function evaluation uses. A model of any image
  size (`ViT(dynamic_image_size=True)`) exported without `--image_size` runs on the images at
  their own size instead (sides divisible by its patch size), normalized only.
- `litert`: a `.tflite` file of TFLite builtin ops only (no TF Select ops), input `images`, a
  uint8 batch (B, height, width, C) of the model's size: the caller resizes (bilinear, as
  `input_pipeline.raw_images` does); normalization is inside. `--quantize` makes it smaller:
  `float16` (weights), `dynamic_range` (int8 weights, float activations) or `int8` (full
  integer: int8 weights and activations, calibrated on `--calibration_images` training images
  of `--dataset`). Needs the TensorFlow backend.
- `onnx`: a `.onnx` file with the same input and outputs and a dynamic batch axis named
  `batch`, opset `--opset` (default `ONNX_OPSET`), from the TensorFlow backend (through
  tf2onnx, as Keras does) or the PyTorch backend (torch.onnx's dynamo exporter).

The same as Python functions: `export(model, output, format=..., ...)`, or `export_saved_model`,
`export_litert`, `export_onnx`, and `serving_model` (the Keras model that LiteRT and ONNX
files are converted from). Every file is written under a temporary name and renamed into
place: a failed or killed export leaves nothing at the output path.

This module is the command line; the work is done in `training.serving` (the model an export
converts: `input_size`, `serving_model`, `float32_model`) and `training.export_formats` (the
table of formats, their writers and `export`), whose public names it re-exports.

Example:

```python
serve = tf.saved_model.load("OUT").signatures["serving_default"]
outputs = serve(images=tf.zeros([2, 8, 8, 1], tf.uint8))
outputs["probabilities"].shape  # (2, num_classes)
```
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from training import export_formats, serving  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import input_pipeline  # noqa: E402
from training.model_loading import load_model  # noqa: E402

# The public names, from where they live.
SIGNATURE = export_formats.SIGNATURE
FORMATS = export_formats.FORMATS
QUANTIZATIONS = export_formats.QUANTIZATIONS
ONNX_OPSET = export_formats.ONNX_OPSET
SUFFIXES = export_formats.SUFFIXES
export = export_formats.export
export_saved_model = export_formats.export_saved_model
export_litert = export_formats.export_litert
export_onnx = export_formats.export_onnx
input_size = serving.input_size
serving_model = serving.serving_model
float32_model = serving.float32_model


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    flags = training_flags.FLAGS
    try:
        if not flags.output:  # absl requires the flag; `--output=` gives ""
            raise ValueError("--output is required: the SavedModel directory or the file to write")
        image_size = flags.image_size or None
        calibration_images = None
        if flags.quantize == "int8" and flags.format == "litert":
            if not flags.dataset:
                raise ValueError(
                    "--quantize=int8 needs --dataset (and --data_dir): the training images "
                    "that calibrate the int8 ranges"
                )
            model = load_model(flags.model)
            height, width, channels = input_size(model, image_size)
            calibration_images, _ = input_pipeline.raw_images(
                flags.dataset, data_dir=flags.data_dir or None, image_size=(height, width),
                split=flags.calibration_split, count=flags.calibration_images, seed=0,
                channels=channels,
            )
        else:
            model = flags.model
        path = export(
            model, flags.output, format=flags.format, quantize=flags.quantize,
            image_size=image_size, calibration_images=calibration_images, opset=flags.opset,
        )
    except ValueError as exc:
        raise SystemExit(f"training.export: error: {exc}") from None
    print(f"training.export: wrote {path} ({flags.format}, quantize={flags.quantize})")


if __name__ == "__main__":
    training_flags.define_export_flags()
    # --helpshort lists the flags of the defining module too.
    absl_flags.adopt_module_key_flags(training_flags)
    app.run(main)
