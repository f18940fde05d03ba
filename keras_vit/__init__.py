"""keras_vit: the Vision Transformer (Dosovitskiy et al., 2021) for Keras 3.

Runs on the TensorFlow, JAX and PyTorch backends.
"""

from keras_vit import (
    checkpoints,
    distribution,
    downloads,
    explain,
    features,
    fewshot,
    finetune,
    labels,
    layers,
    lora,
    presets,
    preprocessing,
    variants,
)
from keras_vit.features import dense_features
from keras_vit.labels import decode_predictions
from keras_vit.preprocessing import preprocess_images
from keras_vit.vit import ViT

__version__ = "0.1.0"

__all__ = [
    "ViT",
    "checkpoints",
    "decode_predictions",
    "dense_features",
    "distribution",
    "downloads",
    "explain",
    "features",
    "fewshot",
    "finetune",
    "labels",
    "layers",
    "lora",
    "preprocess_images",
    "preprocessing",
    "presets",
    "variants",
]

