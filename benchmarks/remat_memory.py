"""Memory and time of a training step with and without gradient checkpointing (`remat`).

    python benchmarks/remat_memory.py [--variant=B/16 --batch_size=32 --steps=3
                                       --backends=tensorflow,jax,torch]

For each backend, two fresh processes (without, then with `ViT(..., remat=True)`) build the
model, compile it with AdamW (or plain SGD) and build the optimizer's state, then run `train_on_batch` on
one random batch `--steps` times. Each reports, from /proc/self/status:

- `state`: resident memory before the first step (weights, optimizer state, the runtime);
- `step`: the peak resident memory of the steps minus `state`: what a step adds on top,
  activations kept for the backward pass and gradients (and, for the first step, tracing or
  compilation: the peak of the later steps alone is printed too);
- the median time of the steps after the first.

With `--optimizer=sgd` the step memory less the gradients' size is the activations' memory.
The ratio "step memory without / with" is the cut of memory that remat buys; the time ratio
is its price. Processes run one after another, never side by side.
"""

import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from procmem import reset_peak, rss_kib  # noqa: E402  (benchmarks/, the script's directory)

_VARIANT = flags.DEFINE_string("variant", "B/16", "Model variant.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per step.")
_IMAGE = flags.DEFINE_integer("image_size", 224, "Image height and width.")
_STEPS = flags.DEFINE_integer("steps", 3, "train_on_batch calls per process (the first traces).")
_BACKENDS = flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Keras backends.")
_OPTIMIZER = flags.DEFINE_enum("optimizer", "adamw", ["adamw", "sgd"],
                                "adamw: the paper's pre-training optimizer (its update makes "
                                "temporaries of the weights' size); sgd (no momentum): almost "
                                "none, so the step memory is activations and gradients.")
_CHILD = flags.DEFINE_enum("child", None, ["off", "on"], "Internal: measure in this process.")


def _measure(remat):
    import gc

    import keras
    import numpy as np

    import keras_vit

    model = keras_vit.ViT(_VARIANT.value, image_size=_IMAGE.value, num_classes=1000,
                          remat=remat)
    optimizer = (keras.optimizers.AdamW(1e-4) if _OPTIMIZER.value == "adamw"
                 else keras.optimizers.SGD(1e-4))
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (_BATCH.value, _IMAGE.value, _IMAGE.value, 3)).astype("float32")
    labels = rng.integers(0, 1000, _BATCH.value)
    gc.collect()
    state = rss_kib("VmRSS")
    reset_peak()
    times, peak_later = [], 0
    for step in range(_STEPS.value):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - start)
        if step == 0:
            peak_first = rss_kib("VmHWM")
            reset_peak()
        else:
            peak_later = max(peak_later, rss_kib("VmHWM"))
    return {
        "gradient_mib": sum(np.prod(v.shape) * 4 for v in model.trainable_variables) / 2**20,
        "state_mib": state / 1024,
        "peak_first_mib": peak_first / 1024,
        "peak_later_mib": peak_later / 1024,
        "step_times_s": times,
    }


def _run_child(backend, mode):
    env = dict(os.environ, KERAS_BACKEND=backend)
    args = [sys.executable, os.path.abspath(__file__), f"--child={mode}",
            f"--variant={_VARIANT.value}", f"--batch_size={_BATCH.value}",
            f"--image_size={_IMAGE.value}", f"--steps={_STEPS.value}",
            f"--optimizer={_OPTIMIZER.value}"]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} remat={mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv):
    del argv
    if _CHILD.value:
        print(json.dumps(_measure(_CHILD.value == "on")))
        return
    print(f"{_VARIANT.value}, {_IMAGE.value}x{_IMAGE.value}, batch {_BATCH.value}, "
          f"{_OPTIMIZER.value}, "
          f"train_on_batch x {_STEPS.value}, float32; cpus={os.cpu_count()}")
    print(f"{'backend':<11}{'remat':<6}{'state MiB':>10}{'step MiB':>10}{'later MiB':>10}"
          f"{'step s':>8}   step memory off/on, time on/off")
    for backend in _BACKENDS.value:
        runs = {mode: _run_child(backend, mode) for mode in ("off", "on")}
        for mode, run in runs.items():
            run["step_mib"] = run["peak_first_mib"] - run["state_mib"]
            run["later_mib"] = run["peak_later_mib"] - run["state_mib"]
            run["time_s"] = statistics.median(run["step_times_s"][1:] or run["step_times_s"])
            print(f"{backend:<11}{mode:<6}{run['state_mib']:>10.0f}{run['step_mib']:>10.0f}"
                  f"{run['later_mib']:>10.0f}{run['time_s']:>8.2f}   steps "
                  + ", ".join(f"{t:.2f}" for t in run["step_times_s"]))
        off, on = runs["off"], runs["on"]
        grads = off["gradient_mib"]
        print(f"{backend:<11}      without the {grads:.0f} MiB of gradients: "
              f"{off['step_mib'] - grads:.0f} MiB -> {on['step_mib'] - grads:.0f} MiB "
              f"({(off['step_mib'] - grads) / max(on['step_mib'] - grads, 1):.2f}x)")
        print(f"{backend:<11}      memory cut {off['step_mib'] / on['step_mib']:.2f}x "
              f"(later steps {off['later_mib'] / max(on['later_mib'], 1):.2f}x), "
              f"time {on['time_s'] / off['time_s']:.2f}x")


if __name__ == "__main__":
    app.run(main)
