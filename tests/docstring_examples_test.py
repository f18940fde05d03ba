"""Runs the `Example:` blocks of the public docstrings."""

import doctest
import os
import tempfile

import numpy as np
import pytest

import keras_vit
from keras_vit import (
    checkpoints,
    converters,
    distribution,
    downloads,
    explain,
    features,
    fewshot,
    files,
    finetune,
    hub,
    interpolation,
    labels,
    lora,
    model_layers,
    presets,
    preprocessing,
    validation,
    variants,
    vit,
)
from keras_vit.layers import (
    activations,
    block_kernels,
    class_token,
    initializers,
    layer_scale,
    map_head,
    patch_embedding,
    pooling,
    position_embedding,
    register_tokens,
    resnet,
    std_conv,
    swiglu,
    transformer_block,
)

MODULES = [variants, vit, checkpoints, finetune, fewshot, explain, interpolation, class_token,
           patch_embedding, pooling, position_embedding, transformer_block]

MODULES += [resnet, std_conv]  # the hybrid ViT's ResNet

MODULES += [files, model_layers]

MODULES += [block_kernels]  # the Transformer block's backend-specific kernels

MODULES += [labels]  # ImageNet class names, decode_predictions

MODULES += [presets]  # the released checkpoints by name

MODULES += [downloads, preprocessing, validation]  # weights by URL, raw images in, checks

MODULES += [lora]  # LoRA fine-tuning

MODULES += [distribution]  # keras.distribution layouts (model parallelism on JAX)

MODULES += [hub, converters]  # Hugging Face Hub checkpoints

# The DINOv2 / CLIP / SigLIP additions (issue 33).
MODULES += [activations, initializers, layer_scale, register_tokens, map_head, swiglu, features]

# A package's doctests are found in the module that defines each function, not where the
# package re-exports it: keras_vit.explain's examples live in its modules.
MODULES += [explain.probe, explain.analyses, explain.plots]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_examples_run(module):
    result = doctest.testmod(module, extraglobs={"np": np, "keras_vit": keras_vit, "os": os,
                                                 "tempfile": tempfile},
                             optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_examples_exist():
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for m in MODULES for t in finder.find(m))
    assert examples >= 8
