"""Training augmentation of the input pipeline: which augmentations, per example and per batch.

`AugmentConfig` says which augmentations a training pipeline applies (evaluation is never
augmented). `crop_resize_flip` is the per-example part (Inception crop, resize, horizontal
flip), drawn from a stateless seed per example so that it is reproducible under parallel
`Dataset.map`; `batch_augmenter` the per-batch part from keras-cv (RandAugment, MixUp or
CutMix), on uint8-range pixels. `training.input_pipeline` applies them in that order.
"""

import contextlib
import dataclasses

import keras
import keras_cv
import tensorflow as tf

from keras_vit.validation import check_int, check_number

# Aspect ratios of the Inception crop (Szegedy et al., 2015, as used by the ViT fine-tuning code).
_CROP_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which training augmentations the pipeline applies. Evaluation is never augmented.

    The defaults are the ViT paper's fine-tuning recipe (Inception crop and horizontal flip, no
    RandAugment, no MixUp); `AugmentConfig.none()` turns everything off.

    Args:
        inception_crop: bool. Take a random crop covering `crop_area_range` of the image with an
            aspect ratio in [3/4, 4/3], then resize it to the target size; when False, resize the
            whole image. Defaults to True.
        crop_area_range: (float, float). Fraction of the image area the Inception crop covers:
            (low, high) with 0 < low <= high <= 1. Defaults to (0.05, 1.0), the range of the
            original ViT input pipeline.
        flip: bool. Random horizontal flip. Defaults to True (turn it off for digits and text).
        rand_augment: bool. keras-cv RandAugment (Cubuk et al., 2020). Defaults to False.
        rand_augment_layers: int. Operations applied to each image. Defaults to 2.
        rand_augment_magnitude: float in [0, 1]. keras-cv's magnitude scale, where 1.0 is the
            strongest distortion (the paper's m=10 of 30 is about 0.33). Defaults to 0.5.
        mixup_alpha: float. MixUp (Zhang et al., 2018) Beta(alpha, alpha) parameter; 0 disables.
            Defaults to 0.0.
        cutmix_alpha: float. CutMix (Yun et al., 2019) Beta(alpha, alpha) parameter; 0 disables.
            When both MixUp and CutMix are on, each batch gets one of them, chosen at random.
            Defaults to 0.0.
    """

    inception_crop: bool = True
    crop_area_range: tuple = (0.05, 1.0)
    flip: bool = True
    rand_augment: bool = False
    rand_augment_layers: int = 2
    rand_augment_magnitude: float = 0.5
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        low, high = self.crop_area_range
        check_number("crop_area_range[0]", low, 0.0, 1.0, low_open=True, high_open=False)
        check_number("crop_area_range[1]", high, low, 1.0, high_open=False)
        check_int("rand_augment_layers", self.rand_augment_layers, minimum=1)
        # keras-cv's magnitude scale.
        check_number("rand_augment_magnitude", self.rand_augment_magnitude, 0.0, 1.0,
                     high_open=False)
        for name in ("mixup_alpha", "cutmix_alpha"):  # 0 disables them
            check_number(name, getattr(self, name), low=0.0)

    @classmethod
    def none(cls):
        """Returns a config with every augmentation off: the training images are only resized."""
        return cls(inception_crop=False, flip=False)


def crop_resize_flip(image, seed, augment, size):
    """One training example: Inception crop (if on), bilinear resize to `size`, flip (if on).

    Args:
        image: uint8 (or 0..255 float) tensor (H, W, C).
        seed: int tensor of shape (2,), the example's stateless seed: the same seed gives the
            same crop and flip, whichever thread of a parallel map gets there first.
        augment: `AugmentConfig`.
        size: (height, width).

    Returns:
        float32 tensor (height, width, C), values still in [0, 255].
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if augment.inception_crop:
        image = inception_crop(image, crop_seed, augment.crop_area_range)
    image = tf.image.resize(image, size, method="bilinear")
    if augment.flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def inception_crop(image, seed, area_range):
    """Random crop of `area_range` of the area with aspect ratio in [3/4, 4/3] (stateless)."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        # No object boxes: the whole image is the object; the area range alone bounds the crop.
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=_CROP_ASPECT_RATIO_RANGE,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    # tf.slice with a dynamic size loses the static channel count, which the model needs.
    crop.set_shape([None, None, image.shape[-1]])
    return crop


def batch_augmenter(augment, channels, seed):
    """Returns the per-batch function (images, labels) -> (images, labels) of `augment`.

    keras-cv RandAugment, then MixUp or CutMix, on float images in [0, 255] (the pipeline
    normalizes afterwards) and one-hot labels (soft after mixing). With none of them on, the
    function returns its arguments.
    """
    # keras-cv 0.9 layers run in tf.data on Keras 3 when called on whole batches inside
    # `Dataset.map`; MixUp and CutMix must see a batch anyway (they mix examples with each other).
    with _float32_policy():
        rand_augment = None
        if augment.rand_augment:
            rand_augment = keras_cv.layers.RandAugment(
                value_range=(0, 255),
                augmentations_per_image=augment.rand_augment_layers,
                magnitude=augment.rand_augment_magnitude,
                seed=seed,
            )
        mixers = []
        if augment.mixup_alpha > 0:
            mixers.append(keras_cv.layers.MixUp(alpha=augment.mixup_alpha, seed=seed))
        if augment.cutmix_alpha > 0:
            mixers.append(keras_cv.layers.CutMix(alpha=augment.cutmix_alpha, seed=seed))
        mixer = None
        if len(mixers) == 1:
            mixer = mixers[0]
        elif mixers:
            # batchwise: the whole batch gets MixUp or CutMix; they cannot be mixed per example.
            mixer = keras_cv.layers.RandomChoice(mixers, batchwise=True, seed=seed)

    def augment_batch(images, labels):
        if rand_augment is not None:
            if channels == 1:
                # RandAugment's colour operations (rgb_to_grayscale) need 3 channels; on a gray
                # image replicated to RGB every operation keeps the channels equal, so averaging
                # them back loses nothing.
                images = tf.reduce_mean(
                    rand_augment(tf.tile(images, [1, 1, 1, 3]), training=True),
                    axis=-1,
                    keepdims=True,
                )
            else:
                images = rand_augment(images, training=True)
        if mixer is not None:
            mixed = mixer({"images": images, "labels": labels}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        return images, labels

    return augment_batch


@contextlib.contextmanager
def _float32_policy():
    # keras-cv layers take their compute dtype from the global policy when they are built; under
    # the training binary's "mixed_bfloat16" RandAugment's sub-layers would then return bfloat16
    # from some branches and float32 from others, which tf.cond rejects (and pixel values would
    # lose precision). Augmentation is input preprocessing: it runs in float32.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
