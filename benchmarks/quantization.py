"""int8 weights (`model.quantize("int8")`) against float32 and bfloat16: CPU latency, memory, top-1.

Latency and memory (the default), one run for every backend and setting:

    python benchmarks/quantization.py --variant=B/16 --image_size=224 --batch_sizes=1,8 \
        --backends=tensorflow,jax,torch

The settings (`--configs`) are `float32`; `mixed_bfloat16` (float32 weights, bfloat16 matmuls);
`bfloat16` (bfloat16 weights and compute); `int8` (a float32 model after `model.quantize("int8")`:
int8 Dense kernels with per-channel scales, inputs quantized per token at each call, float32
elsewhere). One process first builds each setting's model (the same random weights, cast; a
non-zero head) and saves it as `.keras` in a temporary directory, timing `quantize`. Then, for each backend:

- one process per setting loads its `.keras` file, alone: weights (MiB of variables), resident
  memory the loaded model adds to the process (`loaded`, VmRSS after minus before
  `load_model`), and the peak over loading and `predict_on_batch` at each batch size
  (`peak`, VmHWM minus the VmRSS before loading);
- one process loads every setting and times `predict_on_batch` at each batch size: after
  `--warmup` calls, `--repeats` rounds of `--steps` calls, the settings taking turns in each
  round (the order rotating round by round), so that a shared machine's drift hits them alike.
  Reported: the median seconds per call, and the median over rounds of each setting's time over
  float32's time in the same round (the paired ratio, steadier where the load drifts).

Processes run one after another, never side by side.

Accuracy of a trained model (TensorFlow backend: the binary's evaluation pipeline):

    python benchmarks/quantization.py --model=workdir/model.keras --dataset=digits \
        --data_dir=/tmp/tfds

Top-1 of the model as saved and after `model.quantize("int8")`, on the dataset's evaluation
split through `training.train.evaluate_accuracy` (the evaluation the training binary runs).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

CONFIGS = ("float32", "mixed_bfloat16", "bfloat16", "int8")

_VARIANT = flags.DEFINE_string("variant", "B/16", "keras_vit variant.")
_IMAGE = flags.DEFINE_integer("image_size", 224, "Square image side (accuracy mode: only for a "
                              "model with a dynamic image size).")
_BATCHES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Images per predict_on_batch call.")
_CONFIGS = flags.DEFINE_list("configs", list(CONFIGS), f"Settings, from {CONFIGS}; the first "
                             "is the reference of the ratios.")
_BACKENDS = flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Keras backends.")
_STEPS = flags.DEFINE_integer("steps", 3, "Calls per timed round.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds; medians are reported.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls per setting and batch size.")
_JIT = flags.DEFINE_string("jit_compile", "auto", "jit_compile passed to compile().")
_MODEL = flags.DEFINE_string("model", None, "Accuracy mode: a trained .keras model.")
_DATASET = flags.DEFINE_string("dataset", "digits", "Accuracy mode: TFDS dataset name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Accuracy mode: TFDS data directory.")
_CHILD = flags.DEFINE_string("child", None, "Internal: prepare | memory:CONFIG | latency.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Internal: where the .keras files are.")


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    # Writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current one.
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _images(batch):
    import numpy as np

    size = _IMAGE.value
    return np.random.default_rng(batch).uniform(-1, 1, (batch, size, size, 3)).astype("float32")


def _weight_mib(model):
    import keras
    import numpy as np

    return sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
               for v in model.weights) / 2**20


def _path(config):
    return os.path.join(_WORKDIR.value, f"{config}.keras")


def _prepare():
    """Builds and saves each setting's model; {config: {quantize_s, file_mib}}."""
    import gc
    import warnings

    import keras
    import numpy as np

    import keras_vit
    from keras_vit import model_layers

    # One set of weights for every setting (a bfloat16 model initialized on its own would draw
    # other random numbers): the float32 model's, cast.
    keras.utils.set_random_seed(0)
    reference = keras_vit.ViT(_VARIANT.value, image_size=_IMAGE.value, num_classes=1000)
    head = model_layers.find_layer(reference, "head")
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.02, head.kernel.shape))
    weights = reference.get_weights()
    del reference
    report = {}
    for config in _CONFIGS.value:
        keras.config.set_dtype_policy("float32" if config == "int8" else config)
        model = keras_vit.ViT(_VARIANT.value, image_size=_IMAGE.value, num_classes=1000)
        keras.config.set_dtype_policy("float32")
        model.set_weights(weights)
        entry = {}
        if config == "int8":
            gc.collect()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the layers that stay float
                model.quantize("int8")
            entry["quantize_s"] = time.perf_counter() - start
        model.save(_path(config))
        entry["file_mib"] = os.path.getsize(_path(config)) / 2**20
        report[config] = entry
        del model
        gc.collect()
    return report


