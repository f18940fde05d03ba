"""The building blocks of a ViT, each a serializable `keras.layers.Layer`."""

from keras_vit.layers.activations import quick_gelu
from keras_vit.layers.class_token import ClassToken
from keras_vit.layers.layer_scale import LayerScale
from keras_vit.layers.map_head import MAPHead
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.pooling import TokenPooling
from keras_vit.layers.position_embedding import PositionEmbedding
from keras_vit.layers.register_tokens import RegisterTokens
from keras_vit.layers.resnet import BottleneckUnit
from keras_vit.layers.std_conv import StdConv2D
from keras_vit.layers.swiglu import SwiGLU
from keras_vit.layers.transformer_block import TransformerBlock

__all__ = [
    "BottleneckUnit",
    "ClassToken",
    "LayerScale",
    "MAPHead",
    "PatchEmbedding",
    "PositionEmbedding",
    "RegisterTokens",
    "StdConv2D",
    "SwiGLU",
    "TokenPooling",
    "TransformerBlock",
    "quick_gelu",
]
