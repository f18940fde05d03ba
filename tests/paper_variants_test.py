"""The paper's models are built as they were before the DINOv2 / CLIP / SigLIP options.

`tests/data/paper_variants/` holds, written at commit 8fc2c6e by its `make.py`: five models
(token and "gap" pooling, a DeiT-style distilled model, a hybrid, a dynamic-size backbone with
preprocessing) saved as `.keras` with random non-zero weights, their inputs, each backend's
outputs, and their layer names, classes, weight paths and shapes and parameter counts. Today's
`ViT` must build the same structure, and the saved files must load and give bit-identical outputs.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_vit

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "paper_variants")

with open(os.path.join(DATA, "structure.json")) as f:
    STRUCTURE = json.load(f)


def _make_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_variants_make",
                                                  os.path.join(DATA, "make.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make_module()


def test_every_pinned_model_is_checked():
    assert sorted(STRUCTURE) == sorted(MAKE.MODELS) and len(STRUCTURE) == 5


@pytest.mark.parametrize("name", sorted(MAKE.MODELS))
def test_paper_variant_builds_the_same_layers_weights_and_counts(name):
    kwargs = dict(MAKE.MODELS[name])
    model = keras_vit.ViT(kwargs.pop("variant"), **kwargs)
    assert MAKE.describe(model) == STRUCTURE[name]


@pytest.mark.parametrize("name", sorted(MAKE.MODELS))
def test_keras_file_saved_before_loads_with_bit_identical_outputs(name):
    model = keras.saving.load_model(os.path.join(DATA, f"{name}.keras"), compile=False)
    images = np.load(os.path.join(DATA, f"{name}_inputs.npy"))
    expected = np.load(os.path.join(
        DATA, f"{name}_outputs_{keras.backend.backend()}{MAKE.xla_suffix()}.npy"))
    assert float(np.abs(expected).max()) > 1e-2
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images)), expected)
