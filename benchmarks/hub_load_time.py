"""Load time of a B/16-sized Hub checkpoint from the local cache: keras_vit against transformers.

    KERAS_BACKEND=tensorflow python benchmarks/hub_load_time.py --repeats=5

transformers writes a `ViTForImageClassification` of ViT-B/16's config (224, 1000 classes,
86.6M parameters, random weights) with `save_pretrained`; the files are laid out in a fresh
Hugging Face cache as `huggingface_hub` lays out a download (`models--ORG--NAME/blobs`,
`snapshots/COMMIT`, `refs/main`), and everything runs with `HF_HUB_OFFLINE=1`. In each round,
in turn, in this one process:

- `keras_vit.ViT(weights="hf://bench/vit-b16")`: config, safetensors (memory-mapped), the
  canonical form, build and fill the model;
- transformers' own `ViTForImageClassification.from_pretrained("bench/vit-b16")`, the peer;
- keras_vit's `.npz` path: `ViT("B/16", weights=FILE.npz)` of the same weights written by
  `save_npz` (the paper's format, read without pickle);
- `ViT("B/16")` without weights: building the Keras model (its variables randomly
  initialized), the floor under both keras_vit paths.

Each figure is the median of `--repeats` rounds; the ratio is the median of the per-round ratios.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# triton (torch 2.14's GPU compiler) crashes when imported after TensorFlow; torch runs without
# it on the CPU (tests/conftest.py says more).
import sys  # noqa: E402

sys.modules.setdefault("triton", None)

import hashlib  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 5, "Rounds; medians are reported.")

_REPO = "bench/vit-b16"
_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _lay_out_cache(folder, cache):
    """`folder`'s files in `cache` as huggingface_hub stores a download of `_REPO`."""
    repo = os.path.join(cache, "models--" + _REPO.replace("/", "--"))
    os.makedirs(os.path.join(repo, "blobs"))
    os.makedirs(os.path.join(repo, "refs"))
    snapshot = os.path.join(repo, "snapshots", _COMMIT)
    os.makedirs(snapshot)
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        blob = os.path.join(repo, "blobs", digest)
        shutil.copyfile(os.path.join(folder, name), blob)
        os.symlink(os.path.relpath(blob, snapshot), os.path.join(snapshot, name))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(_COMMIT)


def _timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    root = tempfile.mkdtemp(prefix="hub_load_time_")
    cache = os.path.join(root, "hub")
    os.environ["HF_HUB_CACHE"] = cache
    os.environ["HF_HUB_OFFLINE"] = "1"
    import keras  # noqa: F401
    import numpy as np
    import torch
    import transformers

    import keras_vit
    from keras_vit import checkpoints

    folder = os.path.join(root, "saved")
    reference = transformers.ViTForImageClassification(transformers.ViTConfig(num_labels=1000))
    reference.save_pretrained(folder)
    del reference
    _lay_out_cache(folder, cache)
    size = os.path.getsize(os.path.join(folder, "model.safetensors"))
    model = keras_vit.ViT(weights="hf://" + _REPO)
    params = model.count_params()
    npz = os.path.join(root, "b16.npz")
    checkpoints.save_npz(model, npz)
    del model

    def load_keras_vit():
        return keras_vit.ViT(weights="hf://" + _REPO)

    def load_transformers():
        return transformers.ViTForImageClassification.from_pretrained(_REPO)

    def load_npz():
        return keras_vit.ViT("B/16", approximate_gelu=False, weights=npz)

    def build_only():
        return keras_vit.ViT("B/16", approximate_gelu=False)

    times = {"hf": [], "transformers": [], "npz": [], "build": []}
    for _ in range(_REPEATS.value):
        for key, function in (("hf", load_keras_vit), ("transformers", load_transformers),
                              ("npz", load_npz), ("build", build_only)):
            seconds, loaded = _timed(function)
            times[key].append(seconds)
            del loaded
    ratios = [h / t for h, t in zip(times["hf"], times["transformers"])]
    npz_ratios = [h / n for h, n in zip(times["hf"], times["npz"])]
    print(f"backend={keras.backend.backend()} params={params:,} "
          f"model.safetensors={size / 1e6:.1f} MB repeats={_REPEATS.value} "
          f"transformers={transformers.__version__} torch={torch.__version__}")
    labels = {"hf": 'keras_vit ViT(weights="hf://...")',
              "transformers": "transformers from_pretrained",
              "npz": "keras_vit ViT(weights=FILE.npz)",
              "build": 'keras_vit ViT("B/16"), no weights'}
    for key, label in labels.items():
        runs = ", ".join(f"{t:.2f}" for t in times[key])
        print(f"{label:<36} {statistics.median(times[key]):6.2f} s   runs {runs}")
    print(f"keras_vit hf:// / transformers (paired) {statistics.median(ratios):.2f}")
    print(f"keras_vit hf:// / keras_vit .npz (paired) {statistics.median(npz_ratios):.2f}")
    shutil.rmtree(root, ignore_errors=True)
    del np
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
