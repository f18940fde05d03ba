"""The table of ViT model sizes and the parser for "SIZE/PATCH" variant names."""

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """The hyper-parameters a variant name resolves to.

    Args:
        size: str. The size name, e.g. `"B"`.
        patch_size: int. Side of the square image patches, in pixels.
        hidden_dim: int. Width D of the token embeddings.
        depth: int. Number of Transformer blocks.
        mlp_dim: int. Hidden width of each block's MLP.
        num_heads: int. Number of self-attention heads.
    """

    size: str
    patch_size: int
    hidden_dim: int
    depth: int
    mlp_dim: int
    num_heads: int

    @property
    def name(self):
        return f"{self.size}/{self.patch_size}"


# Width, depth, MLP width and heads of each size: Ti and S from DeiT
# (Touvron et al., 2021, Table 1), B, L and H from the ViT paper (Dosovitskiy
# et al., 2021, Table 1), mu (a 1-block micro model for tests and toy data)
# and M from big_vision's `decode_variant`.
SIZES = {
    "mu": dict(hidden_dim=32, depth=1, mlp_dim=128, num_heads=2),
    "Ti": dict(hidden_dim=192, depth=12, mlp_dim=768, num_heads=3),
    "S": dict(hidden_dim=384, depth=12, mlp_dim=1536, num_heads=6),
    "M": dict(hidden_dim=512, depth=12, mlp_dim=2048, num_heads=8),
    "B": dict(hidden_dim=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": dict(hidden_dim=1024, depth=24, mlp_dim=4096, num_heads=16),
    "H": dict(hidden_dim=1280, depth=32, mlp_dim=5120, num_heads=16),
}

_VARIANT_RE = re.compile(r"^(?P<size>[A-Za-z]+)/(?P<patch>\d+)$")


def parse_variant(variant):
    """Resolves a `"SIZE/PATCH"` name such as `"B/16"` or `"Ti/4"`.

    Args:
        variant: str. A size from `SIZES` and a positive patch size,
            separated by a slash.

    Returns:
        A `VariantSpec`.

    Raises:
        ValueError: if the string is not of that form or names no size.

    Example:

    >>> parse_variant("B/16").hidden_dim
    768
    """
    if not isinstance(variant, str):
        raise ValueError(
            f"variant must be a string like 'B/16', received {variant!r} "
            f"of type {type(variant).__name__}"
        )
    match = _VARIANT_RE.match(variant.strip())
    if match is None:
        raise ValueError(
            f"Unknown variant {variant!r}: expected 'SIZE/PATCH' with SIZE "
            f"one of {sorted(SIZES)} and PATCH a positive integer, "
            f"e.g. 'B/16'"
        )
    size, patch = match.group("size"), int(match.group("patch"))
    if size not in SIZES:
        raise ValueError(
            f"Unknown variant {variant!r}: size {size!r} is not one of "
            f"{sorted(SIZES)}"
        )
    if patch <= 0:
        raise ValueError(
            f"Unknown variant {variant!r}: patch size must be a positive "
            f"integer, received {patch}"
        )
    return VariantSpec(size=size, patch_size=patch, **SIZES[size])
