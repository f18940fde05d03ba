"""Raw images to model inputs, as a checkpoint's evaluation prepared them: `preprocess_images`.

The released ViT checkpoints were evaluated on images resized (and, for some, center-cropped) to
the model's size and scaled to [-1, 1] (`x / 127.5 - 1`). `preprocess_images` does the same with
Keras ops, so it runs on every backend, for one image or a batch, and for a list of images of
different sizes.
"""

import keras
from keras import ops

from keras_vit import hub, presets
from keras_vit.validation import check_number


def preprocess_images(images, preset=None, *, image_size=None, crop_fraction=None, rescale=True):
    """Resizes, center-crops and scales raw images for a ViT.

    With `crop_fraction` 1 the whole image is resized to `image_size`, ignoring the aspect
    ratio: how the publisher's input pipeline evaluated every released checkpoint (all presets
    have crop_fraction 1). Below 1 the shorter side is resized to `image_size / crop_fraction`,
    keeping the aspect ratio, and the central `image_size` crop is taken (timm evaluates its
    ports with 0.9). Resizing is bilinear with antialiasing, so that downscaling a large photo
    does not alias.

    Args:
        images: one image (H, W, C) or a batch (B, H, W, C) with values in [0, 255], any integer
            or float dtype, any backend's tensor or NumPy; or a list of images of different
            sizes.
        preset: str, `keras_vit.presets.Preset` or None. Takes `image_size` and `crop_fraction`
            from the preset unless they are given. A Hub checkpoint (`"hf://ORG/NAME"`, a
            checkpoint folder) gives them too, and its own mean and std (its
            `preprocessor_config.json`, timm's `pretrained_cfg`) replace the [-1, 1] scaling;
            only its configs are read. So does a preset that names one (`"dinov2_b14"`).
        image_size: int or (height, width). The model's input size. Required without a preset.
        crop_fraction: float in (0, 1]. Defaults to the preset's, else 1.
        rescale: bool. Scale to [-1, 1], or with a Hub checkpoint's mean and std
            (for a model built with the default `include_preprocessing=False`); False keeps
            [0, 255] (for `include_preprocessing=True`). Defaults to True.

    Returns:
        float32 tensor (B, height, width, C) (a single image gets a batch of one).

    Example:

    >>> batch = preprocess_images(np.full((40, 60, 3), 255, "uint8"), image_size=16)
    >>> tuple(batch.shape), round(float(ops.min(batch)), 4), round(float(ops.max(batch)), 4)
    ((1, 16, 16, 3), 1.0, 1.0)
    """
    mean_std = None
    if isinstance(preset, str) and preset in presets.PRESETS:
        # A preset that names a Hub checkpoint is that checkpoint (its configs say the rest).
        preset = presets.get(preset).hub_reference or preset
    if preset is not None and hub.is_reference(preset):
        from keras_vit import checkpoints  # checkpoints -> finetune -> ... -> preprocessing

        arch = checkpoints.read_checkpoint(preset, config_only=True).architecture
        image_size = arch.image_size if image_size is None else image_size
        crop_fraction = arch.crop_fraction if crop_fraction is None else crop_fraction
        if arch.mean is not None:
            mean_std = (arch.mean, arch.std)
    elif preset is not None:
        if isinstance(preset, str):
            preset = presets.get(preset)
        image_size = preset.image_size if image_size is None else image_size
        crop_fraction = preset.crop_fraction if crop_fraction is None else crop_fraction
    if image_size is None:
        raise ValueError("image_size is unset: pass image_size or a preset")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    crop_fraction = 1.0 if crop_fraction is None else crop_fraction
    check_number("crop_fraction", crop_fraction, 0.0, 1.0, low_open=True, high_open=False)
    if isinstance(images, (list, tuple)):
        return ops.concatenate(
            [_finish(preprocess_images(image, image_size=(height, width),
                                       crop_fraction=crop_fraction, rescale=False),
                     rescale, mean_std) for image in images],
            axis=0,
        )
    images = ops.convert_to_tensor(images)
    if len(images.shape) == 3:
        images = images[None]
    if len(images.shape) != 4:
        raise ValueError(
            f"images of shape {tuple(images.shape)}: expected (height, width, channels) or "
            "(batch, height, width, channels)")
    images = ops.cast(images, "float32")
    if crop_fraction == 1.0:
        images = _resize(images, (height, width))
    else:
        in_height, in_width = images.shape[1], images.shape[2]
        scale = max(height, width) / crop_fraction / min(in_height, in_width)
        resized = (max(height, round(in_height * scale)), max(width, round(in_width * scale)))
        images = _resize(images, resized)
        top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
        images = images[:, top:top + height, left:left + width, :]
    # Bilinear antialiased resizing stays within the input's range up to rounding.
    images = ops.clip(images, 0.0, 255.0)
    return _finish(images, rescale, mean_std)


def _finish(images, rescale, mean_std):
    """[0, 255] pixels to the model's input: kept, `x / 127.5 - 1`, or `(x / 255 - mean) / std`."""
    if not rescale:
        return images
    if mean_std is None:
        return images / 127.5 - 1.0
    mean, std = (ops.convert_to_tensor(list(v), "float32") for v in mean_std)
    return (images / 255.0 - mean) / std


def _resize(images, size):
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    return keras.ops.image.resize(images, size, interpolation="bilinear", antialias=True)

