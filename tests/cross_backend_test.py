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

_LOAD_AND_RUN = """
import sys
import keras, numpy as np
import keras_vit  # registers the layers
model = keras.saving.load_model(sys.argv[1])
images = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(images)))
"""


@pytest.mark.parametrize("kwargs", [
    dict(variant="mu/4", image_size=(16, 24), num_classes=5, representation_size=6),
    dict(variant="Ti/8", image_size=32, num_classes=3, pooling="gap",
         approximate_gelu=False),
    # A narrow hybrid: StdConv2D, GroupNorm and the "same" padding of the
    # strided convs and max pool, which is asymmetric (the 7x7/2 root conv on
    # 32 rows pads 2 above, 3 below), must agree too.
    dict(variant=dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                                     resnet_width=32),
         image_size=(32, 48), num_classes=4),
])
def test_other_backends_reproduce_outputs(tmp_path, kwargs):
    here = keras.backend.backend()
    others = [b for b in BACKENDS
              if b != here and importlib.util.find_spec(_MODULES[b]) is not None]
    if not others:
        pytest.skip("no other Keras backend is installed")
    model = keras_vit.ViT(**kwargs)
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
    height, width = model.input_shape[1:3]
    images = rng.uniform(-1, 1, (3, height, width, 3)).astype("float32")
    expected = to_numpy(model(images))
    assert np.abs(expected).max() > 1e-2  # not trivially zero
    model_path, images_path = tmp_path / "model.keras", tmp_path / "images.npy"
    model.save(model_path)
    np.save(images_path, images)
    for backend in others:
        out_path = tmp_path / f"{backend}.npy"
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run(
            [sys.executable, "-c", _LOAD_AND_RUN, str(model_path),
             str(images_path), str(out_path)],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        np.testing.assert_allclose(np.load(out_path), expected, atol=1e-4, rtol=0,
                                   err_msg=f"{here} -> {backend}")
