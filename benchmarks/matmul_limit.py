"""The matmul ceiling of a ViT training step: its FLOPs, and the machine's measured matmul rate.

A training step of a plain ViT is matmuls plus work that scales with the activations
(norms, GELU, softmax, casts, the optimizer). `training_flops` counts the matmul FLOPs of one
image's step exactly; `peak_matmul_rate` measures the fastest rate the backend's own matmul
reaches on this machine at the step's shapes. Their quotient is the step's limit in images per
second: the rate at which a step made of nothing but its matmuls, each at the best measured
speed, would run. `benchmarks/throughput.py` and `benchmarks/train_step_profile.py` print a
model's measured rate as a fraction of it.
"""

import statistics
import time

import keras
import numpy as np


def forward_flops(spec, image_size, num_classes, last_block_class_token_only=False):
    """Matmul FLOPs (2 per multiply-add) of one image's forward pass through a plain ViT.

    Args:
        spec: `keras_vit.variants.VariantSpec`, plain (not a hybrid).
        image_size: int. Square image side, a multiple of the patch size.
        num_classes: int. Width of the classification head; 0 for none.
        last_block_class_token_only: bool. Count the last block as keras_vit's `ViT` runs it
            (`TransformerBlock(first_token_only=True)`): q|k|v of every token, the rest for
            the [class] token alone. False (the default) counts the network as the paper
            defines it, and as keras-hub and timm compute it.

    Returns:
        dict of int: "patch_embedding", "dense" (q|k|v, attention output, both MLP layers of
        every block), "attention" (q.k and probabilities.v of every block), "head".
    """
    if spec.is_hybrid:
        raise ValueError(f"forward_flops counts plain ViTs, not the hybrid {spec.name!r}")
    patches = (image_size // spec.patch_size) ** 2
    tokens = patches + 1
    width, mlp = spec.hidden_dim, spec.mlp_dim
    per_block_dense = 2 * tokens * width * (3 * width + width + 2 * mlp)
    per_block_attention = 2 * 2 * tokens * tokens * width
    dense = spec.depth * per_block_dense
    attention = spec.depth * per_block_attention
    if last_block_class_token_only:
        dense -= per_block_dense - 2 * width * (tokens * 3 * width + width + 2 * mlp)
        attention -= per_block_attention - 2 * 2 * tokens * width
    return {
        "patch_embedding": 2 * patches * spec.patch_size**2 * 3 * width,
        "dense": dense,
        "attention": attention,
        "head": 2 * width * num_classes,
    }


def training_flops(spec, image_size, num_classes, last_block_class_token_only=False):
    """Matmul FLOPs of one image's training step: forward, then both gradients of each matmul.

    Every matmul's backward pass is two matmuls of its own size (the gradient of each operand),
    except the patch embedding's, which needs no gradient of the image.
    `last_block_class_token_only` as in `forward_flops`.
    """
    forward = forward_flops(spec, image_size, num_classes, last_block_class_token_only)
    return 3 * sum(forward.values()) - forward["patch_embedding"]


def _step_shapes(spec, image_size, batch_size):
    """(m, k, n) of the step's largest matmuls (each Dense forward, the MLP's weight gradient)
    and a 1024-cube, the machine's rate where a small model's shapes are too small to show it."""
    tokens = batch_size * ((image_size // spec.patch_size) ** 2 + 1)
    width, mlp = spec.hidden_dim, spec.mlp_dim
    return [
        (tokens, width, 3 * width),
        (tokens, width, width),
        (tokens, width, mlp),
        (tokens, mlp, width),
        (width, tokens, mlp),
        (1024, 1024, 1024),
    ]


def _matmul_function():
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # A tf.function runs to completion before it returns (eager TensorFlow is
        # synchronous on the CPU): no copy of the product to NumPy is needed.
        return tf.function(tf.matmul, jit_compile=False)
    if backend == "jax":
        import jax

        matmul = jax.jit(lambda a, b: a @ b)
        return lambda a, b: matmul(a, b).block_until_ready()
    if backend == "torch":
        import torch

        def run(a, b):
            with torch.no_grad():
                return torch.matmul(a, b)

        return run
    raise ValueError(f"Unknown Keras backend {backend!r}: tensorflow, jax or torch")


def matmul_rate(m, k, n, dtype, repeats=5, min_seconds=0.2):
    """Median FLOP/s of the backend's matmul of (m, k) by (k, n) operands of `dtype`."""
    rng = np.random.default_rng(0)
    a = keras.ops.convert_to_tensor(rng.standard_normal((m, k)), dtype=dtype)
    b = keras.ops.convert_to_tensor(rng.standard_normal((k, n)), dtype=dtype)
    run = _matmul_function()
    run(a, b)
    start = time.perf_counter()
    run(a, b)
    calls = max(1, int(min_seconds / max(time.perf_counter() - start, 1e-6)))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run(a, b)
        rates.append(2 * m * k * n * calls / (time.perf_counter() - start))
    return statistics.median(rates)


def peak_matmul_rate(spec, image_size, batch_size, dtype):
    """The best median matmul rate (FLOP/s) over a training step's largest matmul shapes
    and a 1024-cube.

    Args:
        spec: `VariantSpec` of a plain ViT.
        image_size, batch_size: ints, as in the step.
        dtype: str. The matmuls' compute dtype, "float32" or "bfloat16".

    Returns:
        (rate, shape): the best rate and the (m, k, n) it was measured at.
    """
    rates = {
        shape: matmul_rate(*shape, dtype) for shape in _step_shapes(spec, image_size, batch_size)
    }
    best = max(rates, key=rates.get)
    return rates[best], best


def step_limit(spec, image_size, batch_size, dtype_policy, num_classes=1000):
    """The step's matmul limit, measured now (printed by throughput.py, train_step_profile.py).

    Returns:
        dict: "flops" (matmul FLOPs of one image's training step of the network as the paper
        defines it, what keras-hub and timm compute), "dtype" (the matmuls' compute dtype),
        "rate" and "shape" (`peak_matmul_rate`), "images_per_sec" (the limit), and
        "keras_vit_flops", "keras_vit_images_per_sec": the same for keras_vit's `ViT`, whose
        last block computes the [class] token alone.
    """
    flops = training_flops(spec, image_size, num_classes)
    ours = training_flops(spec, image_size, num_classes, last_block_class_token_only=True)
    dtype = compute_dtype(dtype_policy)
    rate, shape = peak_matmul_rate(spec, image_size, batch_size, dtype)
    return {"flops": flops, "dtype": dtype, "rate": rate, "shape": shape,
            "images_per_sec": rate / flops, "keras_vit_flops": ours,
            "keras_vit_images_per_sec": rate / ours}


def compute_dtype(dtype_policy):
    """The matmul dtype of a Keras dtype policy name: "bfloat16" for "mixed_bfloat16"."""
    return keras.DTypePolicy(dtype_policy).compute_dtype
