"""Exported files in their runtimes next to the Keras model: accuracy, size, latency, throughput.

    KERAS_BACKEND=tensorflow python benchmarks/export.py [--digits_model=WORKDIR/model.keras]
        [--variants=Ti/16,B/16] [--rounds=5] [--output=benchmarks/results/FILE.md]

Two parts, one run:

1. **Accuracy** on the digits test set (359 images): a ViT trained by the default training run
   (`--digits_model`, or trained here in about 90 s) exported by `training.export` as LiteRT
   (float32, float16, dynamic_range, int8 calibrated on 200 training images) and ONNX, each
   file run in its runtime (the LiteRT interpreter of `ai-edge-litert`, `onnxruntime`) on the
   uint8 test images; top-1 accuracy, top-1 agreement with the Keras model and the largest
   logit difference.
2. **Speed** of each variant at 224x224 (random weights: speed does not depend on them;
   int8 is calibrated on 32 crops of scikit-learn's two photos): each file exported in its own
   process (LiteRT on TensorFlow, ONNX on PyTorch) with its time and peak memory, file size,
   batch-1 latency
   and batch-8 throughput of the Keras model (the same uint8 serving model, as a
   `tf.function` and through `predict_on_batch`) and of each file in its runtime; speed-ups
   are paired per round against the `tf.function`. Formats are measured in turns within each round
   (`--rounds`); each figure is the median over rounds, a round's batch-1 latency is the
   median of `--calls` calls. Every runtime uses all cores (the LiteRT interpreter is given
   `num_threads=os.cpu_count()`; its default is one thread).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vit  # noqa: E402
from training import export, input_pipeline  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DIGITS_MODEL = flags.DEFINE_string("digits_model", None, "A digits model.keras (the default "
                                    "training run's); unset: trained here.")
_VARIANTS = flags.DEFINE_list("variants", ["Ti/16", "B/16"], "Variants of the speed part.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Image size of the speed part.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of the speed part; medians over them.")
_CALLS = flags.DEFINE_integer("calls", 10, "Batch-1 calls per round.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the report to this file.")

# (label, format, quantize) of every export measured.
EXPORTS = (
    ("LiteRT float32", "litert", "none"),
    ("LiteRT float16", "litert", "float16"),
    ("LiteRT dynamic-range int8", "litert", "dynamic_range"),
    ("LiteRT int8", "litert", "int8"),
    ("ONNX float32", "onnx", "none"),
)


class Runner:
    """Calls an exported file (or the Keras model) on a uint8 batch; returns the logits."""

    def __init__(self, path):
        self.path = path
        if path.endswith(".tflite"):
            from ai_edge_litert.interpreter import Interpreter

            # Every core, as onnxruntime and TensorFlow use by default (the interpreter's
            # default is one thread).
            self._runner = Interpreter(model_path=path,
                                       num_threads=os.cpu_count()).get_signature_runner()
        elif path.endswith(".onnx"):
            import onnxruntime

            self._session = onnxruntime.InferenceSession(path,
                                                         providers=["CPUExecutionProvider"])

    def __call__(self, images):
        if self.path.endswith(".tflite"):
            return self._runner(images=images)["logits"]
        return self._session.run(["logits"], {"images": images})[0]


class KerasRunner:
    """The serving model in Keras: `predict_on_batch`, or its graph alone (`graph=True`)."""

    def __init__(self, model, graph=False):
        self.model = export.serving_model(model)
        if graph:
            import tensorflow as tf

            call = tf.function(lambda images: self.model(images, training=False)["logits"])
            self._call = lambda images: call(images).numpy()
        else:
            self._call = lambda images: self.model.predict_on_batch(images)["logits"]

    def __call__(self, images):
        return self._call(images)


def _digits_model(workdir):
    if _DIGITS_MODEL.value:
        return _DIGITS_MODEL.value
    from training import train
    from training.config import Config

    print("training the default digits model (python -m training.train's run) ...", flush=True)
    train.train_and_evaluate(Config(progress=False), workdir)
    return os.path.join(workdir, "model.keras")


def accuracy_part(workdir):
    path = _digits_model(os.path.join(workdir, "digits"))
    model = keras.saving.load_model(path, compile=False)
    size = model.input_shape[1]
    images, labels = input_pipeline.raw_images("digits", data_dir=None, image_size=size,
                                               split="test")
    calibration, _ = input_pipeline.raw_images("digits", data_dir=None, image_size=size,
                                               split="train", count=200, seed=0)
    reference = KerasRunner(model)(images)
    lines = [
        f"Digits test set ({len(images)} images), {model.name} {size}x{size} "
        f"({model.count_params():,} parameters), from {path}",
        "| model | size | top-1 accuracy | top-1 agreement with Keras | max abs logit diff |",
        "|---|---:|---:|---:|---:|",
        f"| Keras float32 | {_size(path)} | {_percent(reference, labels)} | - | - |",
    ]
    for label, fmt, quantize in EXPORTS:
        name = f"digits_{quantize}{export.SUFFIXES[fmt]}"
        out = export.export(model, os.path.join(workdir, name),
                            format=fmt, quantize=quantize, calibration_images=calibration)
        logits = Runner(out)(images)
        agreement = np.mean(logits.argmax(-1) == reference.argmax(-1))
        lines.append(f"| {label} | {_size(out)} | {_percent(logits, labels)} | "
                     f"{100 * agreement:.2f}% | {np.abs(logits - reference).max():.2g} |")
    return lines


def speed_part(workdir, variant):
    size = _IMAGE_SIZE.value
    model = keras_vit.ViT(variant, image_size=size, num_classes=1000)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        if weight.path.startswith("head"):
            weight.assign(rng.normal(0, 0.02, weight.shape).astype("float32"))
    calibration = _photo_crops(32, size)
    keras_path = os.path.join(workdir, "speed.keras")
    calibration_path = os.path.join(workdir, "calibration.npy")
    model.save(keras_path)
    np.save(calibration_path, calibration)
    peer = "Keras, TensorFlow tf.function"
    runners = {peer: KerasRunner(model, graph=True),
               "Keras, predict_on_batch": KerasRunner(model)}
    sizes = {name: "-" for name in runners}
    costs = {name: "-" for name in runners}
    for label, fmt, quantize in EXPORTS:
        name = f"{variant.replace('/', '')}_{quantize}{export.SUFFIXES[fmt]}"
        out = os.path.join(workdir, name)
        seconds, peak = _export_in_subprocess(keras_path, out, fmt, quantize, calibration_path)
        print(f"  exported {label} in {seconds:.0f} s, peak RSS {peak:.1f} GiB", flush=True)
        runners[label], sizes[label] = Runner(out), _size(out)
        costs[label] = f"{seconds:.0f} s, {peak:.1f} GiB"
    one, eight = calibration[:1], calibration[:8]
    latency = {name: [] for name in runners}
    throughput = {name: [] for name in runners}
    for runner in runners.values():  # Warm-up: first calls allocate and compile.
        runner(one), runner(eight), runner(one)
    for _ in range(_ROUNDS.value):
        for name, runner in runners.items():
            calls = []
            for _ in range(_CALLS.value):
                start = time.perf_counter()
                runner(one)
                calls.append(time.perf_counter() - start)
            latency[name].append(statistics.median(calls))
            start = time.perf_counter()
            runner(eight)
            throughput[name].append(8 / (time.perf_counter() - start))
    keras_name = peer
    lines = [
        f"{variant} at {size}x{size}, {model.count_params():,} parameters; ratios: paired per "
        f"round against {peer} (the Keras model's graph)",
        "| model | file | export: time, peak RSS | batch-1 latency | speed-up | batch-8 img/s "
        "| speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in runners:
        ms = 1000 * statistics.median(latency[name])
        rate = statistics.median(throughput[name])
        # Paired: each round's ratio to Keras in the same round, then the median.
        lat_ratio = statistics.median(k / x for k, x in zip(latency[keras_name], latency[name]))
        rate_ratio = statistics.median(
            x / k for k, x in zip(throughput[keras_name], throughput[name]))
        lines.append(f"| {name} | {sizes[name]} | {costs[name]} | {ms:.1f} ms | "
                     f"{lat_ratio:.2f}x | "
                     f"{rate:.1f} | {rate_ratio:.2f}x |")
    return lines


# Exports one file in a fresh process (LiteRT on TensorFlow; ONNX on PyTorch, whose exporter
# needs 2.5 GiB for B/16 where tf2onnx needs 20.7 GiB) and prints its peak RSS in KiB.
_EXPORT_SCRIPT = """
import resource, sys
import numpy as np
from training import export
keras_path, out, fmt, quantize, calibration = sys.argv[1:6]
export.export(keras_path, out, format=fmt, quantize=quantize,
              calibration_images=np.load(calibration) if quantize == "int8" else None)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _export_in_subprocess(keras_path, out, fmt, quantize, calibration_path):
    """(seconds, peak RSS in GiB) of exporting `keras_path` in its own process."""
    env = dict(os.environ, KERAS_BACKEND="torch" if fmt == "onnx" else "tensorflow",
               PYTHONPATH=os.pathsep.join(filter(None, [_REPO, os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT_SCRIPT, keras_path, out, fmt, quantize,
         calibration_path], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"export of {out} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, int(proc.stdout.split()[-1]) / 2**20


def _photo_crops(count, size):
    from sklearn.datasets import load_sample_image

    rng = np.random.default_rng(0)
    photos = [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
    crops = []
    for i in range(count):
        photo = photos[i % 2]
        side = int(rng.integers(200, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side))
        left = int(rng.integers(0, photo.shape[1] - side))
        crop = photo[top:top + side, left:left + side].astype("float32")
        crops.append(keras.ops.convert_to_numpy(keras.ops.image.resize(crop[None], (size, size))))
    return np.clip(np.round(np.concatenate(crops)), 0, 255).astype(np.uint8)


def _size(path):
    return f"{os.path.getsize(path) / 2**20:.2f} MiB"


def _percent(logits, labels):
    return f"{100 * np.mean(logits.argmax(-1) == labels):.2f}%"


def main(argv):
    del argv
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("benchmarks/export.py: run with KERAS_BACKEND=tensorflow (LiteRT "
                         "export needs it)")
    import ai_edge_litert
    import onnxruntime
    import tensorflow as tf

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    header = [
        f"# benchmarks/export.py, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, commit {commit}, {time.strftime('%Y-%m-%d')}",
        f"# TensorFlow {tf.__version__}, Keras {keras.__version__}, ai-edge-litert "
        f"{getattr(ai_edge_litert, '__version__', '?')}, onnxruntime {onnxruntime.__version__}; "
        f"speed: median of {_ROUNDS.value} rounds, batch-1 latency the median of "
        f"{_CALLS.value} calls per round",
    ]
    report = list(header)
    print("\n".join(header), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        parts = [accuracy_part(workdir)]
        print("\n".join(parts[-1]), flush=True)
        for variant in _VARIANTS.value:
            parts.append(speed_part(workdir, variant))
            print("\n".join(parts[-1]), flush=True)
    for part in parts:
        report += [""] + part
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            f.write("\n".join(report) + "\n")


if __name__ == "__main__":
    app.run(main)
