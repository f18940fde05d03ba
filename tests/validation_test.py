"""Tests of keras_vit/validation.py: the argument checks every layer and binary shares."""

import math
import re

import pytest

from keras_vit import validation


@pytest.mark.parametrize("call, message", [
    (lambda: validation.check_int("seed", 1.0), "seed must be an integer, received 1.0"),
    (lambda: validation.check_int("epochs", -1, minimum=0),
     "epochs must be an integer >= 0, received -1"),
    (lambda: validation.check_int("epochs", True, minimum=0),
     "epochs must be an integer >= 0, received True"),
    (lambda: validation.check_positive_int("num_heads", 0),
     "num_heads must be a positive integer, received 0"),
    (lambda: validation.check_positive_int("size", "3", allow_none=True),
     "size must be a positive integer or None, received '3'"),
    (lambda: validation.check_number("learning_rate", 0.0, low=0.0, low_open=True),
     "learning_rate must be a number in (0, inf), received 0.0"),
    (lambda: validation.check_number("min_crop_area", 1.5, 0.0, 1.0, low_open=True,
                                     high_open=False),
     "min_crop_area must be a number in (0, 1], received 1.5"),
    (lambda: validation.check_number("weight_decay", math.nan, low=0.0),
     "weight_decay must be a number in [0, inf), received nan"),
    (lambda: validation.check_number("scale", False), "scale must be a number in [-inf, inf), "
     "received False"),
    (lambda: validation.check_number("x", 0.3, 0.05, 0.25), "x must be a number in [0.05, 0.25), "
     "received 0.3"),
    (lambda: validation.check_rate("dropout", 1.0),
     "dropout must be a number in [0, 1), received 1.0"),
    (lambda: validation.check_choice("optimizer", "lamb", ("adamw", "sgd")),
     "Unknown optimizer 'lamb': expected one of adamw, sgd"),
])
def test_each_check_names_the_value_and_what_was_expected(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


def test_valid_values_pass():
    validation.check_int("seed", -3)
    validation.check_int("epochs", 0, minimum=0)
    validation.check_positive_int("size", None, allow_none=True)
    validation.check_number("learning_rate", 1e-9, low=0.0, low_open=True)
    validation.check_number("min_crop_area", 1.0, 0.0, 1.0, low_open=True, high_open=False)
    validation.check_number("weight_decay", 0, low=0.0)
    validation.check_rate("dropout", 0.0)
    validation.check_choice("optimizer", "sgd", ("adamw", "sgd"))


def test_known_width_returns_the_width_and_names_what_is_missing():
    assert validation.known_width((None, 5, 32), num_heads=4) == 32
    with pytest.raises(ValueError, match=re.escape(
            "The last (width) dimension of the inputs must be known, received input shape "
            "(None, 5, None)")):
        validation.known_width((None, 5, None), "inputs")
    with pytest.raises(ValueError, match=re.escape(
            "The width 32 of the tokens is not divisible by num_heads 5")):
        validation.known_width((None, 5, 32), num_heads=5)
