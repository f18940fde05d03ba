"""The paper's transfer recipe measured: higher-resolution fine-tuning and a second task.

Starts from a ViT pre-trained on CIFAR-10 at 32x32 (`--pretrained`, a model.keras written by
`python -m training.train`, see docs/inspecting.md) and reports test accuracy of:

    (a) the pre-trained model at 32x32
    (b) the same model at --size right after `keras_vit.finetune.adapt` (position embeddings
        interpolated), without training
    (c) fine-tuned at --size with interpolated position embeddings
    (d) fine-tuned at --size with freshly initialized position embeddings, same budget
    (e) fine-tuned at 32x32, same budget (separates "more training" from "higher resolution")
    (f) transfer to `digits`: a zero-initialized head on the pre-trained model, fine-tuned
    (g) `digits` from scratch, same architecture and budget, the from-scratch recipe

Every fine-tuning run is `training.train.train_and_evaluate` with
`Config.for_finetuning(...)`, i.e. the binary's `--init_from` with the paper's recipe (SGD
momentum 0.9, no weight decay, cosine, clip 1). Results go to WORKDIR/results.json and are
printed as a Markdown table.

    python benchmarks/finetune_transfer.py --pretrained=workdir/cifar_pre32/model.keras \
        --data_dir="$KERAS_VIT_TFDS_DIR" --workdir=workdir/transfer --size=48 --steps=300

(`--data_dir` is the TFDS directory of the offline `cifar10_jpeg`, see docs/contributing.md.)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from keras_vit import finetune  # noqa: E402
from training import train  # noqa: E402
from training.config import Config  # noqa: E402

_PRETRAINED = flags.DEFINE_string("pretrained", None, "model.keras pre-trained on CIFAR-10.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS directory holding cifar10_jpeg.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and results.json go.")
_SIZE = flags.DEFINE_integer("size", 48, "Fine-tuning resolution.")
_STEPS = flags.DEFINE_integer("steps", 300, "Steps of each CIFAR-10 fine-tuning run.")
_BATCH = flags.DEFINE_integer("batch", 128, "Global batch size of the CIFAR-10 runs.")
_LR = flags.DEFINE_float("learning_rate", 0.01, "Peak SGD learning rate of fine-tuning.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 30, "Warmup of each fine-tuning run.")
_DIGITS_STEPS = flags.DEFINE_integer("digits_steps", 200, "Steps of each digits run.")
_DIGITS_BATCH = flags.DEFINE_integer("digits_batch", 64, "Batch size of the digits runs.")
_SCRATCH_VARIANT = flags.DEFINE_string("scratch_variant", "Ti/8",
                                       "Variant of --pretrained, for the from-scratch row.")
_SCRATCH_POOLING = flags.DEFINE_string("scratch_pooling", "token", "Its pooling.")
_RUNS = flags.DEFINE_list("runs", list("abcdefg"), "Which rows to measure.")
flags.mark_flags_as_required(["pretrained", "workdir"])


def evaluate(model, size, data_dir):
    """Top-1 accuracy of `model` on the CIFAR-10 test split at `size` x `size`."""
    return train.evaluate_accuracy(model, "cifar10_jpeg", data_dir=data_dir, image_size=size)


def run(name, config, workdir, results):
    start = time.time()
    _, metrics = train.train_and_evaluate(config, os.path.join(workdir, name))
    results[name] = {"accuracy": metrics["eval_accuracy"], "steps": metrics["global_step"],
                     "seconds": round(time.time() - start, 1)}
    logging.info("%s: %s", name, results[name])


def main(argv):
    del argv
    workdir, data_dir, size = _WORKDIR.value, _DATA_DIR.value, _SIZE.value
    os.makedirs(workdir, exist_ok=True)
    results_path = os.path.join(workdir, "results.json")
    results = {}
    if os.path.exists(results_path):  # a killed benchmark continues where it stopped
        with open(results_path) as f:
            results = json.load(f)
    runs = set(_RUNS.value)
    pretrained = keras.saving.load_model(_PRETRAINED.value, compile=False)
    source_size = pretrained.input_shape[1]

    def save():
        with open(results_path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(results_path + ".tmp", results_path)

    if "a" in runs and "a" not in results:
        results["a"] = {"accuracy": evaluate(pretrained, source_size, data_dir)}
        save()
    if "b" in runs and "b" not in results:
        results["b"] = {"accuracy": evaluate(finetune.adapt(pretrained, image_size=size), size,
                                             data_dir)}
        save()
    cifar = dict(dataset="cifar10_jpeg", data_dir=data_dir, global_batch_size=_BATCH.value,
                 train_steps=_STEPS.value, learning_rate=_LR.value,
                 warmup_steps=_WARMUP.value, flip=True, export=False, progress=False,
                 checkpoint_every_steps=100)
    for key, overrides in (("c", dict(image_size=size)),
                           ("d", dict(image_size=size, init_position_embeddings="reinitialize")),
                           ("e", dict(image_size=source_size))):
        if key in runs and key not in results:
            run(key, Config.for_finetuning(_PRETRAINED.value, **cifar, **overrides), workdir,
                results)
            save()
    digits = dict(dataset="digits", image_size=source_size, global_batch_size=_DIGITS_BATCH.value,
                  train_steps=_DIGITS_STEPS.value, export=False, progress=False)
    if "f" in runs and "f" not in results:
        run("f", Config.for_finetuning(_PRETRAINED.value, learning_rate=_LR.value,
                                       warmup_steps=_WARMUP.value, **digits), workdir, results)
        save()
    if "g" in runs and "g" not in results:
        # From scratch: the same architecture (--scratch_variant, --scratch_pooling), the
        # from-scratch recipe of the project's digits default (AdamW, MixUp), the same steps.
        run("g", Config(variant=_SCRATCH_VARIANT.value, pooling=_SCRATCH_POOLING.value,
                        warmup_steps=_WARMUP.value, **digits), workdir, results)
        save()

    rows = [
        ("a", f"pre-trained, evaluated at {source_size}x{source_size}"),
        ("b", f"same model at {size}x{size}, position embeddings interpolated, no training"),
        ("c", f"fine-tuned at {size}x{size}, interpolated position embeddings"),
        ("d", f"fine-tuned at {size}x{size}, re-initialized position embeddings"),
        ("e", f"fine-tuned at {source_size}x{source_size} (same budget, control)"),
        ("f", "digits: pre-trained on CIFAR-10, zero-initialized head, fine-tuned"),
        ("g", "digits: same architecture from scratch, same steps"),
    ]
    print("| run | test accuracy | steps | seconds |")
    print("|---|---|---|---|")
    for key, text in rows:
        if key in results:
            r = results[key]
            print(f"| ({key}) {text} | {100 * r['accuracy']:.1f}% | {r.get('steps', '-')} | "
                  f"{r.get('seconds', '-')} |")


if __name__ == "__main__":
    app.run(main)
