"""Model parallelism: `keras_vit.distribution.layout_map` and `check_layout_map`.

The rules and the errors need no devices (a `DeviceMesh` of device names) and are
checked on every backend. Training on 8 simulated CPU devices is JAX only: one
subprocess (`distribution_eight_devices.py`, started by the `eight_devices` fixture
with `XLA_FLAGS=--xla_force_host_platform_device_count=8`) trains on meshes 8x1, 2x4
and 1x8 and on one device, and the tests below compare what it reports.
"""

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import distribution, variants

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The layout of each variable of a Transformer block, written out here rather than
# read from the module: Megatron's column-split layers (q|k|v, MLP in) and row-split
# ones (attention out, MLP out), biases to match, LayerNorms replicated.
BLOCK_AXES = {
    "attention_norm/gamma": (None,),
    "attention_norm/beta": (None,),
    "qkv/kernel": (None, "model"),
    "qkv/bias": ("model",),
    "attention_output/kernel": ("model", None),
    "attention_output/bias": (None,),
    "mlp_norm/gamma": (None,),
    "mlp_norm/beta": (None,),
    "mlp_dense_1/kernel": (None, "model"),
    "mlp_dense_1/bias": ("model",),
    "mlp_dense_2/kernel": ("model", None),
    "mlp_dense_2/bias": (None,),
}
MESH_SHAPES = {"8x1": (8, 1), "2x4": (2, 4), "1x8": (1, 8)}
BATCH = 16  # distribution_eight_devices.BATCH

jax_only = pytest.mark.skipif(keras.backend.backend() != "jax",
                              reason="keras.distribution's ModelParallel is implemented "
                                     "for the JAX backend only")


def _mesh(shape, axis_names=("data", "model")):
    # Device names only: building a LayoutMap places nothing.
    devices = [f"cpu:{i}" for i in range(int(np.prod(shape)))]
    return keras.distribution.DeviceMesh(shape, list(axis_names), devices)


