"""The training binary's images/sec against its bare training step, paired in one run.

    python benchmarks/train_binary.py --rounds=3 --steps=120
    python benchmarks/train_binary.py --rounds=3 --steps=120 -- --dataset=... [binary flags]

Without binary flags it takes the CIFAR-10 command of docs/benchmarks.md (ViT-Ti/8 at 32x32,
batch 128, the offline `cifar10_jpeg` from $KERAS_VIT_TFDS_DIR), with 10 warmup steps instead of 300 so that short runs are
valid (the schedule does not change a step's cost). Each round runs two fresh processes, in
an order that alternates between rounds:

- binary: `python -m training.train FLAGS --train_steps=STEPS` into a temporary workdir; its
  figure is `train_images_per_sec` from metrics.json (all steps but the first, which compiles;
  the input pipeline, the loop, the metrics and the TensorBoard writes included).
- bare: the same settings' model, optimizer and compiled step (`training.steps`, as the binary
  builds them) fed one batch of the real pipeline held in memory, repeated; timed like the
  binary's loop times its steps (STEPS - 1 steps after the first), with nothing else between
  steps. The difference between the two is what the loop, the input pipeline and the metrics
  cost.

It prints each side's rounds and median and the median of the per-round ratios binary/bare.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

from training import flags as training_flags  # noqa: E402

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Paired rounds.")
_STEPS = flags.DEFINE_integer("steps", 120, "Training steps per process.")
_MODE = flags.DEFINE_enum("mode", "driver", ["driver", "bare"], "Internal: the bare side.")
if "--mode=bare" in sys.argv:
    # The bare side reads the binary's own flags; the driver passes them on after "--".
    training_flags.define_training_flags()

_CIFAR = [
    "--dataset=cifar10_jpeg",
    "--variant=Ti/8", "--image_size=32", "--pooling=gap", "--flip", "--global_batch_size=128",
    "--learning_rate=1e-3", "--warmup_steps=10", "--mixup=0",
]


def _bare():
    import numpy as np
    import tensorflow as tf
    import keras

    from training import distribute, loop
    from training import state as state_lib
    from training import steps as steps_lib
    from training import train as train_lib

    config = training_flags.config_from_flags()
    strategy = distribute.get_strategy(config.strategy, tpu=config.tpu)
    if strategy.num_replicas_in_sync > 1:
        raise SystemExit("train_binary.py times one replica; use the default --strategy")
    keras.config.set_dtype_policy(train_lib._DTYPE_POLICIES[config.mixed_precision])
    data = train_lib.RunData(config, strategy)
    length = loop.RunLength.create(config, data.info)
    state = state_lib.create_state(config, data.info, total_steps=length.total_steps,
                                   strategy=strategy)
    steps = steps_lib.create_step_functions(config, state, strategy)
    batch = next(iter(data.train(0)))
    held = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch).repeat())
    iterator = iter(held)
    stop = np.asarray(0.0, np.float32)
    seconds = 0.0
    for step in range(_STEPS.value):
        tick = time.perf_counter()
        out = {key: float(value) for key, value in steps.train(iterator, stop).items()}
        if step:
            seconds += time.perf_counter() - tick
    assert out["count"] == config.global_batch_size, out
    print(f"bare_images_per_sec {(_STEPS.value - 1) * config.global_batch_size / seconds:.3f}")


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True, cwd=_REPO)
    if result.returncode:
        raise RuntimeError(f"{command[:4]}... exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return result.stdout


def _binary_round(flags_):
    import json

    with tempfile.TemporaryDirectory() as workdir:
        _run([sys.executable, "-m", "training.train", *flags_, f"--workdir={workdir}",
              f"--train_steps={_STEPS.value}", "--noprogress"])
        with open(os.path.join(workdir, "metrics.json")) as metrics:
            return json.load(metrics)["train_images_per_sec"]


def _bare_round(flags_):
    with tempfile.TemporaryDirectory() as workdir:
        out = _run([sys.executable, os.path.abspath(__file__), "--mode=bare",
                    f"--steps={_STEPS.value}", *flags_, f"--workdir={workdir}",
                    f"--train_steps={_STEPS.value}"])
    return float(out.split("bare_images_per_sec")[1].split()[0])


def _cifar_flags():
    """The default binary flags: _CIFAR, reading the offline copy from $KERAS_VIT_TFDS_DIR."""
    data_dir = os.environ.get("KERAS_VIT_TFDS_DIR")
    if not data_dir:
        raise app.UsageError(
            "Without binary flags this benchmark reads the offline cifar10_jpeg from the TFDS "
            "directory in $KERAS_VIT_TFDS_DIR, which is not set; set it, or pass the binary's "
            "flags after '--' (e.g. -- --dataset=cifar10 ...)")
    return [*_CIFAR, f"--data_dir={data_dir}"]


def main(argv):
    if _MODE.value == "bare":
        return _bare()
    binary_flags = argv[1:] or _cifar_flags()
    print(f"binary flags: {' '.join(binary_flags)}; steps={_STEPS.value} "
          f"rounds={_ROUNDS.value} cpus={os.cpu_count()}")
    rates = {"binary": [], "bare": []}
    sides = {"binary": _binary_round, "bare": _bare_round}
    order = ["binary", "bare"]
    for round_ in range(_ROUNDS.value):
        for side in order:
            rates[side].append(sides[side](binary_flags))
            print(f"round {round_ + 1} {side:6s} {rates[side][-1]:9.1f} img/s", flush=True)
        order.reverse()
    for side, values in rates.items():
        print(f"{side:6s} median {statistics.median(values):9.1f} img/s "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")
    paired = statistics.median(b / a for b, a in zip(rates["binary"], rates["bare"]))
    print(f"paired-round ratio binary/bare (median) = {paired:.3f}")


if __name__ == "__main__":
    app.run(main)
