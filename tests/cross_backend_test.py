"""A model saved under one backend gives the same outputs under the others."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from keras_vit import variants

BACKENDS = ("tensorflow", "jax", "torch")
_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

# Loads each (model, images, output) triple of its arguments and writes the model's outputs:
# one process per other backend for all the models (a process start is most of the cost).
_LOAD_AND_RUN = """
import sys
import keras, numpy as np
import keras_vit  # registers the layers
args = sys.argv[1:]
for model_path, images_path, out_path in zip(args[0::3], args[1::3], args[2::3]):
    model = keras.saving.load_model(model_path)
    np.save(out_path, keras.ops.convert_to_numpy(model(np.load(images_path))))
"""

CASES = [
    dict(variant="mu/4", image_size=(16, 24), num_classes=5, representation_size=6),
    dict(variant="Ti/8", image_size=32, num_classes=3, pooling="gap",
         approximate_gelu=False),
    # A narrow hybrid: StdConv2D, GroupNorm and the "same" padding of the
    # strided convs and max pool, which is asymmetric (the 7x7/2 root conv on
    # 32 rows pads 2 above, 3 below), must agree too.
    dict(variant=dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                                     resnet_width=32),
         image_size=(32, 48), num_classes=4),
]


@pytest.fixture(scope="module")
def outputs_by_backend(tmp_path_factory):
    """[{backend: outputs}] for each of CASES: its model's outputs on random images under this
    backend, and under each other installed backend after a `.keras` round trip."""
    here = keras.backend.backend()
    others = [b for b in BACKENDS
              if b != here and importlib.util.find_spec(_MODULES[b]) is not None]
    if not others:
        pytest.skip("no other Keras backend is installed")
    tmp_path = tmp_path_factory.mktemp("cross_backend")
    rng = np.random.default_rng(0)
    results, files = [], []
    for i, kwargs in enumerate(CASES):
        model = keras_vit.ViT(**kwargs)
        for w in model.weights:
            w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
        height, width = model.input_shape[1:3]
        images = rng.uniform(-1, 1, (3, height, width, 3)).astype("float32")
        model_path, images_path = tmp_path / f"model_{i}.keras", tmp_path / f"images_{i}.npy"
        model.save(model_path)
        np.save(images_path, images)
        results.append({here: to_numpy(model(images))})
        files.append((model_path, images_path))
    for backend in others:
        args = []
        for i, (model_path, images_path) in enumerate(files):
            args += [str(model_path), str(images_path), str(tmp_path / f"{backend}_{i}.npy")]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run([sys.executable, "-c", _LOAD_AND_RUN, *args],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        for i, outputs in enumerate(results):
            outputs[backend] = np.load(tmp_path / f"{backend}_{i}.npy")
    return results


@pytest.mark.parametrize("case", range(len(CASES)), ids=["vit", "vit_gap_erf_gelu", "hybrid"])
def test_other_backends_reproduce_outputs(outputs_by_backend, case):
    here = keras.backend.backend()
    outputs = outputs_by_backend[case]
    expected = outputs[here]
    assert np.abs(expected).max() > 1e-2  # not trivially zero
    assert len(outputs) > 1
    for backend, found in outputs.items():
        np.testing.assert_allclose(found, expected, atol=1e-4, rtol=0,
                                   err_msg=f"{here} -> {backend}")
