"""LoRA against full fine-tuning: accuracy, trainable weights, step time, step memory.

Starts from the CIFAR-10 ViT of the transfer benchmark (`--pretrained`, a model.keras written
by `python -m training.train`, see docs/inspecting.md, "The CIFAR-10 model, looked at") and fine-tunes it
with the binary's recipe (`Config.for_finetuning`: SGD momentum 0.9, cosine, clip 1) once per
`--ranks` entry (0: every weight, the paper's recipe; r > 0: `--lora_rank=r`, adapters on every
projection of every block, the head trained, the rest frozen):

    accuracy   each task x rank is one run of `training.train.train_and_evaluate` in a fresh
               process: `digits` (a zero-initialized head, at the model's 32x32) and
               `cifar48` (CIFAR-10 at 48x48, position embeddings interpolated, the head kept).
               Test accuracy, trainable weights, the run's images/s and the process's peak
               resident memory.
    step       paired rounds: in each round, one fresh process per rank builds the model of a
               fine-tuning run at --step_image_size, runs `train_on_batch` on one random batch
               --step_steps times and reports the median time of the steps after the first and
               the peak resident memory of the steps above that before them (activations,
               gradients, the optimizer's update). Medians over --rounds rounds, and the median
               of each round's ratio to full fine-tuning.

    python benchmarks/lora.py --pretrained=workdir/cifar_pre32/model.keras \
        --data_dir="$KERAS_VIT_TFDS_DIR" --workdir=workdir/lora

Results go to WORKDIR/results.json (a killed benchmark continues where it stopped) and are
printed as Markdown tables.
"""

import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from absl import app, flags  # noqa: E402
from procmem import reset_peak, rss_kib  # noqa: E402  (benchmarks/, the script's directory)

_PRETRAINED = flags.DEFINE_string("pretrained", None, "model.keras pre-trained on CIFAR-10.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS directory holding cifar10_jpeg.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs and results.json go.")
_RANKS = flags.DEFINE_list("ranks", ["0", "4", "8", "16"], "LoRA ranks; 0: full fine-tuning.")
_TASKS = flags.DEFINE_list("tasks", ["digits", "cifar48"], "Accuracy runs.")
_PARTS = flags.DEFINE_list("parts", ["accuracy", "step"], "What to measure.")
_LR = flags.DEFINE_float("learning_rate", 0.01, "Peak SGD learning rate of full fine-tuning.")
_LORA_LR = flags.DEFINE_float("lora_learning_rate", 0.03,
                              "Peak SGD learning rate of the LoRA runs.")
