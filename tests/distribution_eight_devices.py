"""The 8-device half of `distribution_test.py`, run as one process by its fixture.

JAX fixes its number of CPU devices when it starts, so the test process, started
without `XLA_FLAGS=--xla_force_host_platform_device_count=8`, runs this file as
`python distribution_eight_devices.py OUT.json` with it set. It trains the same
8-head micro ViT from the same non-zero weights for 3 SGD steps on one batch, once on
one device and once under `ModelParallel` on each mesh of `MESHES`, and writes what
the tests compare (JSON):

- "single": {"step_losses", "loss", "max_update"}: the one-device run's losses of
  the 3 steps (Keras' running means), its loss on the batch after them, and the
  largest change of a weight;
- "meshes": {"8x1": {the same, "max_weight_diff", "variables",
  "optimizer_variables", "input_specs", "input_shard_batch"}, ...}: the largest
  difference of a trained weight from the one-device run's, the `PartitionSpec`
  of each variable (and optimizer variable) after training, and the sharding
  and per-device rows that `fit` gave the images inside its compiled step;
- "h14": parameter bytes of H/14 at 224 with 1000 classes under the 2x4 layout,
  per device (from each variable's `NamedSharding`) and in total, from
  variables created in a `keras.StatelessScope` that never allocates them.
"""

import json
import sys

import jax
import keras
import numpy as np

import keras_vit
from keras_vit import distribution, variants

# Eight heads, so that a model axis of 8 holds one head per device; width 64, MLP 128,
# 16x16 images in 4x4 patches. One block: a second one would add a quarter to the
# compilation times that make up most of this process's; that the rules cover every block
# is checked on H/14's 32 below and in distribution_test.py.
SPEC = variants.VariantSpec(size="mu", patch_size=4, hidden_dim=64, depth=1, mlp_dim=128,
                            num_heads=8)
IMAGE_SIZE, NUM_CLASSES, BATCH, STEPS = 16, 5, 16, 3
MESHES = {"8x1": (8, 1), "2x4": (2, 4), "1x8": (1, 8)}


class InputProbe(keras.layers.Layer):
    """The identity; records the sharding its input gets in each compiled function."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x):
        shape = tuple(x.shape)

        def record(sharding):
            # A NamedSharding under a distribution; one device's sharding otherwise.
            spec = getattr(sharding, "spec", None)
            self.seen.append((None if spec is None else spec_of(spec, len(shape)),
                              sharding.shard_shape(shape)[0]))

        jax.debug.inspect_array_sharding(x, callback=record)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def spec_of(spec, ndim):
    """A `PartitionSpec` as a list of axis names or None, one per dimension."""
    spec = list(spec)
    return [None if a is None else str(a) for a in spec] + [None] * (ndim - len(spec))


def train(images, labels):
    """Builds the model under the current distribution and trains it: (vit, model, results)."""
    vit = keras_vit.ViT(SPEC, image_size=IMAGE_SIZE, num_classes=NUM_CLASSES)
    # Non-zero weights everywhere, the head included (ViT zero-initializes it); the same
    # in every run.
    rng = np.random.default_rng(1)
    vit.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") for w in vit.weights])
    initial = vit.get_weights()
    probe = InputProbe(name="input_probe")
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    model = keras.Model(inputs, vit(probe(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    step_losses = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: step_losses.append(float(logs["loss"])))
    model.fit(images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
              callbacks=[record])
    fitted = probe.seen[:]
    loss = model.evaluate(images[:BATCH], labels[:BATCH], batch_size=BATCH, verbose=0)
    return vit, model, {
        "step_losses": step_losses,
        "loss": float(loss),
        "max_update": max(float(np.abs(a - b).max())
                          for a, b in zip(vit.get_weights(), initial)),
        "input_specs": [spec for spec, _ in fitted],
        "input_shard_batch": [rows for _, rows in fitted],
    }


def h14_bytes(device_mesh):
    """Per-device and total parameter bytes of H/14 under the layout on `device_mesh`."""
    layouts = distribution.layout_map(device_mesh, "H/14")
    dist = keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="data")
    with dist.scope(), keras.StatelessScope(initialize_variables=False):
        model = keras_vit.ViT("H/14", image_size=224, num_classes=1000)
    distribution.check_layout_map(model, layouts)
    per_device = total = 0
    for variable in model.weights:
        sharding = dist.get_variable_layout(variable).backend_layout
        itemsize = np.dtype(variable.dtype).itemsize
        per_device += int(np.prod(sharding.shard_shape(tuple(variable.shape)))) * itemsize
        total += int(np.prod(variable.shape)) * itemsize
    return {"per_device": per_device, "total": total, "num_variables": len(model.weights)}


def main(out_path):
    if jax.device_count() != 8:
        raise SystemExit(f"expected 8 devices, found {jax.devices()}")
    # One batch, STEPS times: the loss must fall at every step.
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, BATCH)
    images, labels = np.concatenate([images] * STEPS), np.concatenate([labels] * STEPS)

    single_vit, _, single = train(images, labels)
    single_weights = single_vit.get_weights()
    results = {"single": {k: single[k] for k in ("step_losses", "loss", "max_update")},
               "meshes": {}}
    devices = keras.distribution.list_devices()
    for name, shape in MESHES.items():
        mesh = keras.distribution.DeviceMesh(shape, ["data", "model"], devices)
        layouts = distribution.layout_map(mesh, SPEC)
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=layouts, batch_dim_name="data"))
        try:
            vit, model, result = train(images, labels)
            distribution.check_layout_map(vit, layouts)
        finally:
            keras.distribution.set_distribution(None)
        result["max_weight_diff"] = max(
            float(np.abs(a - b).max()) for a, b in zip(vit.get_weights(), single_weights))
        result["variables"] = {
            v.path: spec_of(v.value.sharding.spec, len(v.shape)) for v in vit.weights}
        result["optimizer_variables"] = {
            v.path: spec_of(v.value.sharding.spec, len(v.shape)) for v in model.optimizer.variables
            if len(v.shape)}
        results["meshes"][name] = result
    mesh = keras.distribution.DeviceMesh((2, 4), ["data", "model"], devices)
    results["h14"] = h14_bytes(mesh)
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
