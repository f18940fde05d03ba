"""Argument checks shared by the layers and the model builder.

Each raises `ValueError` naming the argument, the value received and what was expected.
"""


def check_positive_int(name, value, allow_none=False):
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"{name} must be {expected}, received {value!r}")


def check_rate(name, value):
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1), received {value!r}")
