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
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

from keras_vit.files import atomic_write  # noqa: E402
from keras_vit.model_layers import find_layer  # noqa: E402
from keras_vit.validation import check_choice, check_int  # noqa: E402
from training import flags as training_flags  # noqa: E402
from training import input_pipeline  # noqa: E402
from training.model_loading import load_model  # noqa: E402

SIGNATURE = "serving_default"
FORMATS = ("saved_model", "litert", "onnx")
QUANTIZATIONS = ("none", "float16", "dynamic_range", "int8")
# ONNX opset of the exported files: the newest that both tf2onnx 1.17 (TensorFlow backend) and
# torch.onnx's dynamo exporter (PyTorch backend, which needs at least 18) write.
ONNX_OPSET = 18
# The file suffix each file format's output must have.
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}


def export(model, output, *, format="saved_model", quantize="none", image_size=None,
           calibration_images=None, opset=ONNX_OPSET):
    """Writes `model` to `output` in `format`, taking raw images (see the module docstring).

    Args:
        model: `keras.Model` taking (B, height, width, C) images (in [-1, 1], or raw [0, 255]
            pixels when it has a `preprocessing` layer) and returning logits, or the path of such
            a model saved as `.keras`.
        output: str. A directory for `saved_model`, a `.tflite` file for `litert`, a `.onnx`
            file for `onnx`. Replaced atomically if it exists.
        format: one of `FORMATS`.
        quantize: one of `QUANTIZATIONS`; anything but "none" for `litert` only.
        image_size: int, (height, width) or None. The input size of a model whose input size is
            not fixed (required then); for a fixed-size model, None or that size.
        calibration_images: uint8 array (N, height, width, C), the representative images of
            `quantize="int8"` (e.g. `input_pipeline.raw_images(..., split="train", count=200,
            seed=0)`); required for int8, ignored otherwise.
        opset: int. ONNX opset of `format="onnx"`.

    Returns:
        str: the absolute output path.

    Raises:
        ValueError: an unknown format or quantization, a quantization for a format without one,
            int8 without calibration images, an output path without the format's suffix, a
            model without a known input size and no `image_size`, or a backend the format
            cannot be exported from.
    """
    check_choice("format", format, FORMATS)
    check_choice("quantize", quantize, QUANTIZATIONS)
    if quantize != "none" and format != "litert":
        raise ValueError(
            f"quantize {quantize!r} applies to format 'litert' only; format {format!r} is "
            "exported in float32: use quantize 'none'"
        )
    output = _output_path(output, format)
    if quantize == "int8" and calibration_images is None:
        raise ValueError(
            "quantize 'int8' needs calibration images: representative training images "
            "(the binary's --dataset and --data_dir)"
        )
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    # Size errors first, on every backend.
    input_size(model, image_size, any_size=format == "saved_model")
    if format == "saved_model":
        return export_saved_model(model, output, image_size=image_size)
    if format == "litert":
        return export_litert(model, output, quantize=quantize, image_size=image_size,
                             calibration_images=calibration_images)
    return export_onnx(model, output, image_size=image_size, opset=opset)


def input_size(model, image_size=None, *, any_size=False):
    """(height, width, channels) that an export of `model` takes.

    Args:
        model: `keras.Model` taking (B, height, width, C) images.
        image_size: int, (height, width) or None: required when the model's height or width is
            unknown (None), unless `any_size`; must equal them when they are known.
        any_size: bool. Whether an unknown height and width may stay unknown (None): the
            SavedModel of a model of any image size serves images at their own size.

    Raises:
        ValueError: the model does not take images, or `image_size` is missing or differs.
    """
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or shape[-1] is None:
        raise ValueError(
            f"model {model.name!r} takes inputs of shape {model.input_shape}; expected images "
            "(batch, height, width, channels)"
        )
    height, width, channels = shape[1:]
    if image_size is not None:
        size = input_pipeline._image_size(image_size)
        if (height, width) != (None, None) and (height, width) != size:
            raise ValueError(
                f"image_size {image_size!r} differs from the {height}x{width} images that model "
                f"{model.name!r} takes; fine-tune it at that size first (python -m "
                "training.train --init_from=MODEL.keras --image_size=...)"
            )
        height, width = size
    if (height is None or width is None) and not any_size:
        raise ValueError(
            f"model {model.name!r} takes images of any size ({model.input_shape}); give "
            "image_size (--image_size) for the export's fixed input size"
        )
    return height, width, channels


