"""The collectives XLA compiles into a training step under `keras_vit.distribution`.

    python benchmarks/distribution_collectives.py [--variant=B/16 --image_size=224
                                                   --batch_size=16 --mesh=2x4]

Simulates the mesh's devices on the CPU (`XLA_FLAGS=--xla_force_host_platform_device_count`),
builds the model under `ModelParallel` with `keras_vit.distribution.layout_map`, compiles (never
runs) the gradient of the cross-entropy of one global batch and prints each collective of the
compiled program that comes from the first Transformer block (the others have the same), with
its shape and the op it was made for, then the count of each kind of collective in the whole
program. A collective's shape is per device: its result, for an all-gather the gathered whole.
XLA combines the all-reduces of the gradients over the data axis into one (or a few) of many
tensors, printed apart. It is what `layout_map`'s docstring says about the fused q|k|v kernel,
measured.
"""

import collections
import math
import os
import re

from absl import app, flags

_VARIANT = flags.DEFINE_string("variant", "B/16", "Model variant.")
_IMAGE = flags.DEFINE_integer("image_size", 224, "Image height and width.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Global batch size.")
_MESH = flags.DEFINE_string("mesh", "2x4", "DATAxMODEL device mesh.")

_COLLECTIVE = re.compile(
    r"%\S+ = (?P<shape>\([^)]*\)|\S+) (?P<kind>all-reduce|all-gather|all-to-all|reduce-scatter|"
    r"collective-permute)(?:-start)?\((?:.*?op_name=\"(?P<op>[^\"]*)\")?")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    data, model = (int(n) for n in _MESH.value.split("x"))
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""),
         f"--xla_force_host_platform_device_count={data * model}"]).strip()
    import jax
    import keras

    import keras_vit

    mesh = keras.distribution.DeviceMesh((data, model), ["data", "model"],
                                         keras.distribution.list_devices()[:data * model])
    layouts = keras_vit.distribution.layout_map(mesh, _VARIANT.value)
    dist = keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="data")
    keras.distribution.set_distribution(dist)
    vit = keras_vit.ViT(_VARIANT.value, image_size=_IMAGE.value, num_classes=1000)
    keras_vit.distribution.check_layout_map(vit, layouts)
    trainable = [v.value for v in vit.trainable_variables]
    non_trainable = [v.value for v in vit.non_trainable_variables]
    shape = (_BATCH.value, _IMAGE.value, _IMAGE.value, 3)
    images = jax.ShapeDtypeStruct(shape, "float32",
                                  sharding=dist.get_data_layout(shape).backend_layout)
    labels = jax.ShapeDtypeStruct((_BATCH.value,), "int32",
                                  sharding=dist.get_data_layout((_BATCH.value,)).backend_layout)

    def loss(trainable, images, labels):
        logits, _ = vit.stateless_call(trainable, non_trainable, images)
        return keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                            from_logits=True).mean()

    hlo = jax.jit(jax.grad(loss)).lower(trainable, images, labels).compile().as_text()
    found = [m.groupdict() for m in _COLLECTIVE.finditer(hlo)]
    print(f"{_VARIANT.value} at {_IMAGE.value}, global batch {_BATCH.value}, mesh "
          f"{data}x{model} (data x model), jax {jax.__version__}")
    print("collectives of encoder_block_0 (per device):")
    for c in found:
        if not c["shape"].startswith("(") and re.search(r"encoder_block_0\b", c["op"] or ""):
            print(f"  {c['kind']:<11} {c['shape']:<30} {c['op']}")
    for c in found:
        if c["shape"].startswith("("):
            tensors = re.findall(r"f32\[([\d,]*)\]", c["shape"])
            size = sum(4 * math.prod(int(n) for n in t.split(",") if n) for t in tensors)
            print(f"combined {c['kind']} of {len(tensors)} tensors, {size / 2**20:.1f} MiB "
                  f"per device (the gradients, over the data axis)")
    counts = collections.Counter(c["kind"] for c in found)
    print("whole program:", dict(sorted(counts.items())))


if __name__ == "__main__":
    app.run(main)
