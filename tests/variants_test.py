import pytest

from keras_vit import variants


def test_paper_sizes():
    spec = variants.parse_variant("B/16")
    assert (spec.hidden_dim, spec.depth, spec.mlp_dim, spec.num_heads) == (768, 12, 3072, 12)
    assert spec.patch_size == 16 and spec.name == "B/16"
    assert variants.parse_variant("Ti/4").hidden_dim == 192
    assert variants.parse_variant("H/14").depth == 32
    assert variants.parse_variant(" L/32 ").mlp_dim == 4096


@pytest.mark.parametrize("bad,match", [
    ("X/16", r"size 'X' is not one of"),
    ("B16", r"expected 'SIZE/PATCH'"),
    ("B/0", r"patch size must be a positive integer, received 0"),
    ("B/-16", r"expected 'SIZE/PATCH'"),
    ("b/16", r"size 'b' is not one of"),
    (16, r"variant must be a string like 'B/16', received 16"),
])
def test_unknown_variants(bad, match):
    with pytest.raises(ValueError, match=match):
        variants.parse_variant(bad)


def test_every_size_divides_into_its_heads():
    for size, spec in variants.SIZES.items():
        assert spec["hidden_dim"] % spec["num_heads"] == 0, size


def test_hybrid_names():
    spec = variants.parse_variant("R50+B/16")
    assert (spec.resnet_units, spec.resnet_width, spec.patch_size, spec.stride) == ((3, 4, 9), 64, 1, 16)
    assert spec.hidden_dim == 768 and spec.name == "R50+B/16" and spec.is_hybrid
    assert variants.parse_variant("R50+L/32").resnet_units == (3, 4, 6, 3)
    assert variants.parse_variant(" R26+S/32 ").resnet_units == (2, 2, 2, 2)
    for name in ("R50+Ti/16", "R50+H/32", "R26+mu/32"):
        assert variants.parse_variant(name).name == name
    # A spec is returned as it is; a list of units is stored as a tuple.
    custom = variants.VariantSpec("mu", 1, 32, 1, 128, 2, resnet_units=[1, 2], resnet_width=32)
    assert variants.parse_variant(custom) is custom
    assert custom.resnet_units == (1, 2) and custom.stride == 8
    assert custom.name == "R[1, 2]w32+mu/8"
