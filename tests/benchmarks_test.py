"""The arithmetic the training-throughput benchmarks report against: FLOPs and op kinds."""

import os
import sys

import pytest

import keras_vit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
import matmul_limit  # noqa: E402
import op_kinds  # noqa: E402


@pytest.mark.parametrize("variant, gmacs", [("S/16", 4.6), ("B/16", 17.6), ("L/16", 61.6)])
def test_forward_flops_match_published_macs(variant, gmacs):
    # timm's model cards give the multiply-adds of vit_{small,base,large}_patch16_224 (1000
    # classes) as 4.6, 17.6 and 61.6 GMACs.
    spec = keras_vit.variants.parse_variant(variant)
    flops = sum(matmul_limit.forward_flops(spec, 224, 1000).values())
    assert flops / 2e9 == pytest.approx(gmacs, abs=0.05)


def test_forward_flops_parts_of_a_small_vit():
    spec = keras_vit.variants.parse_variant("Ti/8")
    # 32x32: 16 patches + the class token; D=192, MLP 768, 12 blocks.
    parts = matmul_limit.forward_flops(spec, 32, 10)
    assert parts == {
        "patch_embedding": 2 * 16 * 8 * 8 * 3 * 192,
        "dense": 12 * 2 * 17 * 192 * (3 * 192 + 192 + 2 * 768),
        "attention": 12 * 2 * 2 * 17 * 17 * 192,
        "head": 2 * 192 * 10,
    }
    # Backward: two matmuls per forward matmul, but no gradient of the image.
    assert matmul_limit.training_flops(spec, 32, 10) == (
        3 * sum(parts.values()) - parts["patch_embedding"])


def test_forward_flops_of_a_last_block_that_computes_the_class_token_only():
    spec = keras_vit.variants.parse_variant("Ti/8")
    full = matmul_limit.forward_flops(spec, 32, 10)
    ours = matmul_limit.forward_flops(spec, 32, 10, last_block_class_token_only=True)
    # The last block keeps q|k|v of its 17 tokens; attention output, MLP and attention for 1.
    assert full["dense"] - ours["dense"] == 2 * 16 * 192 * (192 + 2 * 768)
    assert full["attention"] - ours["attention"] == 2 * 2 * 16 * 17 * 192
    assert (ours["patch_embedding"], ours["head"]) == (full["patch_embedding"], full["head"])
    # S/16 at 224: 6.3% of the step's matmuls.
    s16 = keras_vit.variants.parse_variant("S/16")
    saved = 1 - (matmul_limit.training_flops(s16, 224, 1000, last_block_class_token_only=True)
                 / matmul_limit.training_flops(s16, 224, 1000))
    assert saved == pytest.approx(0.063, abs=0.001)


def test_forward_flops_refuse_hybrids():
    spec = keras_vit.variants.parse_variant("R50+B/16")
    with pytest.raises(ValueError, match=r"plain ViTs, not the hybrid 'R50\+B/16'"):
        matmul_limit.forward_flops(spec, 224, 1000)


def test_compute_dtype_of_policies():
    assert matmul_limit.compute_dtype("mixed_bfloat16") == "bfloat16"
    assert matmul_limit.compute_dtype("float32") == "float32"


def test_matmul_rate_is_a_positive_flop_rate():
    rate = matmul_limit.matmul_rate(64, 32, 48, "float32", repeats=2, min_seconds=0.01)
    # Any machine of this decade does between 10 MFLOP/s and 100 TFLOP/s on one core or more.
    assert 1e7 < rate < 1e14


@pytest.mark.parametrize("op_type, name, kind", [
    ("_MklNativeFusedMatMul", "vit/encoder_block_0/qkv/MatMul", "matmul"),
    ("_MklBatchMatMulV2", "gradient_tape/vit/encoder_block_0/einsum", "matmul"),
    ("Cast", "vit/encoder_block_0/Cast", "cast"),
    ("Mul", "adam_w/Mul_3", "optimizer"),
    ("_MklTranspose", "vit/encoder_block_0/transpose", "layout"),
    ("_MklSoftmax", "vit/encoder_block_0/Softmax", "softmax"),
    ("Mul", "vit/encoder_block_0/mlp_dense_1/Gelu/mul", "other"),
    ("", "ynn_fusion", "matmul"),
    ("", "convert_multiply_fusion", "cast"),
    # "broadcast" and "bitcast" are not casts.
    ("", "broadcast_add_fusion", "other"),
    ("", "add_bitcast_fusion", "other"),
    ("", "transpose_copy_fusion", "layout"),
    ("", "aten::addmm", "matmul"),
    ("", "aten::_to_copy", "cast"),
    ("", "aten::_foreach_mul_", "optimizer"),
    ("", "aten::gelu_backward", "other"),
])
def test_op_kinds(op_type, name, kind):
    assert op_kinds.kind(op_type, name) == kind
