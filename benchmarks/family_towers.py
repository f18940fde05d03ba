"""CPU inference of the DINOv2 and CLIP towers, keras_vit against transformers, and the options' cost.

    KERAS_BACKEND=tensorflow python benchmarks/family_towers.py --part=towers --repeats=5
    KERAS_BACKEND=torch python benchmarks/family_towers.py --part=towers --repeats=5
    KERAS_BACKEND=tensorflow python benchmarks/family_towers.py --part=options --repeats=5

`--part=towers`: transformers builds a DINOv2-B/14 (`Dinov2Model`) and a CLIP B/16 image tower
with its projection (`CLIPVisionModelWithProjection`) from their configs at 224 pixels, with
random weights at their real sizes, and writes them with `save_pretrained`; keras_vit loads
each folder (`ViT(weights=folder)`, the converter of `keras_vit.converters`) and the script
first checks that both give the same outputs. Then, for batch 1 and 8, it times in turn, in
this one process: keras_vit's `predict_on_batch` (compiled as Keras compiles it on the
backend) and transformers' forward under `torch.inference_mode()`, each round `--steps`
calls after `--warmup` calls. A figure is the median of `--repeats` rounds; the ratio is the
median of the per-round ratios (rounds run back to back see nearly the same machine).

`--part=options`: the paper's B/16 at 224, batch 8, with each option of the later families
turned on alone (LayerScale, 4 registers, pre-encoder LayerNorm, no patch bias, QuickGELU,
SwiGLU at the width that keeps the parameters, MAP pooling), each timed in turn with the
plain model; the ratio is option / plain (above 1: slower). With an option off the model is
the paper's, layer for layer (`tests/paper_variants_test.py`): that cost is measured by running
`benchmarks/throughput.py` on this commit and on the commit before the options, in turn.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# triton (torch's GPU compiler) crashes when imported after TensorFlow; torch runs without it
# on the CPU (tests/conftest.py says more).
sys.modules.setdefault("triton", None)

import dataclasses  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vit  # noqa: E402

_PART = flags.DEFINE_enum("part", "towers", ["towers", "options"], "What to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds; medians are reported.")
_STEPS = flags.DEFINE_integer("steps", 3, "Calls per timed round.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first.")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes of --part=towers.")


def _round(call, images):
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        call(images)
    return _STEPS.value * images.shape[0] / (time.perf_counter() - start)


def _keras_call(model):
    model.compile()  # predict_on_batch then runs the backend's compiled function

    def call(images):
        return keras.ops.convert_to_numpy(model.predict_on_batch(images))
    return call


def _compare(name, calls, images_by_peer):
    """Times the peers in turn; prints medians and the paired ratio keras_vit / each other."""
    for peer, call in calls.items():
        for _ in range(_WARMUP.value):
            call(images_by_peer[peer])
    rates = {peer: [] for peer in calls}
    for _ in range(_REPEATS.value):
        for peer, call in calls.items():
            rates[peer].append(_round(call, images_by_peer[peer]))
    first = next(iter(calls))
    for peer, values in rates.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:28s} {peer:14s} {statistics.median(values):8.2f} img/s  (rounds: {spread})")
    for peer in list(rates)[1:]:
        paired = statistics.median(a / b for a, b in zip(rates[first], rates[peer]))
        print(f"{name:28s} paired ratio {first}/{peer} (median) = {paired:.3f}")


def _towers():
    import torch
    import transformers

    towers = {
        "DINOv2-B/14": (transformers.Dinov2Model, transformers.Dinov2Config(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, patch_size=14, image_size=224)),
        "CLIP B/16 (+projection)": (
            transformers.CLIPVisionModelWithProjection, transformers.CLIPVisionConfig(
                hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, patch_size=16, image_size=224, projection_dim=512)),
    }
    torch.manual_seed(0)
    for name, (cls, config) in towers.items():
        reference = cls(config).eval()
        folder = tempfile.mkdtemp(prefix="family_towers_")
        reference.save_pretrained(folder)
        model = keras_vit.ViT(weights=folder)
        count = sum(p.numel() for p in reference.parameters())
        print(f"# {name}: transformers {count / 1e6:.2f}M parameters, keras_vit "
              f"{model.count_params() / 1e6:.2f}M, {config._attn_implementation} attention")

        def reference_call(images, reference=reference):
            with torch.inference_mode():
                out = reference(pixel_values=images)
            return out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output

        nhwc = np.random.default_rng(0).normal(size=(8, 224, 224, 3)).astype("float32")
        nchw = torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())
        ours, theirs = keras.ops.convert_to_numpy(model(nhwc)), reference_call(nchw).numpy()
        scale = float(np.abs(theirs).max())
        print(f"# {name}: max |keras_vit - transformers| = {np.abs(ours - theirs).max():.2e} "
              f"(output scale {scale:.2f})")
        calls = {"keras_vit": _keras_call(model), "transformers": reference_call}
        for batch in (int(b) for b in _BATCHES.value):
            _compare(f"{name} batch {batch}", calls,
                     {"keras_vit": nhwc[:batch], "transformers": nchw[:batch]})


def _options():
    base = keras_vit.variants.parse_variant("B/16")
    options = {
        "layer_scale": (dict(layer_scale=1e-5), {}),
        "4 registers": (dict(num_registers=4), {}),
        "pre_norm": (dict(pre_norm=True), {}),
        "no patch bias": (dict(patch_bias=False), {}),
        "quick_gelu": (dict(activation="quick_gelu"), {}),
        # SwiGLU at DINOv2's rule, hidden width 2/3 of the MLP's: about the same parameters.
        "swiglu (hidden 2048)": (dict(activation="swiglu", mlp_dim=2048), {}),
        "map pooling": ({}, dict(pooling="map", num_classes=0)),
    }
    images = np.random.default_rng(0).normal(size=(8, 224, 224, 3)).astype("float32")
    plain = _keras_call(keras_vit.ViT(base, num_classes=0))
    for name, (spec_options, kwargs) in options.items():
        model = keras_vit.ViT(dataclasses.replace(base, **spec_options),
                              **{"num_classes": 0, **kwargs})
        _compare(f"B/16 {name}", {"plain": plain, "option": _keras_call(model)},
                 {"plain": images, "option": images})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    print(f"# backend={keras.backend.backend()} part={_PART.value} repeats={_REPEATS.value} "
          f"steps={_STEPS.value} cpus={os.cpu_count()}")
    _towers() if _PART.value == "towers" else _options()


if __name__ == "__main__":
    app.run(main)