def _memory(config):
    import gc

    import keras
    import numpy as np

    import keras_vit  # noqa: F401  (registers the layers the .keras file names)

    keras.ops.convert_to_numpy(keras.ops.ones((2, 2)) @ keras.ops.ones((2, 2)))  # runtime up
    gc.collect()
    before = _status_kib("VmRSS")
    _reset_peak()
    model = keras.saving.load_model(_path(config), compile=False)
    model.compile(jit_compile=_jit(_JIT.value))
    gc.collect()
    loaded = _status_kib("VmRSS")
    for batch in sorted(int(b) for b in _BATCHES.value):
        for _ in range(2):
            np.asarray(model.predict_on_batch(_images(batch)))
    return {"weights_mib": _weight_mib(model), "loaded_mib": (loaded - before) / 1024,
            "peak_mib": (_status_kib("VmHWM") - before) / 1024}


def _latency():
    import keras
    import numpy as np

    import keras_vit  # noqa: F401  (registers the layers the .keras file names)

    models = {}
    for config in _CONFIGS.value:
        models[config] = keras.saving.load_model(_path(config), compile=False)
        models[config].compile(jit_compile=_jit(_JIT.value))
    report = {}
    for batch in (int(b) for b in _BATCHES.value):
        images = _images(batch)
        logits = {}
        for config, model in models.items():
            for _ in range(_WARMUP.value):
                logits[config] = np.asarray(model.predict_on_batch(images), "float32")
        times = {config: [] for config in models}
        order = list(models)
        for _ in range(_REPEATS.value):
            for config in order:
                start = time.perf_counter()
                for _ in range(_STEPS.value):
                    np.asarray(models[config].predict_on_batch(images))
                times[config].append((time.perf_counter() - start) / _STEPS.value)
            order = order[1:] + order[:1]
        reference = logits[_CONFIGS.value[0]]
        report[batch] = {
            config: {
                "times_s": times[config],
                # How far each setting's logits are from the reference's, relative to their
                # scale (a sanity check that every model computes the same function).
                "logit_error": float(np.abs(logits[config] - reference).max()
                                     / np.abs(reference).max()),
            }
            for config in models
        }
    return report


def _jit(value):
    return {"true": True, "false": False}.get(value.lower(), value)


