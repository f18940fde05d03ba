"""The Keras model an export converts: raw uint8 images in, float32 logits and probabilities out.

`input_size` is the one rule for the (height, width, channels) an export takes (the model's own,
or `image_size` for a model of any size); `serving_model` wraps a model into the model that the
LiteRT and ONNX files are converted from; `float32_model` gives a float32 copy of a
mixed-precision model, since the runtimes lack bfloat16 kernels. The file formats themselves
are written by `training.export_formats`.
"""

import keras

from keras_vit.layers.position_embedding import normalize_grid
from keras_vit.model_layers import find_layer


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
        size = normalize_grid(image_size, name="image_size")
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
    normalize to [-1, 1] as `training.input_pipeline.normalize` (skipped when `model` has its own
    `preprocessing` layer, which takes raw pixels), `model`. Outputs: a dict of float32
    `logits` and `probabilities` (softmax over the logits).

    Args:
        model: `keras.Model` as for `training.export.export`.
        image_size: as for `input_size`.

    Returns:
        `keras.Model` sharing `model`'s layers and weights.
    """
    height, width, channels = input_size(model, image_size)
    model = float32_model(model)
    images = keras.Input((height, width, channels), dtype="uint8", name="images")
    x = keras.ops.cast(images, "float32")
    if find_layer(model, "preprocessing") is None:
        # training.input_pipeline.normalize: x / 127.5 - 1, as a layer that every backend converts.
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
