"""Initializers shared by the layers."""

import keras


def fused_xavier_uniform(parts):
    """Xavier-uniform for a fused (D, parts * D) kernel, as if each (D, D) part had its own.

    Xavier-uniform's limit for (D, D) is sqrt(6 / 2D) = sqrt(3 / D). Over a fused kernel the
    fan average is (D + parts * D) / 2, so `VarianceScaling(scale=(1 + parts) / 2)` gives each
    part that same limit: scale 2 for a block's q|k|v, 1.5 for a MAP head's k|v.

    Example:

    >>> fused_xavier_uniform(3).scale
    2.0
    """
    return keras.initializers.VarianceScaling(
        scale=(1 + parts) / 2, mode="fan_avg", distribution="uniform")