def serving_model(model, image_size=None):
    """The Keras model that the LiteRT and ONNX exports are converted from.

    Input `images`: uint8 (B, height, width, C) at the model's size. Inside: cast to float32,
    normalize to [-1, 1] as `input_pipeline.normalize` (skipped when `model` has its own
    `preprocessing` layer, which takes raw pixels), `model`. Outputs: a dict of float32
    `logits` and `probabilities` (softmax over the logits).

    Args:
        model: `keras.Model` as for `export`.
        image_size: as for `input_size`.

    Returns:
        `keras.Model` sharing `model`'s layers and weights.
    """
    height, width, channels = input_size(model, image_size)
    model = float32_model(model)
    images = keras.Input((height, width, channels), dtype="uint8", name="images")
    x = keras.ops.cast(images, "float32")
    if find_layer(model, "preprocessing") is None:
        # input_pipeline.normalize: x / 127.5 - 1, as a layer that every backend converts.
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(x)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(model(x))
    probabilities = keras.layers.Softmax(dtype="float32", name="probabilities")(logits)
    return keras.Model(
        images, {"logits": logits, "probabilities": probabilities}, name=f"{model.name}_serving"
    )


def float32_model(model):
    """`model` computing in float32: itself, or a float32 copy of a mixed-precision model.

    A model trained under `mixed_bfloat16` or `mixed_float16` keeps that policy in its
    `.keras` file; LiteRT's builtin ops and ONNX Runtime's CPU kernels have no bfloat16
    versions of most of its ops, so the exports convert a float32 copy (the same weights, which
    mixed precision stores in float32 anyway). Quantized policies are left as they are.

    Returns:
        `keras.Model`: `model` when every layer already computes in float32, else a new model
        with the same weights.
    """
    if all(_float32_policy(layer.dtype_policy.name) == layer.dtype_policy.name
           for layer in _layers(model)):
        return model
    config = _with_float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)


def _float32_policy(name):
    return "float32" if name in ("mixed_bfloat16", "mixed_float16", "bfloat16", "float16") else name


