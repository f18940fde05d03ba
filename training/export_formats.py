"""The file formats of `training.export`: one table of formats, their writers and `export`.

`_FORMATS` holds one row per format: the suffix its output must end in, the quantizations it
applies, whether a model of any image size may stay so, its writer and which of `export`'s
options that writer takes. `export` checks its arguments against the row and calls the writer;
a new format is a new writer and a new row. Every writer converts `training.serving`'s model
(or, for the SavedModel, serves the model through `training.input_pipeline`'s evaluation
preprocessing) and writes through `keras_vit.files.atomic_write`.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_vit.files import atomic_write
from keras_vit.model_layers import find_layer
from keras_vit.validation import check_choice, check_int
from training import input_pipeline
from training.model_loading import load_model
from training.serving import input_size, serving_model

SIGNATURE = "serving_default"
QUANTIZATIONS = ("none", "float16", "dynamic_range", "int8")
# ONNX opset of the exported files: the newest that both tf2onnx 1.17 (TensorFlow backend) and
# torch.onnx's dynamo exporter (PyTorch backend, which needs at least 18) write.
ONNX_OPSET = 18


def export(model, output, *, format="saved_model", quantize="none", image_size=None,
           calibration_images=None, opset=ONNX_OPSET):
    """Writes `model` to `output` in `format`, taking raw images (see `training.export`).

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
    row = _FORMATS[format]
    if quantize not in row.quantizations:
        quantized = " or ".join(repr(name) for name, r in _FORMATS.items()
                                if len(r.quantizations) > 1)
        raise ValueError(
            f"quantize {quantize!r} applies to format {quantized} only; format {format!r} is "
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
    input_size(model, image_size, any_size=row.any_size)
    options = dict(quantize=quantize, image_size=image_size,
                   calibration_images=calibration_images, opset=opset)
    return row.write(model, output, **{name: options[name] for name in row.options})


def export_saved_model(model, output_dir, *, image_size=None):
    """Writes `model` as a SavedModel with a raw-image `serving_default` signature.

    The directory appears complete or not at all: the SavedModel is written next to it under a
    temporary name and renamed into place, replacing an older export.

    Args:
        model: `keras.Model` as for `export`, or the path of a `.keras` file.
        output_dir: str. Directory of the SavedModel.
        image_size: as for `training.serving.input_size`: the size images are resized to.

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
    """Writes `model` as a LiteRT (TFLite) file of builtin ops; see `training.export`.

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
    """Writes `model` as an ONNX file with a dynamic batch axis; see `training.export`.

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


@dataclasses.dataclass(frozen=True)
class _Format:
    """One file format of `export`.

    Attributes:
        suffix: str. What the output path must end in; "" for any path (a directory).
        quantizations: tuple of str. The values of `quantize` the format applies.
        any_size: bool. Whether a model of any image size may be exported without an
            `image_size` (it then serves images at their own size).
        write: the writer, `write(model, output, **options)`, returning the absolute path.
        options: tuple of str. Which of `export`'s options (quantize, image_size,
            calibration_images, opset) the writer takes.
    """

    suffix: str
    quantizations: tuple
    any_size: bool
    write: object
    options: tuple


_FORMATS = {
    "saved_model": _Format("", ("none",), True, export_saved_model, ("image_size",)),
    "litert": _Format(".tflite", QUANTIZATIONS, False, export_litert,
                      ("quantize", "image_size", "calibration_images")),
    "onnx": _Format(".onnx", ("none",), False, export_onnx, ("image_size", "opset")),
}
FORMATS = tuple(_FORMATS)
# The file suffix each file format's output must have.
SUFFIXES = {name: row.suffix for name, row in _FORMATS.items() if row.suffix}


def _output_path(path, format):
    """`path` made absolute, checked to end in `format`'s suffix (any path for a SavedModel)."""
    path = os.path.abspath(os.fspath(path))
    suffix = _FORMATS[format].suffix
    if suffix and not path.endswith(suffix):
        raise ValueError(f"output {path!r} of format {format!r} must end in {suffix!r}")
    return path
