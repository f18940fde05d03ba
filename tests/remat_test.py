"""Gradient checkpointing: `ViT(remat=True)`, `TransformerBlock(remat=True)`, `keras.RematScope`."""

import dataclasses

import keras
import numpy as np
import pytest
from layer_testing import loss_and_gradients, to_numpy

import keras_vit
from keras_vit import variants
from keras_vit.layers import TransformerBlock

# A 2-block micro ViT: enough to tell one selected block from all of them.
TWO_BLOCKS = dataclasses.replace(variants.parse_variant("mu/4"), depth=2)
STOCHASTIC = dict(dropout=0.2, attention_dropout=0.2, drop_path_rate=0.3)


def _block(remat, **kwargs):
    keras.utils.set_random_seed(5)  # the same random draws for both blocks
    block = TransformerBlock(2, 64, seed=3, remat=remat, **kwargs)
    block.build((None, 17, 32))
    rng = np.random.default_rng(1)
    block.set_weights([rng.normal(size=w.shape).astype("float32") * 0.2
                       for w in block.get_weights()])
    return block


@pytest.mark.parametrize("stochastic", [False, True], ids=["deterministic", "dropout_drop_path"])
def test_block_gradients_equal_those_without_remat(stochastic):
    # 16 examples: every weight gets a gradient from some example whose branches are kept.
    x = np.random.default_rng(0).normal(size=(16, 17, 32)).astype("float32")
    kwargs = STOCHASTIC if stochastic else {}
    loss, grads = loss_and_gradients(_block(False, **kwargs), x)
    remat_loss, remat_grads = loss_and_gradients(_block(True, **kwargs), x)
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    for grad, remat_grad in zip(grads, remat_grads, strict=True):
        assert np.abs(grad).max() > 1e-2  # a real gradient, which a mistake would change
        np.testing.assert_allclose(remat_grad, grad, rtol=1e-5, atol=1e-5 * np.abs(grad).max())
    if stochastic:
        # The masks were active: the loss is not the deterministic block's.
        plain_loss, _ = loss_and_gradients(_block(False), x)
        assert abs(plain_loss - loss) > 1e-3 * abs(loss)


class _FirstTokenLoss(keras.layers.Layer):
    """The block's first output token, computed alone (`first_token_only`) or sliced from all."""

    def __init__(self, block, alone):
        super().__init__(name="first_token")
        self.block, self.alone = block, alone
        self.built = True  # the block is

    def call(self, x, training=None):
        if self.alone:
            return self.block(x, training=training, first_token_only=True)
        return self.block(x, training=training)[:, :1]


@pytest.mark.parametrize("remat", [False, True])
@pytest.mark.parametrize("drop_path", [False, True])
def test_first_token_only_gradients_equal_those_of_the_sliced_full_block(remat, drop_path):
    # The last block of a [class]-token ViT: the same loss and weight gradients as the full
    # block's first token, with and without recomputation and stochastic depth (whose per-example
    # draws are the same in both; dropout masks have other shapes, so other draws).
    x = np.random.default_rng(2).normal(size=(16, 17, 32)).astype("float32")
    kwargs = dict(drop_path_rate=0.3) if drop_path else {}
    loss, grads = loss_and_gradients(_FirstTokenLoss(_block(remat, **kwargs), False), x)
    alone_loss, alone_grads = loss_and_gradients(_FirstTokenLoss(_block(remat, **kwargs), True), x)
    assert alone_loss == pytest.approx(loss, rel=1e-5)
    for grad, alone_grad in zip(grads, alone_grads, strict=True):
        assert np.abs(grad).max() > 1e-3  # every weight gets a gradient through the first token
        np.testing.assert_allclose(alone_grad, grad, rtol=1e-4, atol=1e-5 * np.abs(grad).max())
    if drop_path:
        _, plain = loss_and_gradients(_FirstTokenLoss(_block(remat), True), x)
        assert max(np.abs(a - b).max() for a, b in zip(plain, grads)) > 1e-3


def test_block_recomputes_only_in_training(remat_calls):
    block = _block(True)
    x = np.zeros((2, 17, 32), "float32")
    block(x, training=False)
    block(x, training=True, return_attention_weights=True)  # inspection: never recomputed
    assert len(remat_calls) == 0
    block(x, training=True)
    assert len(remat_calls) == 1
    _block(False)(x, training=True)
    assert len(remat_calls) == 1


def _fit(make_model, steps=2):
    """Weights and losses after `steps` SGD steps of `fit` on fixed random data."""
    keras.utils.set_random_seed(7)
    model = make_model()
    rng = np.random.default_rng(3)
    # Non-zero weights everywhere (a zero head would give every block a zero gradient).
    model.set_weights([rng.normal(size=w.shape).astype("float32") * 0.1
                       for w in model.get_weights()])
    initial = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = np.random.default_rng(0)
    images = data.normal(size=(8 * steps, 16, 16, 3)).astype("float32")
    labels = data.integers(0, 3, 8 * steps)
    history = model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return model, initial, history.history["loss"][0]


def _two_block_vit(stochastic=True, **kwargs):
    return keras_vit.ViT(TWO_BLOCKS, image_size=16, num_classes=3,
                         **(STOCHASTIC if stochastic else {}), **kwargs)


@pytest.fixture(scope="module")
def fit_without_remat():
    model, initial, loss = _fit(_two_block_vit)
    return model.get_weights(), initial, loss


@pytest.mark.parametrize("how", ["argument", "remat_scope"])
def test_fit_with_remat_equals_fit_without(how, fit_without_remat, remat_calls):
    if how == "argument":
        def make():
            return _two_block_vit(remat=True)
    else:
        def make():
            with keras.RematScope(mode="full"):
                return _two_block_vit()
    expected_weights, initial, loss = fit_without_remat
    model, _, remat_loss = _fit(make)
    # Both blocks recomputed, in every traced (TensorFlow, JAX) or eager (PyTorch) step.
    assert len(remat_calls) >= 2
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    for expected, found in zip(expected_weights, model.get_weights(), strict=True):
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
    moved = max(np.abs(w - w0).max() for w, w0 in zip(expected_weights, initial))
    assert moved > 1e-3


def test_remat_scope_selects_the_blocks_it_names(remat_calls):
    with keras.RematScope(mode="list_of_layers", layer_names=["encoder_block_1"]):
        model = _two_block_vit(stochastic=False)
    x = np.zeros((2, 16, 16, 3), "float32")
    model(x, training=True)
    assert len(remat_calls) == 1  # encoder_block_1 only
    with keras.RematScope(mode="activations"):  # selects no block: their MLPs' GELU stay whole
        model = _two_block_vit(stochastic=False)
    model(x, training=True)
    assert len(remat_calls) == 1


def test_remat_is_saved_with_the_model(tmp_path):
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=3, remat=True)
    path = str(tmp_path / "remat.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.remat for layer in keras_vit.model_layers.transformer_blocks(loaded)] == [True]
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-6)
