"""Cost of `ViT(dynamic_image_size=True)` against the static model, at the stored size.

    KERAS_BACKEND=tensorflow python benchmarks/dynamic_image_size.py [--rounds=7]

Two models with the same weights, one of a fixed 224x224 input and one of any input size,
timed alternately in each round on the same 224x224 images (where both compute the same
numbers): `predict_on_batch` of B/16 at batch 8, and `train_on_batch` (SGD) of S/16 at
batch 8. Prints each model's median time and the median of the per-round ratios
dynamic / static (1.00 = no cost). The dynamic model at another size is timed too, for
reference (it computes more tokens).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vit  # noqa: E402

_ROUNDS = flags.DEFINE_integer("rounds", 7, "Rounds; each figure is the median over them.")
_CALLS = flags.DEFINE_integer("calls", 3, "Calls per model per round (their mean is timed).")


def _pair(variant, **kwargs):
    static = keras_vit.ViT(variant, image_size=224, num_classes=1000, **kwargs)
    dynamic = keras_vit.ViT(variant, image_size=224, num_classes=1000, dynamic_image_size=True,
                            **kwargs)
    dynamic.set_weights(static.get_weights())
    return static, dynamic


def _time(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _measure(label, fns):
    for fn in fns.values():  # Warm-up: tracing and compilation.
        fn(), fn()
    times = {name: [] for name in fns}
    for _ in range(_ROUNDS.value):
        for name, fn in fns.items():
            times[name].append(_time(fn, _CALLS.value))
    static = times["static"]
    print(label)
    for name, values in times.items():
        ratio = statistics.median(v / s for v, s in zip(values, static))
        print(f"  {name:<28} {1000 * statistics.median(values):8.1f} ms   "
              f"vs static (paired median) {ratio:.3f}   runs "
              + ", ".join(f"{1000 * v:.0f}" for v in values))


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    print(f"backend={keras.backend.backend()} keras={keras.__version__} cpus={os.cpu_count()} "
          f"rounds={_ROUNDS.value} calls={_CALLS.value}")
    images = rng.uniform(-1, 1, (8, 224, 224, 3)).astype("float32")
    other = rng.uniform(-1, 1, (8, 192, 256, 3)).astype("float32")
    static, dynamic = _pair("B/16")
    _measure("B/16 predict_on_batch, batch 8", {
        "static": lambda: static.predict_on_batch(images),
        "dynamic": lambda: dynamic.predict_on_batch(images),
        "dynamic at 192x256": lambda: dynamic.predict_on_batch(other),
    })
    labels = rng.integers(0, 1000, 8)
    static, dynamic = _pair("S/16")
    for model in (static, dynamic):
        model.compile(optimizer=keras.optimizers.SGD(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _measure("S/16 train_on_batch (SGD), batch 8", {
        "static": lambda: static.train_on_batch(images, labels),
        "dynamic": lambda: dynamic.train_on_batch(images, labels),
    })


if __name__ == "__main__":
    app.run(main)
