"""Where a ViT training step's time goes, on the current Keras backend.

    KERAS_BACKEND=tensorflow python benchmarks/train_step_profile.py \
        --variant=S/16 --image_size=224 --batch_size=32 --dtype_policy=float32

The model is `keras_vit.ViT` with a 1000-class head, compiled with AdamW and sparse
cross-entropy as `benchmarks/throughput.py` trains it. Two views of its step:

1. Phases, by wall clock (medians of --repeats rounds of --steps steps, the three kinds of
   round interleaved): the forward pass alone (`training=True`), forward + backward (the
   gradients, nothing applied), and the whole `train_on_batch` step. Backward is the second
   minus the first; "update and loop" (the optimizer, the metrics, Keras' step overhead) is
   the third minus the second. Each is compiled as the step is: `tf.function` on
   TensorFlow (XLA when --jit_compile=true), `jax.jit` on JAX, eager on PyTorch.
2. Ops, from the backend's profiler over --trace_steps whole steps: the time of every op
   (TensorFlow: `tf.profiler`; JAX: `jax.profiler`, one event per XLA thunk; PyTorch:
   `torch.profiler`, self time per aten op) summed by kind: matmuls (incl. convolutions and
   fused attention), softmax, casts, layout (transposes, copies, concatenations, slices),
   optimizer (TensorFlow: ops under the optimizer's name scope; PyTorch: `_foreach_` ops),
   and other elementwise and reduction ops. On TensorFlow the ops are also split by phase
   from their name scopes (gradient ops are under "gradient_tape/"). Ops run on several
   threads at once, so their sum can differ from the wall time; the shares are of the sum.

It ends with the matmul FLOPs and the step's matmul limit (`matmul_limit.py`).
"""

import collections
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_vit  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import matmul_limit  # noqa: E402
import op_kinds  # noqa: E402

_VARIANT = flags.DEFINE_string("variant", "S/16", "keras_vit variant, SIZE/PATCH.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square image side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per step.")
_DTYPE_POLICY = flags.DEFINE_string("dtype_policy", "float32", "Keras dtype policy.")
_JIT_COMPILE = flags.DEFINE_string("jit_compile", "auto", "jit_compile of compile().")
_STEPS = flags.DEFINE_integer("steps", 2, "Steps per timed round.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed rounds per phase; medians are reported.")
_TRACE_STEPS = flags.DEFINE_integer("trace_steps", 2, "Whole steps traced by the profiler.")
_TOP = flags.DEFINE_integer("top", 12, "How many of the costliest op names to list.")

_KINDS = ("matmul", "softmax", "cast", "layout", "optimizer", "other")


def _jit():
    return {"true": True, "false": False}.get(_JIT_COMPILE.value.lower(), _JIT_COMPILE.value)


# ---------------------------------------------------------------- phases