def _with_float32_policies(config):
    """A serialized model config with every half-precision dtype policy made float32."""
    if isinstance(config, list):
        return [_with_float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
        name = config["config"].get("name")
        return {**config, "config": {**config["config"], "name": _float32_policy(name)}}
    return {
        key: (_float32_policy(value) if key == "dtype" and isinstance(value, str)
              else _with_float32_policies(value))
        for key, value in config.items()
    }


def export_saved_model(model, output_dir, *, image_size=None):
    """Writes `model` as a SavedModel with a raw-image `serving_default` signature.

    The directory appears complete or not at all: the SavedModel is written next to it under a
    temporary name and renamed into place, replacing an older export.

    Args:
        model: `keras.Model` as for `export`, or the path of a `.keras` file.
        output_dir: str. Directory of the SavedModel.
        image_size: as for `input_size`: the size images are resized to.

    Returns:
        str: `output_dir`.

    Raises:
        ValueError: the model file is missing or not a `.keras` file, or the model does not take
            images of a known size.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    height, width, channels = input_size(model, image_size, any_size=True)
    raw_pixels = find_layer(model, "preprocessing") is not None

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        if height is None:
            # A model of any image size (`ViT(dynamic_image_size=True)`) sees the images at
            # their own size, which must be divisible by its patch size.
            pixels = tf.cast(images, tf.float32)
            if not raw_pixels:
                pixels = input_pipeline.normalize(pixels)
        elif raw_pixels:
            pixels = tf.image.resize(images, (height, width), method="bilinear")
        else:
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
        "Exported %s to %s: %s(images: uint8 (B, H, W, %d)) -> logits, probabilities; %s",
        model.name, output_dir, SIGNATURE, channels,
        "images at their own size" if height is None else f"images resized to {height}x{width}")
    return output_dir


def export_litert(model, path, *, quantize="none", image_size=None, calibration_images=None):
    """Writes `model` as a LiteRT (TFLite) file of builtin ops; see the module docstring.

    Converted with Keras' `model.export(format="litert")` (a SavedModel, then
    `tf.lite.TFLiteConverter.from_saved_model`) with TF Select ops disallowed, so that the file
    runs in the plain LiteRT runtime.

    Args:
        model: `keras.Model` as for `export`.
        path: str ending in `.tflite`.
        quantize, image_size, calibration_images: as for `export`.

    Returns:
        str: the absolute path.

    Raises:
        ValueError: as `export`, or the backend is not TensorFlow, or the calibration images are
            not uint8 images of the export's input size.
    """
    check_choice("quantize", quantize, QUANTIZATIONS)
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"LiteRT export needs the TensorFlow backend, not {keras.backend.backend()!r}: run "
            "with KERAS_BACKEND=tensorflow (the .keras file is the same on every backend)"
        )
    serving = serving_model(model, image_size)
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    options = {"target_spec": {"supported_ops": builtins}}
    if quantize == "float16":
        options = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "target_spec": {"supported_ops": builtins, "supported_types": [tf.float16]},
        }
    elif quantize == "dynamic_range":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        images = _check_calibration_images(calibration_images, serving.input_shape[1:])

        def representative_dataset():
            for image in images:
                yield [image[None]]

        options = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative_dataset,
            # Full integer: every op with int8 kernels, or the conversion fails.
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        }
    path = _output_path(path, "litert")
    with atomic_write(path) as temporary:
        serving.export(temporary, format="litert", verbose=False, **options)
    logging.info("Exported %s to %s (LiteRT, quantize=%s)", model.name, path, quantize)
    return path


def export_onnx(model, path, *, image_size=None, opset=ONNX_OPSET):
    """Writes `model` as an ONNX file with a dynamic batch axis; see the module docstring.

    On TensorFlow, Keras' `model.export(format="onnx")` (tf2onnx). On PyTorch,
    `torch.onnx.export(dynamo=True)` with a dynamic batch dimension: Keras' own PyTorch path
    falls back to the TorchScript exporter when the batch is dynamic, which fails on
    `LayerNormalization` (its normalized shape is traced as a tensor).

    Args:
        model: `keras.Model` as for `export`.
        path: str ending in `.onnx`.
        image_size: as for `export`.
        opset: int. The ONNX opset.

    Returns:
        str: the absolute path.

    Raises:
        ValueError: the backend is JAX (Keras converts through jax2onnx there, which this
            project does not install), or as `export`.
    """
    check_int("opset", opset, minimum=ONNX_OPSET if keras.backend.backend() == "torch" else 13)
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "torch"):
        raise ValueError(
            f"ONNX export runs on the TensorFlow or PyTorch backend, not {backend!r}: run with "
            "KERAS_BACKEND=tensorflow or torch (the .keras file is the same on every backend)"
        )
    serving = serving_model(model, image_size)
    path = _output_path(path, "onnx")
    with atomic_write(path) as temporary:
        if backend == "tensorflow":
            # An explicit signature: Keras refuses a model that was never called without one.
            signature = [tf.TensorSpec((None,) + serving.input_shape[1:], tf.uint8, "images")]
            serving.export(temporary, format="onnx", verbose=False, opset_version=opset,
                           input_signature=signature)
        else:
            _export_onnx_torch(serving, temporary, opset)
        _name_batch_axis(temporary, model)
    logging.info("Exported %s to %s (ONNX opset %d, %s backend)", model.name, path, opset,
                 backend)
    return path


def _export_onnx_torch(serving, path, opset):
    import torch

    class Outputs(torch.nn.Module):
        """The serving model with a tuple of outputs, in the ONNX file's output order."""

        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, images):
            outputs = self.wrapped(images, training=False)
            return outputs["logits"], outputs["probabilities"]

    # Batch 2, not 1: torch.export specializes a dimension whose example size is 1.
    sample = torch.zeros((2,) + tuple(serving.input_shape[1:]), dtype=torch.uint8)
    program = torch.onnx.export(
        Outputs(serving).eval(),
        (sample,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits", "probabilities"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        opset_version=opset,
        verbose=False,
    )
    program.optimize()
    program.save(path)


def _name_batch_axis(path, model):
    """Names the first axis of the input and outputs `batch` and records what the input is."""
    import onnx

    proto = onnx.load(path)
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    _, height, width, channels = (d.dim_value for d in dims)
    description = (
        f"keras_vit {model.name}: images uint8 (batch, {height}, {width}, {channels}) raw "
        "pixels in [0, 255], resized by the caller; outputs logits and probabilities, float32 "
        "(batch, num_classes)"
    )
    proto.doc_string = description
    onnx.save(proto, path)


def _check_calibration_images(images, shape):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"calibration images of dtype {images.dtype} and shape {images.shape}: expected "
            f"uint8 images (N, {', '.join(map(str, shape))})"
        )
    if len(images) == 0:
        raise ValueError("calibration images: expected at least one image, got none")
    return images


def _output_path(path, format):
    """`path` made absolute, checked to end in `format`'s suffix (any path for a SavedModel)."""
    path = os.path.abspath(os.fspath(path))
    suffix = SUFFIXES.get(format)
    if suffix and not path.endswith(suffix):
        raise ValueError(f"output {path!r} of format {format!r} must end in {suffix!r}")
    return path


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    flags = training_flags.FLAGS
    try:
        if flags.output and flags.output_dir:
            raise ValueError(
                f"--output={flags.output!r} and --output_dir={flags.output_dir!r}: give one "
                "(--output_dir is the old name of --output)"
            )
        output = flags.output or flags.output_dir
        if not output:
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
            model, output, format=flags.format, quantize=flags.quantize,
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
