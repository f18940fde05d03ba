"""Steps/sec (and, on a GPU, peak memory) of the training binary's step at several
`--accumulation_steps`, with the same global batch.

The step timed is the binary's own (`training.steps.create_step_functions` on a
`training.state.create_state` state, as `python -m training.train` builds them) on one fixed
random batch, so the input pipeline is not measured. With the defaults it is the binary's
default setup (`training.config.Config()`: mu/4 at 16x16, a global batch of 64, AdamW, clip at 1):

    KERAS_BACKEND=tensorflow python benchmarks/accumulation.py --accumulation_steps=1,4

Each figure is the median over `--repeats` timed rounds of `--steps` steps, after warm-up; the
settings alternate round by round, so that a shared machine's drift hits them alike. The
overhead is the time of a step relative to the first setting's.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import statistics  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from training import state as state_lib  # noqa: E402
from training import steps as steps_lib  # noqa: E402
from training.config import Config  # noqa: E402

_D = Config()
_VARIANT = flags.DEFINE_string("variant", _D.variant, "keras_vit variant, SIZE/PATCH.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _D.image_size, "Square image side.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Image channels (digits: 1).")
_CLASSES = flags.DEFINE_integer("num_classes", 10, "Classes (digits: 10).")
_BATCH = flags.DEFINE_integer("global_batch_size", _D.global_batch_size,
                              "Examples per update, as the binary's flag.")
_ACCUMULATION = flags.DEFINE_list("accumulation_steps", ["1", "4"],
                                  "The settings compared, the first is the reference.")
_JIT = flags.DEFINE_bool("jit_compile", False, "Compile the step with XLA.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed round.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed rounds; the median is reported.")
_WARMUP = flags.DEFINE_integer("warmup", 10, "Untimed steps before timing.")


def _train_step(accumulation_steps, images, labels):
    """The binary's train step at `accumulation_steps`, and the iterator it reads."""
    config = Config(variant=_VARIANT.value, image_size=_IMAGE_SIZE.value,
                    global_batch_size=_BATCH.value, accumulation_steps=accumulation_steps,
                    jit_compile=_JIT.value, warmup_steps=0).validate()
    strategy = tf.distribute.get_strategy()
    info = types.SimpleNamespace(num_classes=_CLASSES.value, channels=_CHANNELS.value)
    state = state_lib.create_state(config, info, total_steps=1_000_000, strategy=strategy)
    steps = steps_lib.create_step_functions(config, state, strategy)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    stop = tf.constant(0.0)
    return lambda: steps.train(iterator, stop)


def _peak_bytes():
    if not tf.config.list_physical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def main(argv):
    del argv
    settings = [int(n) for n in _ACCUMULATION.value]
    rng = np.random.default_rng(0)
    size = _IMAGE_SIZE.value
    images = tf.constant(rng.uniform(-1, 1, (_BATCH.value, size, size, _CHANNELS.value)),
                         tf.float32)
    labels = tf.one_hot(rng.integers(0, _CLASSES.value, _BATCH.value), _CLASSES.value)
    steps, peaks = {}, {}
    for n in settings:
        steps[n] = _train_step(n, images, labels)
        if _peak_bytes() is not None:
            tf.config.experimental.reset_memory_stats("GPU:0")
        for _ in range(_WARMUP.value):
            out = steps[n]()
        float(out["loss_sum"])
        peaks[n] = _peak_bytes()
    rounds = {n: [] for n in settings}
    for _ in range(_REPEATS.value):
        for n in settings:
            tick = time.perf_counter()
            for _ in range(_STEPS.value):
                out = steps[n]()
            float(out["loss_sum"])
            rounds[n].append(_STEPS.value / (time.perf_counter() - tick))
    print(f"{_VARIANT.value} at {size}x{size}, global batch {_BATCH.value}, "
          f"jit_compile={_JIT.value}, {os.cpu_count()} CPUs; medians of {_REPEATS.value} "
          f"rounds of {_STEPS.value} steps")
    reference = statistics.median(rounds[settings[0]])
    for n in settings:
        rate = statistics.median(rounds[n])
        memory = "" if peaks[n] is None else f", peak GPU memory {peaks[n] / 2**20:.0f} MiB"
        print(f"accumulation_steps={n:<3d} micro-batch {_BATCH.value // n:<5d} "
              f"{rate:8.2f} steps/s  {rate * _BATCH.value:9.1f} images/s  "
              f"step time x{reference / rate:.2f}{memory}  (rounds: "
              f"{', '.join(f'{r:.2f}' for r in rounds[n])})")


if __name__ == "__main__":
    app.run(main)
