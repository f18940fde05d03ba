"""Reference models of transformers and timm for the converter tests, and how to compare with them.

Every reference is a tiny model built from a config by its library (random weights, no
download), with every parameter drawn at random (biases, LayerNorms, LayerScale included, so a
mapping that drops or transposes one shows), and saved by the library itself (`save_pretrained`,
timm's `save_for_hf(safe_serialization=True)`). keras_vit's outputs must equal the library's
within 1e-4 of the output's scale on the backend under test.
"""

import numpy as np

import keras

_NORM_SUFFIXES = ("norm.weight", "norm1.weight", "norm2.weight", "layernorm.weight",
                  "layernorm_before.weight", "layernorm_after.weight", "layer_norm1.weight",
                  "layer_norm2.weight", "post_layernorm.weight", "pre_layrnorm.weight",
                  "norm_pre.weight")


def randomize(module, seed=0):
    """Every parameter of `module` drawn at random (LayerNorm scales around 1), in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(_NORM_SUFFIXES):
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_(0.2 * noise)
    return module.eval()


def images(count=2, size=16, seed=3):
    """Model inputs, channels last (keras) and channels first (torch); `size` int or (h, w)."""
    import torch

    height, width = (size, size) if isinstance(size, int) else size
    nhwc = np.random.default_rng(seed).normal(size=(count, height, width, 3)).astype("float32")
    return nhwc, torch.from_numpy(nhwc.transpose(0, 3, 1, 2).copy())


def assert_close(ours, reference, tolerance=1e-4):
    """`ours` equals `reference` within `tolerance` times the reference's largest magnitude."""
    ours = keras.ops.convert_to_numpy(ours)
    reference = reference.detach().numpy() if hasattr(reference, "detach") else reference
    assert ours.shape == reference.shape
    scale = float(np.abs(reference).max())
    assert scale > 1e-2  # a degenerate reference would make the comparison unable to fail
    np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance * scale)


def save_hf(model, folder, processor=None):
    """A transformers model (and its image processor) saved by transformers."""
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return str(folder)


def save_timm(model, folder, args):
    """A timm model saved by timm as a Hub folder, with the `model_args` it was built with."""
    from timm.models import _hub

    _hub.save_for_hf(model, str(folder), safe_serialization=True, model_args=args)
    return str(folder)