def _block_variable(path):
    """The variable's path inside its block ("qkv/kernel"), or None outside the blocks."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.startswith("encoder_block_"):
            return "/".join(parts[i + 1:])
    return None


def _expected_axes(path, ndim, model_axis="model"):
    block_variable = _block_variable(path)
    if block_variable is None:
        return (None,) * ndim  # embeddings, final norm, head, ResNet stem: replicated
    return tuple(model_axis if a == "model" else a for a in BLOCK_AXES[block_variable])


@pytest.fixture
def unallocated():
    """Calls a model builder in a `keras.StatelessScope` that leaves the variables
    uninitialized: their paths and shapes are all a layout needs, and on JAX, initializing
    takes one compilation per shape (seconds for a hybrid's stem)."""
    def build(builder):
        with keras.StatelessScope(initialize_variables=False):
            return builder()

    yield build
    # Keras keeps uninitialized variables to initialize them when the next top-level
    # StatelessScope ends; clear_session forgets them.
    keras.backend.clear_session(free_memory=False)


TINY_HYBRID = dataclasses.replace(variants.parse_variant("mu/1"), resnet_units=(1, 1, 1),
                                  resnet_width=32)


@pytest.mark.parametrize("variant, image_size", [("mu/4", 16), (TINY_HYBRID, 32)],
                         ids=["vit", "hybrid"])
def test_every_variable_gets_its_layout(unallocated, variant, image_size):
    mesh = _mesh((4, 2))
    layouts = distribution.layout_map(mesh, variant)
    assert len(layouts) == len(BLOCK_AXES)
    model = unallocated(lambda: keras_vit.ViT(variant, image_size=image_size, num_classes=3,
                                              representation_size=8))
    distribution.check_layout_map(model, layouts)
    in_blocks = 0
    for variable in model.weights:
        layout = layouts[variable.path]
        expected = _expected_axes(variable.path, len(variable.shape))
        if _block_variable(variable.path) is None:
            assert layout is None, variable.path  # no rule: ModelParallel replicates it
            continue
        in_blocks += 1
        assert layout.axes == expected, variable.path
        assert layout.device_mesh is mesh
    assert in_blocks == 12 * variants.parse_variant(variant).depth
    # The stem, embeddings, norms and heads were all looked up (and replicated).
    assert len(model.weights) - in_blocks >= (59 - 12 if variant is TINY_HYBRID else 8)


def test_other_axis_name_and_a_name_scope(unallocated):
    spec = dataclasses.replace(variants.parse_variant("mu/4"), depth=2)
    layouts = distribution.layout_map(_mesh((2, 2), ("batch", "tensor")), spec,
                                      model_axis="tensor")
    with keras.name_scope("backbone"):
        model = unallocated(lambda: keras_vit.ViT(spec, image_size=16, num_classes=3))
    assert model.weights[6].path == "backbone/encoder_block_0/qkv/kernel"
    distribution.check_layout_map(model, layouts)
    for variable in model.weights:
        found = layouts[variable.path]
        found = (None,) * len(variable.shape) if found is None else found.axes
        assert found == _expected_axes(variable.path, len(variable.shape), "tensor")


def test_keys_match_whole_paths_only():
    layouts = distribution.layout_map(_mesh((1, 2)), "mu/4")
    assert layouts["encoder_block_0/qkv/kernel"].axes == (None, "model")
    assert layouts["encoder_block_12/mlp_dense_1/bias"].axes == ("model",)
    # Keras' lookup is re.fullmatch: near misses get no layout.
    for path in ("encoder_block_0/qkv/kernel_scale", "encoder_block_x/qkv/kernel",
                 "my_encoder_block_0/qkv/kernel", "encoder_block_0/qkv/kernel/extra"):
        assert layouts[path] is None, path


@pytest.mark.parametrize("variant, model_size, message", [
    ("Ti/16", 4, r"Variant 'Ti/16' cannot be split over the 4 devices of mesh axis "
                 r"'model': its 3 attention heads are not divisible by 4\. .*"
                 r"'model' axis sizes that work: \[1, 3\]"),
    ("mu/4", 8, r"its 2 attention heads are not divisible by 8\. .*sizes that work: \[1, 2\]"),
    # Not a valid ViT (66 is not divisible by 4 heads), but the layout says so first.
    (variants.VariantSpec("mu", 4, hidden_dim=66, depth=1, mlp_dim=128, num_heads=4), 4,
     r"its width 66 is not divisible by 4\. .*sizes that work: \[1, 2\]"),
    (variants.VariantSpec("mu", 4, hidden_dim=64, depth=1, mlp_dim=100, num_heads=8), 8,
     r"its MLP width 100 is not divisible by 8\. .*sizes that work: \[1, 2, 4\]"),
])
def test_refuses_sizes_not_divisible_by_the_model_axis(variant, model_size, message):
    with pytest.raises(ValueError, match=message):
        distribution.layout_map(_mesh((1, model_size)), variant)


def test_refuses_a_mesh_without_the_model_axis():
    with pytest.raises(ValueError, match=r"Axis 'model' is not an axis of the device "
                                         r"mesh, whose axes are \['data'\]"):
        distribution.layout_map(_mesh((8,), ("data",)), "B/16")


def test_a_rule_that_matches_nothing_is_an_error(unallocated):
    model = unallocated(lambda: keras_vit.ViT("mu/4", image_size=16, num_classes=3))
    layouts = distribution.layout_map(_mesh((1, 2)), "mu/4")
    layouts["encoder_block_\\d+/mlp/fc1/kernel"] = (None, "model")  # keras-hub-style name
    with pytest.raises(ValueError, match=r"1 of the 13 rules of the layout map match no "
                                         r"variable of model 'vit_mu4'.*"
                                         r"\['encoder_block_\\\\d\+/mlp/fc1/kernel'\]"):
        distribution.check_layout_map(model, layouts)
    # A model whose layers have other names: every rule is named.
    other = unallocated(lambda: keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, name="qkv")], name="other"))
    with pytest.raises(ValueError, match=r"12 of the 12 rules .* model 'other'.*"
                                         r"qkv/kernel.*the model's paths are like "
                                         r"'other/qkv/kernel', 'other/qkv/bias'"):
        distribution.check_layout_map(other, distribution.layout_map(_mesh((1, 2)), "mu/4"))


def test_a_layout_of_the_wrong_rank_is_an_error(unallocated):
    model = unallocated(lambda: keras_vit.ViT("mu/4", image_size=16, num_classes=3))
    layouts = keras.distribution.LayoutMap(_mesh((1, 2)))
    layouts["head/kernel"] = ("model",)
    with pytest.raises(ValueError, match=r"The layout \('model',\) of variable "
                                         r"'head/kernel' has 1 axes, but the variable has "
                                         r"shape \(32, 3\)"):
        distribution.check_layout_map(model, layouts)


