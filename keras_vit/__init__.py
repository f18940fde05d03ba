"""keras_vit: the Vision Transformer (Dosovitskiy et al., 2021) for Keras 3.

Runs on the TensorFlow, JAX and PyTorch backends.
"""

from keras_vit import checkpoints, fewshot, finetune, inspect, layers, variants
from keras_vit.vit import ViT

__version__ = "0.1.0"

__all__ = ["ViT", "checkpoints", "fewshot", "finetune", "inspect", "layers", "variants"]
