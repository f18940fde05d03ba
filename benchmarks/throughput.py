"""Images/sec of keras_vit and keras-hub's ViTBackbone, side by side.

Both models get the same configuration (variant, image size, dtype policy,
batch size), the same inputs and the same timing method, in one process,
alternating between them so that machine noise hits both alike:

    KERAS_BACKEND=tensorflow python benchmarks/throughput.py \
        --variant=B/16 --image_size=224 --batch_size=8 --dtype_policy=float32

Inference is `predict_on_batch` on the backbones (pooled features for
keras_vit, the token sequence for keras-hub: the encoder is the whole cost);
training is `train_on_batch` of backbone + class-token pooling + Dense head
with AdamW and sparse cross-entropy. Each figure is the median over
`--repeats` timed rounds of `--steps` steps, after warm-up. The ratio is
keras_vit / keras-hub (above 1 means keras_vit is faster), given twice: as the
ratio of the two medians, and as the median of the ratios of rounds run back
to back (the order alternating), which is steadier on a shared machine whose
speed drifts.

`--peers=keras_vit,keras_hub,timm` adds timm's ViT (PyTorch, AdamW,
`torch.autocast` bfloat16 under `--dtype_policy=mixed_bfloat16`) to training:
it runs in a subprocess (`timm_peer.py`, timm on PYTHONPATH) that times its
round when asked, in turn with the others, so that no two compete for the CPU.

Training also prints the step's matmul limit (`matmul_limit.py`): its matmul
FLOPs per image over the best rate the backend's matmul reaches on this
machine at the step's largest shapes, measured in the same run, and each
peer's median as a fraction of it.

Hybrid variants (`--variant=R50+B/16`) are timed for keras_vit alone:
keras-hub and timm have no ResNet + ViT hybrid of ours to compare with.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.layers import TokenPooling  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import matmul_limit  # noqa: E402

_VARIANT = flags.DEFINE_string("variant", "B/16", "keras_vit variant, SIZE/PATCH.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square image side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per step.")
_DTYPE_POLICY = flags.DEFINE_string(
    "dtype_policy", "float32", "Keras dtype policy, e.g. float32, mixed_bfloat16."
)
_MODES = flags.DEFINE_list("modes", ["inference", "training"], "What to time.")
_STEPS = flags.DEFINE_integer("steps", 5, "Steps per timed round.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds; the median is reported.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
_JIT_COMPILE = flags.DEFINE_string(
    "jit_compile", "auto", "jit_compile passed to compile() of both models."
)
_PEERS = flags.DEFINE_list(
    "peers", ["keras_vit", "keras_hub"], "Models to time: keras_vit, keras_hub, timm (training)."
)


def _ours(spec, image_size, include_top, num_classes=1000):
    return keras_vit.ViT(
        spec.name,
        image_size=image_size,
        num_classes=num_classes,
        include_top=include_top,
    )


def _keras_hub(spec, image_size, include_top, num_classes=1000):
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(image_size, image_size, 3),
        patch_size=spec.patch_size,
        num_layers=spec.depth,
        num_heads=spec.num_heads,
        hidden_dim=spec.hidden_dim,
        mlp_dim=spec.mlp_dim,
        dropout_rate=0.0,
        attention_dropout=0.0,
        layer_norm_epsilon=1e-6,
    )
    if not include_top:
        return backbone
    images = keras.Input((image_size, image_size, 3))
    features = TokenPooling("token")(backbone(images))
    logits = keras.layers.Dense(num_classes, dtype="float32")(features)
    return keras.Model(images, logits)


_BUILDERS = {"keras_vit": _ours, "keras_hub": _keras_hub}


class _TimmPeer:
    """A timed round of timm's training step, run by `timm_peer.py` in a subprocess."""

    def __init__(self, spec, image_size, batch_size):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "timm_peer.py")
        self._process = subprocess.Popen(
            [sys.executable, script, f"--variant={spec.name}", f"--image_size={image_size}",
             f"--batch_size={batch_size}", f"--dtype_policy={_DTYPE_POLICY.value}",
             f"--steps={_STEPS.value}", f"--warmup={_WARMUP.value}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        ready = self._process.stdout.readline().strip()
        if not ready.startswith("ready"):
            raise RuntimeError(f"timm peer did not start (exit {self._process.wait()})")
        print(f"# timm peer: {ready}")

    def __call__(self):
        self._process.stdin.write("round\n")
        self._process.stdin.flush()
        return float(self._process.stdout.readline())

    def close(self):
        self._process.stdin.write("quit\n")
        self._process.stdin.flush()
        self._process.wait()


def _jit(value):
    return {"true": True, "false": False}.get(value.lower(), value)


def _timer(model, mode, images, labels):
    if mode == "inference":
        model.compile(jit_compile=_jit(_JIT_COMPILE.value))

        def step():
            out = model.predict_on_batch(images)
            return keras.ops.convert_to_numpy(keras.tree.flatten(out)[0])

    else:
        model.compile(
            optimizer=keras.optimizers.AdamW(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=_jit(_JIT_COMPILE.value),
        )

        def step():
            return model.train_on_batch(images, labels)

    for _ in range(_WARMUP.value):
        step()

    def timed_round():
        start = time.perf_counter()
        for _ in range(_STEPS.value):
            step()
        return _STEPS.value * images.shape[0] / (time.perf_counter() - start)

    return timed_round


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    keras.config.set_dtype_policy(_DTYPE_POLICY.value)
    spec = keras_vit.variants.parse_variant(_VARIANT.value)
    size, batch = _IMAGE_SIZE.value, _BATCH_SIZE.value
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, (batch,))
    print(
        f"backend={keras.backend.backend()} variant={spec.name} "
        f"image_size={size} batch={batch} dtype_policy={_DTYPE_POLICY.value} "
        f"jit_compile={_JIT_COMPILE.value} steps={_STEPS.value} "
        f"repeats={_REPEATS.value} cpus={os.cpu_count()}"
    )
    unknown = sorted(set(_PEERS.value) - {"keras_vit", "keras_hub", "timm"})
    if unknown:
        raise app.UsageError(f"Unknown peers {unknown}: expected keras_vit, keras_hub, timm")
    for mode in _MODES.value:
        if mode not in ("inference", "training"):
            raise app.UsageError(f"Unknown mode {mode!r}: inference or training")
        peers = list(_PEERS.value)
        for peer in ("keras_hub", "timm"):
            if spec.is_hybrid and peer in peers:
                peers.remove(peer)
                print(f"note: {peer} has no hybrid ViT; timing {spec.name} without it")
        if mode == "inference" and "timm" in peers:
            peers.remove("timm")
            print("note: timm is a training peer only")
        timers = {}
        for peer in peers:
            if peer == "timm":
                timers[peer] = _TimmPeer(spec, size, batch)
                continue
            model = _BUILDERS[peer](spec, size, include_top=(mode == "training"))
            timers[peer] = _timer(model, mode, images, labels)
        rates = {peer: [] for peer in timers}
        order = list(timers)
        for _ in range(_REPEATS.value):
            for peer in order:
                rates[peer].append(timers[peer]())
            # Alternate who goes first, so that a drift in machine speed
            # does not favour one side.
            order.reverse()
        if "timm" in timers:
            timers["timm"].close()
        medians = {peer: statistics.median(r) for peer, r in rates.items()}
        for peer, median in medians.items():
            spread = ", ".join(f"{r:.2f}" for r in rates[peer])
            print(f"{mode:9s} {peer:9s} {median:8.2f} img/s  (rounds: {spread})")
        for peer in medians:
            if peer == "keras_vit" or "keras_vit" not in medians:
                continue
            print(f"{mode:9s} ratio keras_vit/{peer} = "
                  f"{medians['keras_vit'] / medians[peer]:.3f}")
            # Rounds run back to back see nearly the same machine; the median
            # of their ratios is the steadier figure where the load drifts.
            paired = statistics.median(
                ours / theirs for ours, theirs in zip(rates["keras_vit"], rates[peer])
            )
            print(f"{mode:9s} paired-round ratio keras_vit/{peer} (median) = {paired:.3f}")
        if mode == "training" and not spec.is_hybrid:
            _print_limit(spec, size, batch, medians)


def _print_limit(spec, size, batch, medians):
    limit = matmul_limit.step_limit(spec, size, batch, _DTYPE_POLICY.value)
    print(f"limit     matmul {limit['dtype']} {limit['rate'] / 1e9:.1f} GFLOP/s (best, at "
          f"m,k,n={limit['shape']}); {limit['flops'] / 1e9:.2f} GFLOP per image -> "
          f"{limit['images_per_sec']:.2f} img/s")
    for peer, median in medians.items():
        print(f"limit     {peer:9s} at {median / limit['images_per_sec']:.1%} of the matmul limit")
    if "keras_vit" in medians:
        print(f"limit     keras_vit's last block computes the [class] token alone: "
              f"{limit['keras_vit_flops'] / 1e9:.2f} GFLOP per image -> "
              f"{limit['keras_vit_images_per_sec']:.2f} img/s; keras_vit at "
              f"{medians['keras_vit'] / limit['keras_vit_images_per_sec']:.1%} of its own limit")


if __name__ == "__main__":
    app.run(main)