def test_a_layout_that_does_not_divide_a_shape_is_an_error(unallocated):
    # A layout for a 2-head width-32 ViT on a model axis of 2, given a 3-head width-33 one.
    odd = variants.VariantSpec("mu", 4, hidden_dim=33, depth=1, mlp_dim=128, num_heads=3)
    model = unallocated(lambda: keras_vit.ViT(odd, image_size=16, num_classes=3))
    with pytest.raises(ValueError, match=r"Variable 'encoder_block_0/qkv/kernel' of shape "
                                         r"\(33, 99\) cannot be split over mesh axis "
                                         r"'model' of size 2: dimension 1 \(99\) is not "
                                         r"divisible by it"):
        distribution.check_layout_map(model, distribution.layout_map(_mesh((4, 2)), "mu/4"))


# --- 8 simulated CPU devices (JAX) -------------------------------------------------


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    """The results of `distribution_eight_devices.py` (see its docstring)."""
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution's ModelParallel is implemented for JAX only")
    out = tmp_path_factory.mktemp("distribution") / "results.json"
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
               XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""),
                                   "--xla_force_host_platform_device_count=8"]).strip())
    script = os.path.join(REPO_ROOT, "tests", "distribution_eight_devices.py")
    result = subprocess.run([sys.executable, script, str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


@jax_only
def test_one_device_run_trains(eight_devices):
    single = eight_devices["single"]
    means = single["step_losses"]  # Keras logs the running mean of the epoch's losses
    steps = [means[0], 2 * means[1] - means[0], 3 * means[2] - 2 * means[1]]
    # One batch, three times: the loss falls at every step (1.86, 1.69, 1.58, then 1.55).
    assert steps[0] > 1.5
    assert steps[1] < steps[0] - 0.05
    assert steps[2] < steps[1] < steps[0]
    assert single["loss"] < steps[2]
    assert single["max_update"] > 0.05


@jax_only
@pytest.mark.parametrize("mesh", MESH_SHAPES)
def test_sharded_training_matches_one_device(eight_devices, mesh):
    single, sharded = eight_devices["single"], eight_devices["meshes"][mesh]
    np.testing.assert_allclose(sharded["step_losses"], single["step_losses"], atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(sharded["loss"], single["loss"], atol=1e-5, rtol=0)
    assert sharded["max_weight_diff"] < 1e-5


@jax_only
@pytest.mark.parametrize("mesh", MESH_SHAPES)
def test_variables_have_their_sharding_after_training(eight_devices, mesh):
    found = eight_devices["meshes"][mesh]["variables"]
    assert sum(_block_variable(p) is not None for p in found) == len(BLOCK_AXES)
    for path, spec in found.items():
        assert tuple(spec) == _expected_axes(path, len(spec)), path
    # SGD's momentum of each variable is split as the variable is.
    momentum = eight_devices["meshes"][mesh]["optimizer_variables"]
    for path, spec in found.items():
        slot = [s for p, s in momentum.items()
                if p.endswith("/" + path.replace("/", "_") + "_momentum")]
        assert slot == [spec], path


@jax_only
@pytest.mark.parametrize("mesh", MESH_SHAPES)
def test_batch_is_split_over_the_data_axis(eight_devices, mesh):
    data_size = MESH_SHAPES[mesh][0]
    result = eight_devices["meshes"][mesh]
    assert result["input_shard_batch"] == [BATCH // data_size]
    # JAX leaves a mesh axis of size 1 out of the spec.
    assert result["input_specs"] == [["data" if data_size > 1 else None, None, None, None]]


@jax_only
def test_h14_parameters_per_device_on_2x4(eight_devices):
    # H/14 at 224 with 1000 classes, float32: in each of the 32 blocks, q|k|v, the
    # attention output, both MLP kernels, and the q|k|v and MLP-in biases are split
    # four ways; two D-wide biases and two LayerNorms per block, the patch embedding,
    # class token, 257 position embeddings, final LayerNorm and head are on every
    # device.
    h = variants.SIZES["H"]
    width, depth, mlp = h["hidden_dim"], h["depth"], h["mlp_dim"]
    split = 4 * width * width + 2 * width * mlp + 3 * width + mlp
    replicated_in_block = 2 * width + 2 * 2 * width
    outside = (14 * 14 * 3 * width + width) + width + 257 * width + 2 * width + (
        width * 1000 + 1000)
    total = depth * (split + replicated_in_block) + outside
    per_device = depth * (split // 4 + replicated_in_block) + outside
    assert total == 632_045_800
    assert per_device == 159_971_560
    found = eight_devices["h14"]
    assert found["num_variables"] == 392
    assert found["total"] == 4 * total
    assert found["per_device"] == 4 * per_device
    # A quarter, and 0.31% of the total more for what every device holds.
    assert found["per_device"] / found["total"] == pytest.approx(0.25310, abs=1e-5)