def _run_child(backend, child):
    env = dict(os.environ, KERAS_BACKEND=backend)
    args = [sys.executable, os.path.abspath(__file__), f"--child={child}",
            f"--workdir={_WORKDIR.value}", f"--variant={_VARIANT.value}",
            f"--image_size={_IMAGE.value}", f"--batch_sizes={','.join(_BATCHES.value)}",
            f"--configs={','.join(_CONFIGS.value)}", f"--steps={_STEPS.value}",
            f"--repeats={_REPEATS.value}", f"--warmup={_WARMUP.value}",
            f"--jit_compile={_JIT.value}"]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{backend} {child} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def _cpu_name():
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _benchmark():
    configs = _CONFIGS.value
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise app.UsageError(f"Unknown configs {unknown}: expected some of {CONFIGS}")
    print(f"{_VARIANT.value} at {_IMAGE.value}x{_IMAGE.value}, predict_on_batch, "
          f"jit_compile={_JIT.value}; {os.cpu_count()} CPUs ({_cpu_name()}); "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"medians of {_REPEATS.value} rounds of {_STEPS.value} calls after {_WARMUP.value} "
          f"warm-up calls; one process per backend for times, one per backend and setting "
          f"for memory")
    with tempfile.TemporaryDirectory() as workdir:
        flags.FLAGS.workdir = workdir
        prepared = _run_child(_BACKENDS.value[0], "prepare")
        print(f"saved .keras files: " + ", ".join(
            f"{c} {prepared[c]['file_mib']:.0f} MiB" for c in configs))
        if "int8" in prepared:
            print(f"model.quantize('int8') took {prepared['int8']['quantize_s']:.1f} s "
                  f"({_BACKENDS.value[0]})")
        for backend in _BACKENDS.value:
            memory = {c: _run_child(backend, f"memory:{c}") for c in configs}
            latency = _run_child(backend, "latency")
            print(f"\n{backend}")
            print(f"{'setting':<16}{'weights MiB':>12}{'loaded MiB':>11}{'peak MiB':>10}")
            for c in configs:
                m = memory[c]
                print(f"{c:<16}{m['weights_mib']:>12.0f}{m['loaded_mib']:>11.0f}"
                      f"{m['peak_mib']:>10.0f}")
            for batch, runs in latency.items():
                print(f"batch {batch}: {'s/call':>8}{'vs ' + configs[0]:>12}{'paired':>8}"
                      f"{'logit err':>10}   rounds (s/call)")
                reference = statistics.median(runs[configs[0]]["times_s"])
                for c in configs:
                    times = runs[c]["times_s"]
                    paired = statistics.median(
                        t / r for t, r in zip(times, runs[configs[0]]["times_s"]))
                    print(f"  {c:<14}{statistics.median(times):>8.3f}"
                          f"{statistics.median(times) / reference:>11.2f}x{paired:>7.2f}x"
                          f"{runs[c]['logit_error']:>10.4f}   "
                          + ", ".join(f"{t:.3f}" for t in times))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


def _accuracy():
    import warnings

    import keras

    import keras_vit  # noqa: F401  (registers the layers the .keras file names)

    if keras.backend.backend() != "tensorflow":
        raise app.UsageError("the accuracy mode reads data through the training binary's "
                             "tf.data pipeline: run it with KERAS_BACKEND=tensorflow")
    from training.train import evaluate_accuracy

    model = keras.saving.load_model(_MODEL.value, compile=False)
    height, width = model.input_shape[1:3]
    if height is None or width is None:
        height = width = _IMAGE.value
    kwargs = dict(data_dir=_DATA_DIR.value, image_size=(height, width))
    start = time.perf_counter()
    float_top1 = evaluate_accuracy(model, _DATASET.value, **kwargs)
    float_s = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.quantize("int8")
    start = time.perf_counter()
    int8_top1 = evaluate_accuracy(model, _DATASET.value, **kwargs)
    int8_s = time.perf_counter() - start
    print(f"{_MODEL.value} on {_DATASET.value} (evaluation split, {height}x{width}): "
          f"float top-1 {100 * float_top1:.2f}% ({float_s:.1f} s), "
          f"int8 top-1 {100 * int8_top1:.2f}% ({int8_s:.1f} s), "
          f"difference {100 * (int8_top1 - float_top1):+.2f} points")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    child = _CHILD.value
    if child == "prepare":
        print(json.dumps(_prepare()))
    elif child and child.startswith("memory:"):
        print(json.dumps(_memory(child.split(":", 1)[1])))
    elif child == "latency":
        print(json.dumps(_latency()))
    elif _MODEL.value:
        _accuracy()
    else:
        _benchmark()


if __name__ == "__main__":
    app.run(main)
