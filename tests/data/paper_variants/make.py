"""Writes the pins of `tests/paper_variants_test.py`: the paper's models as keras_vit built them
before the DINOv2 / CLIP / SigLIP options existed (commit 8fc2c6e).

Run once per backend from the repository root, at that commit (`PYTHONPATH=.`, so that the
checkout's keras_vit is the one imported):
`KERAS_BACKEND=B python tests/data/paper_variants/make.py`, and for JAX also with
`XLA_FLAGS=--xla_backend_optimization_level=0` (the tests' setting, `xla_suffix`). Each model is saved as `.keras`
(with random non-zero weights, so that no output is degenerate) with its input, and per backend
its output, parameter count, and its layers' names, classes and weight paths and shapes.
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.modules.setdefault("triton", None)

import keras  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import keras_vit  # noqa: E402
from keras_vit import variants  # noqa: E402

MU4 = variants.parse_variant("mu/4")
MODELS = {
    "token": dict(variant="mu/4", image_size=16, num_classes=5),
    "gap_pre_logits": dict(variant="mu/4", image_size=16, num_classes=5, pooling="gap",
                           representation_size=8),
    "deit_distilled": dict(variant=dataclasses.replace(
        MU4, distillation_token=True, layer_norm_epsilon=1e-12, approximate_gelu=False),
        image_size=16, num_classes=4, pooling="distilled"),
    "hybrid": dict(variant=dataclasses.replace(variants.parse_variant("mu/1"),
                                               resnet_units=(1, 1, 1), resnet_width=32),
                   image_size=32, num_classes=3),
    "dynamic_preprocessing_backbone": dict(variant="mu/4", image_size=16, include_top=False,
                                           dynamic_image_size=True,
                                           include_preprocessing=True),
}


def xla_suffix():
    """`_xla_o0` under `--xla_backend_optimization_level=0` (tests/all_backends.sh sets it): XLA
    then fuses less, and JAX's float32 outputs round differently in their last bits."""
    flags = os.environ.get("XLA_FLAGS", "")
    level0 = "--xla_backend_optimization_level=0" in flags
    return "_xla_o0" if level0 and keras.backend.backend() == "jax" else ""


def describe(model):
    return dict(
        params=int(model.count_params()),
        layers=[[layer.name, type(layer).__name__] for layer in model.layers],
        weights=[[w.path, list(w.shape)] for w in model.weights],
    )


def main():
    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    summary = {}
    for name, kwargs in MODELS.items():
        kwargs = dict(kwargs)
        model = keras_vit.ViT(kwargs.pop("variant"), **kwargs)
        path = os.path.join(HERE, f"{name}.keras")
        inputs_path = os.path.join(HERE, f"{name}_inputs.npy")
        if backend == "tensorflow":
            model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3
                               for w in model.get_weights()])
            model.save(path)
            size = (24, 20) if kwargs.get("dynamic_image_size") else model.input_shape[1:3]
            images = rng.uniform(0, 255 if kwargs.get("include_preprocessing") else 1,
                                 size=(2, *size, 3)).astype("float32")
            if not kwargs.get("include_preprocessing"):
                images = images * 2 - 1
            np.save(inputs_path, images)
        model = keras.saving.load_model(path, compile=False)
        images = np.load(inputs_path)
        np.save(os.path.join(HERE, f"{name}_outputs_{backend}{xla_suffix()}.npy"),
                keras.ops.convert_to_numpy(model(images)))
        summary[name] = describe(keras_vit.ViT(MODELS[name]["variant"], **{
            k: v for k, v in MODELS[name].items() if k != "variant"}))
    if backend == "tensorflow":  # the same on every backend
        with open(os.path.join(HERE, "structure.json"), "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
