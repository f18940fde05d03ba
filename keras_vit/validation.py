"""Argument checks shared by the layers, the model builder and the training binaries.

Each raises `ValueError` naming the argument, the value received and what was expected, in one
wording everywhere: "NAME must be EXPECTED, received VALUE" (or "Unknown NAME VALUE: expected
one of ..." for a choice). Booleans are never accepted as numbers.

Example:

>>> check_number("learning_rate", 0.0, low=0.0, low_open=True)
Traceback (most recent call last):
...
ValueError: learning_rate must be a number in (0, inf), received 0.0
"""

import math


def check_int(name, value, minimum=None):
    """An int (not a bool), at least `minimum` when given."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or (minimum is not None and value < minimum)
    ):
        expected = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {expected}, received {value!r}")


def check_positive_int(name, value, allow_none=False):
    """An int > 0 (or None when `allow_none`)."""
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{name} must be {expected}, received {value!r}")


def check_number(name, value, low=-math.inf, high=math.inf, *, low_open=False, high_open=True):
    """A finite int or float within [low, high) by default; `*_open` says which ends are open."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        interval = (
            f"{'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
        )
        raise ValueError(f"{name} must be a number in {interval}, received {value!r}")


def check_rate(name, value):
    """A probability-like rate in [0, 1): dropout, stochastic depth."""
    check_number(name, value, 0.0, 1.0)


def check_choice(name, value, choices):
    """One of `choices` (a sequence of allowed values)."""
    if value not in choices:
        raise ValueError(
            f"Unknown {name} {value!r}: expected one of {', '.join(map(str, choices))}"
        )


def known_width(input_shape, what="tokens", num_heads=None):
    """The last (width) dimension of `input_shape`, checked known, and divisible by `num_heads`.

    The build-time check of every layer that sizes its weights by the width of its input.
    """
    width = input_shape[-1]
    if width is None:
        raise ValueError(
            f"The last (width) dimension of the {what} must be known, "
            f"received input shape {tuple(input_shape)}"
        )
    if num_heads is not None and width % num_heads != 0:
        raise ValueError(
            f"The width {width} of the {what} is not divisible by num_heads {num_heads}"
        )
    return width


def _number(x):
    # 0.0 -> "0", 0.05 -> "0.05", inf -> "inf": the interval reads as written in the docs.
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else str(x)