def _phase_functions(model, images, labels):
    """(forward, forward_backward) callables for the backend, each run to completion."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    make = {"tensorflow": _tensorflow_phases, "jax": _jax_phases, "torch": _torch_phases}
    return make[keras.backend.backend()](model, loss_fn, images, labels)


def _tensorflow_phases(model, loss_fn, images, labels):
    import tensorflow as tf

    jit = _jit() is True

    @tf.function(jit_compile=jit)
    def forward(x):
        return model(x, training=True)

    @tf.function(jit_compile=jit)
    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    x, y = tf.constant(images), tf.constant(labels)
    return (lambda: forward(x).numpy(),
            lambda: [g.numpy() for g in forward_backward(x, y)[:1]])


def _jax_phases(model, loss_fn, images, labels):
    import jax

    def logits_of(params, frozen, x):
        return model.stateless_call(params, frozen, x, training=True)[0]

    def loss_of(params, frozen, x, y):
        return loss_fn(y, logits_of(params, frozen, x))

    forward, grad = jax.jit(logits_of), jax.jit(jax.grad(loss_of))
    x, y = jax.numpy.asarray(images), jax.numpy.asarray(labels)

    def state():
        # Read each time: train_on_batch donates the buffers it replaces.
        return ([v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables])

    return (lambda: forward(*state(), x).block_until_ready(),
            lambda: jax.block_until_ready(grad(*state(), x, y)))


def _torch_phases(model, loss_fn, images, labels):
    import torch

    x, y = torch.as_tensor(images), torch.as_tensor(labels)

    def forward():
        with torch.enable_grad():
            return model(x, training=True).detach()

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss_fn(y, model(x, training=True)).backward()

    return forward, forward_backward


def _phases(model, images, labels):
    forward, forward_backward = _phase_functions(model, images, labels)
    kinds = {
        "forward": forward,
        "forward+backward": forward_backward,
        "whole step": lambda: model.train_on_batch(images, labels),
    }
    for function in kinds.values():
        function()
        function()
    seconds = {kind: [] for kind in kinds}
    for _ in range(_REPEATS.value):
        for kind, function in kinds.items():
            start = time.perf_counter()
            for _ in range(_STEPS.value):
                function()
            seconds[kind].append((time.perf_counter() - start) / _STEPS.value)
    return {kind: statistics.median(values) for kind, values in seconds.items()}


# ---------------------------------------------------------------- ops


def _trace(model, images, labels, logdir):
    """Op times (microseconds) by (phase, kind) over the traced steps."""
    backend = keras.backend.backend()
    steps = _TRACE_STEPS.value
    totals = collections.Counter()
    names = collections.Counter()
    if backend == "torch":
        import torch

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                model.train_on_batch(images, labels)
        for item in prof.key_averages():
            if item.key.startswith(("aten::", "_")) or "::" not in item.key:
                kind = op_kinds.kind("", item.key)
                totals[("step", kind)] += item.self_cpu_time_total
                names[(item.key, kind)] += item.self_cpu_time_total
        return totals, names
    if backend == "tensorflow":
        import tensorflow as tf

        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(images, labels)
        tf.profiler.experimental.stop()
        for line, name, op_type, _, micros in op_kinds.xplane_events(logdir):
            # Op events are "scope/name:Type" on the executor's threads; calls of whole
            # functions contain other op events and are left out.
            if not op_type or ":" not in name or "PartitionedCall" in op_type:
                continue
            if not line.startswith("tf_Compute"):
                continue
            phase = ("optimizer" if "adam_w/" in name else
                     "backward" if "gradient_tape/" in name or "gradients/" in name else
                     "forward")
            kind = op_kinds.kind(op_type, name)
            totals[(phase, kind)] += micros
            names[(f"{phase} {op_type}", kind)] += micros
        return totals, names
    import jax

    jax.profiler.start_trace(logdir)
    for _ in range(steps):
        model.train_on_batch(images, labels)
    jax.profiler.stop_trace()
    for _, _, _, stats, micros in op_kinds.xplane_events(logdir):
        if "hlo_op" in stats and stats.get("hlo_module", "").startswith("jit_"):
            hlo_op = str(stats["hlo_op"])
            kind = op_kinds.kind("", hlo_op)
            totals[("step", kind)] += micros
            names[(hlo_op.rsplit(".", 1)[0], kind)] += micros
    return totals, names


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    keras.config.set_dtype_policy(_DTYPE_POLICY.value)
    spec = keras_vit.variants.parse_variant(_VARIANT.value)
    size, batch = _IMAGE_SIZE.value, _BATCH_SIZE.value
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 1000, (batch,))
    print(f"backend={keras.backend.backend()} variant={spec.name} image_size={size} "
          f"batch={batch} dtype_policy={_DTYPE_POLICY.value} jit_compile={_JIT_COMPILE.value} "
          f"steps={_STEPS.value} repeats={_REPEATS.value} cpus={os.cpu_count()}")
    model = keras_vit.ViT(spec.name, image_size=size, num_classes=1000)
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=_jit(),
    )
    phases = _phases(model, images, labels)
    step = phases["whole step"]
    parts = {
        "forward": phases["forward"],
        "backward": phases["forward+backward"] - phases["forward"],
        "update and loop": step - phases["forward+backward"],
    }
    print(f"phases    whole step {step * 1e3:8.1f} ms = {batch / step:6.2f} img/s")
    for part, seconds in parts.items():
        print(f"phases    {part:16s} {seconds * 1e3:8.1f} ms  {seconds / step:6.1%}")

    with tempfile.TemporaryDirectory() as logdir:
        totals, names = _trace(model, images, labels, logdir)
    total = sum(totals.values())
    per_step = total / _TRACE_STEPS.value / 1e3
    print(f"ops       {per_step:8.1f} ms of op time per step over {_TRACE_STEPS.value} "
          f"traced steps (wall step {step * 1e3:.1f} ms)")
    by_kind = collections.Counter()
    for (_, kind), micros in totals.items():
        by_kind[kind] += micros
    for kind in _KINDS:
        print(f"ops       {kind:10s} {by_kind[kind] / _TRACE_STEPS.value / 1e3:8.1f} ms "
              f"{by_kind[kind] / total:6.1%}")
    for (name, kind), micros in names.most_common(_TOP.value):
        print(f"top op    {name:44s} {micros / _TRACE_STEPS.value / 1e3:8.1f} ms "
              f"{micros / total:6.1%}  ({kind})")
    phases_seen = sorted({phase for phase, _ in totals} - {"step"})
    for phase in phases_seen:
        row = "  ".join(f"{kind} {totals[(phase, kind)] / total:5.1%}" for kind in _KINDS)
        phase_total = sum(totals[(phase, kind)] for kind in _KINDS) / total
        print(f"ops       {phase:9s} {phase_total:6.1%}: {row}")

    limit = matmul_limit.step_limit(spec, size, batch, _DTYPE_POLICY.value)
    flops = limit["flops"]
    matmul_ms = by_kind["matmul"] / _TRACE_STEPS.value / 1e3
    print(f"limit     {flops / 1e9:.2f} GFLOP of matmuls per image; best matmul "
          f"{limit['dtype']} {limit['rate'] / 1e9:.1f} GFLOP/s at m,k,n={limit['shape']}: "
          f"limit {limit['images_per_sec']:.2f} img/s; measured {batch / step:.2f} img/s = "
          f"{batch / step / limit['images_per_sec']:.1%} of it")
    print(f"limit     the step's matmul ops ran at {flops * batch / (matmul_ms / 1e3) / 1e9:.1f} "
          f"GFLOP/s (op time {matmul_ms:.1f} ms of the {per_step:.1f} ms)")


if __name__ == "__main__":
    app.run(main)
