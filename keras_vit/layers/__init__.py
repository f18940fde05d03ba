"""The building blocks of a ViT, each a serializable `keras.layers.Layer`."""

from keras_vit.layers.class_token import ClassToken
from keras_vit.layers.patch_embedding import PatchEmbedding
from keras_vit.layers.pooling import TokenPooling
from keras_vit.layers.position_embedding import PositionEmbedding
from keras_vit.layers.resnet import BottleneckUnit
from keras_vit.layers.std_conv import StdConv2D
from keras_vit.layers.transformer_block import TransformerBlock

__all__ = [
    "BottleneckUnit",
    "ClassToken",
    "PatchEmbedding",
    "PositionEmbedding",
    "StdConv2D",
    "TokenPooling",
    "TransformerBlock",
]
