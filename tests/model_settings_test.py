"""model_settings: a ViT(...) call's arguments, a preset's and a checkpoint's, into one object."""

import dataclasses

import pytest

from keras_vit import model_settings, presets
from keras_vit.variants import parse_variant


def test_defaults_are_the_papers():
    settings = model_settings.resolve()
    assert settings.spec == parse_variant("B/16")
    assert (settings.image_size, settings.grid) == ((224, 224), (14, 14))
    assert (settings.num_classes, settings.pooling, settings.representation_size) == (
        1000, "token", None)
    assert (settings.num_prefix_tokens, settings.model_name) == (1, "vit_b16")


def test_settings_are_frozen_and_checked_when_made():
    settings = model_settings.resolve("mu/4", image_size=(16, 24), pooling="gap", name="m")
    assert (settings.grid, settings.num_prefix_tokens, settings.model_name) == ((4, 6), 0, "m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pooling = "token"
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), received 1.5"):
        dataclasses.replace(settings, dropout=1.5)
    with pytest.raises(ValueError, match=r"height 18 is not divisible by patch_size 4"):
        model_settings.resolve("mu/4", image_size=(18, 16))


def test_the_first_bad_argument_is_named():
    # The image size is checked before the pooling, the pooling before the rates.
    with pytest.raises(ValueError, match=r"image_size 30"):
        model_settings.resolve("mu/4", image_size=30, pooling="max", dropout=2.0)
    with pytest.raises(ValueError, match=r"Unknown pooling 'max'"):
        model_settings.resolve("mu/4", image_size=32, pooling="max", dropout=2.0)


def test_a_preset_fills_what_the_call_leaves_unset():
    preset = presets.get("augreg_ti16_i21k")
    settings = model_settings.resolve(preset=preset)
    assert (settings.spec.name, settings.image_size, settings.num_classes,
            settings.representation_size) == ("Ti/16", (224, 224), 21843, None)
    # Other classes: the paper's new head, without the source's pre-logits.
    vit = presets.get("vit_b16_i21k")
    assert model_settings.resolve(preset=vit).representation_size == 768
    assert model_settings.resolve(preset=vit, num_classes=10).representation_size is None
    with pytest.raises(ValueError, match=r"variant 'S/16' contradicts weights"):
        model_settings.resolve("S/16", preset=preset)


def test_drop_path_grows_linearly_over_the_blocks():
    settings = model_settings.resolve("Ti/16", drop_path_rate=0.11)
    rates = [settings.block_drop_path_rate(i) for i in range(settings.spec.depth)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.11)
    assert rates[6] == pytest.approx(0.06)