_CIFAR_STEPS = flags.DEFINE_integer("cifar_steps", 150, "Steps of each CIFAR-10 run.")
_CIFAR_BATCH = flags.DEFINE_integer("cifar_batch", 128, "Batch of the CIFAR-10 runs.")
_DIGITS_STEPS = flags.DEFINE_integer("digits_steps", 200, "Steps of each digits run.")
_DIGITS_BATCH = flags.DEFINE_integer("digits_batch", 64, "Batch of the digits runs.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 30, "Warmup of each run.")
_STEP_IMAGE = flags.DEFINE_integer("step_image_size", 48, "Image size of the step part.")
_STEP_BATCH = flags.DEFINE_integer("step_batch", 128, "Batch of the step part.")
_STEP_STEPS = flags.DEFINE_integer("step_steps", 6, "train_on_batch calls per process.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds of the step part.")
_CHILD = flags.DEFINE_string("child", None, "Internal: 'run:TASK:RANK' or 'step:RANK'.")
flags.mark_flags_as_required(["pretrained", "workdir"])


def _config(task, rank):
    from training.config import Config

    lora = dict(lora_rank=rank, learning_rate=_LORA_LR.value) if rank else dict(
        learning_rate=_LR.value)
    common = dict(data_dir=_DATA_DIR.value, warmup_steps=_WARMUP.value, export=False,
                  progress=False, checkpoint_every_steps=100_000, **lora)
    if task == "digits":
        return Config.for_finetuning(_PRETRAINED.value, dataset="digits", image_size=32,
                                     global_batch_size=_DIGITS_BATCH.value,
                                     train_steps=_DIGITS_STEPS.value, **common)
    if task == "cifar48":
        return Config.for_finetuning(_PRETRAINED.value, dataset="cifar10_jpeg", image_size=48,
                                     global_batch_size=_CIFAR_BATCH.value, flip=True,
                                     train_steps=_CIFAR_STEPS.value, **common)
    raise ValueError(f"Unknown task {task!r}: expected digits or cifar48")


def _child_run(task, rank):
    from training import train

    start = time.time()
    workdir = os.path.join(_WORKDIR.value, f"{task}_r{rank}")
    _, metrics = train.train_and_evaluate(_config(task, rank), workdir)
    return {
        "accuracy": metrics["eval_accuracy"],
        "trainable": metrics["num_trainable_parameters"],
        "parameters": metrics["num_parameters"],
        "images_per_sec": metrics["train_images_per_sec"],
        "steps": metrics["global_step"],
        "seconds": round(time.time() - start, 1),
        "peak_rss_mib": rss_kib("VmHWM") / 1024,
    }


def _child_step(rank):
    import gc

    import keras
    import numpy as np

    from keras_vit import finetune, lora
    from training import optim

    size, batch = _STEP_IMAGE.value, _STEP_BATCH.value
    pretrained = keras.saving.load_model(_PRETRAINED.value, compile=False)
    model = finetune.adapt(pretrained, image_size=size, num_classes=10)
    del pretrained
    if rank:
        finetune.enable_lora(model, rank)
    # The binary's fine-tuning optimizer: SGD with momentum 0.9 (one slot per trained weight).
    model.compile(optimizer=optim.create_optimizer("sgd", 0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 10, batch)
    gc.collect()
    state = rss_kib("VmRSS")
    reset_peak()
    times = []
    for _ in range(_STEP_STEPS.value):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - start)
    return {
        "trainable": lora.count_parameters(model)[0],
        "step_s": statistics.median(times[1:]),
        "step_mib": (rss_kib("VmHWM") - state) / 1024,
        "state_mib": state / 1024,
    }


def _spawn(child):
    args = [sys.executable, os.path.abspath(__file__), f"--child={child}"] + [
        f"--{name}={flags.FLAGS[name].value}" for name in (
            "pretrained", "workdir", "learning_rate", "lora_learning_rate", "cifar_steps",
            "cifar_batch", "digits_steps", "digits_batch", "warmup_steps", "step_image_size",
            "step_batch", "step_steps")
    ] + ([f"--data_dir={_DATA_DIR.value}"] if _DATA_DIR.value else [])
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{child} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def _label(rank):
    return f"LoRA r={rank}" if rank else "full fine-tuning"


def main(argv):
    del argv
    if _CHILD.value:
        kind, *args = _CHILD.value.split(":")
        result = _child_run(args[0], int(args[1])) if kind == "run" else _child_step(int(args[0]))
        print(json.dumps(result))
        return
    workdir = _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    results_path = os.path.join(workdir, "results.json")
    results = {"runs": {}, "step": []}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)

    def save():
        with open(results_path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(results_path + ".tmp", results_path)

    ranks = [int(r) for r in _RANKS.value]
    print(f"cpus={os.cpu_count()}, pretrained={_PRETRAINED.value}")
    if "accuracy" in _PARTS.value:
        for task in _TASKS.value:
            for rank in ranks:
                key = f"{task}:{rank}"
                if key not in results["runs"]:
                    results["runs"][key] = _spawn(f"run:{task}:{rank}")
                    save()
                print(key, results["runs"][key], flush=True)
        print("\n| task | run | test accuracy | trainable weights | images/s | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for task in _TASKS.value:
            for rank in ranks:
                r = results["runs"][f"{task}:{rank}"]
                print(f"| {task} | {_label(rank)} | {100 * r['accuracy']:.1f}% | "
                      f"{r['trainable']:,} ({100 * r['trainable'] / r['parameters']:.1f}%) | "
                      f"{r['images_per_sec']:.0f} | {r['peak_rss_mib']:.0f} |")
    if "step" in _PARTS.value:
        while len(results["step"]) < _ROUNDS.value:
            results["step"].append({str(rank): _spawn(f"step:{rank}") for rank in ranks})
            save()
            print("round", len(results["step"]), results["step"][-1], flush=True)
        rounds = results["step"][:_ROUNDS.value]
        print(f"\nStep: {_STEP_IMAGE.value}x{_STEP_IMAGE.value}, batch {_STEP_BATCH.value}, "
              f"SGD momentum; medians of {len(rounds)} rounds (ratio: median of the rounds' "
              f"ratios to full fine-tuning)")
        print("| run | trainable weights | step s | ratio | step memory MiB | ratio |")
        print("|---|---|---|---|---|---|")
        for rank in ranks:
            rows = [r[str(rank)] for r in rounds]
            time_ratio = statistics.median(r[str(rank)]["step_s"] / r["0"]["step_s"]
                                           for r in rounds) if "0" in rounds[0] else float("nan")
            mem_ratio = statistics.median(r[str(rank)]["step_mib"] / r["0"]["step_mib"]
                                          for r in rounds) if "0" in rounds[0] else float("nan")
            print(f"| {_label(rank)} | {rows[0]['trainable']:,} | "
                  f"{statistics.median(r['step_s'] for r in rows):.3f} | {time_ratio:.2f}x | "
                  f"{statistics.median(r['step_mib'] for r in rows):.0f} | {mem_ratio:.2f}x |")


if __name__ == "__main__":
    app.run(main)
