"""`ViT(..., dynamic_image_size=True)`: one model, any image size per call, on every backend."""

import numpy as np
import keras
import pytest

import keras_vit
from keras_vit import explain, finetune, model_layers

BACKEND = keras.backend.backend()


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _images(shape, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _pair(variant="mu/4", image_size=16, **kwargs):
    """(dynamic model, static model with the same weights), heads non-zero."""
    dynamic = keras_vit.ViT(variant, image_size=image_size, num_classes=5,
                            dynamic_image_size=True, **kwargs)
    head = model_layers.find_layer(dynamic, "head")
    if head is not None:
        rng = np.random.default_rng(0)
        head.kernel.assign(rng.normal(size=head.kernel.shape).astype("float32"))
        head.bias.assign(rng.normal(size=head.bias.shape).astype("float32"))
    static = keras_vit.ViT(variant, image_size=image_size, num_classes=5, **kwargs)
    static.set_weights(dynamic.get_weights())
    return dynamic, static


def test_equals_the_adapted_static_model_on_any_grid():
    dynamic, static = _pair()
    assert dynamic.input_shape == (None, None, None, 3)
    assert dynamic.count_params() == static.count_params()
    for shape in [(48, 64), (16, 16), (8, 28), (64, 12)]:
        images = _images((2,) + shape + (3,))
        expected = _numpy(finetune.adapt(static, image_size=shape)(images))
        got = _numpy(dynamic(images))
        assert got.shape == (2, 5)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=str(shape))
    # At the stored size the embeddings are the weights themselves: bit-identical.
    images = _images((3, 16, 16, 3))
    np.testing.assert_array_equal(_numpy(dynamic(images)), _numpy(static(images)))
    # The comparison can fail: another grid gives other logits.
    assert np.abs(_numpy(dynamic(_images((2, 48, 64, 3))))
                  - _numpy(static(_images((2, 48, 64, 3))[:, :16, :16]))).max() > 1e-3


def test_predict_evaluate_and_fit_on_batches_of_several_sizes():
    dynamic, static = _pair()
    dynamic.compile(optimizer=keras.optimizers.SGD(0.1),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for shape in [(48, 64), (24, 12)]:
        images = _images((4,) + shape + (3,), seed=sum(shape))
        expected = _numpy(finetune.adapt(static, image_size=shape)(images))
        np.testing.assert_allclose(dynamic.predict(images, verbose=0), expected, atol=1e-5,
                                   rtol=1e-5)
        labels = expected.argmax(-1)
        loss = dynamic.evaluate(images, labels, verbose=0)
        reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels,
                                                                                 expected)
        np.testing.assert_allclose(loss, _numpy(reference), rtol=1e-4)

    def batches():
        # Five sizes in one fit: TensorFlow retraces, then traces with unknown sides (JAX
        # compiles once per size: three there).
        shapes = [(16, 16), (32, 24), (8, 40), (48, 64), (20, 12)]
        if BACKEND != "tensorflow":
            shapes = shapes[::2]
        for step, shape in enumerate((shapes * 4)[:10]):
            yield _images((4,) + shape + (3,), seed=step), np.arange(4) % 5

    before = [w.copy() for w in dynamic.get_weights()]
    history = dynamic.fit(batches(), steps_per_epoch=10, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(a, b) for a, b in zip(before, dynamic.get_weights())]
    assert all(changed)  # The position embeddings too: their gradient flows through the resize.


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TensorFlow traces unknown sizes")
def test_traced_with_unknown_sides_equals_eager_and_checks_sizes():
    import tensorflow as tf

    dynamic, static = _pair()
    traced = tf.function(lambda x: dynamic(x, training=False),
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    for shape in [(48, 64), (16, 16), (12, 20)]:
        images = _images((2,) + shape + (3,))
        expected = _numpy(finetune.adapt(static, image_size=shape)(images))
        np.testing.assert_allclose(traced(images).numpy(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="Image height is not divisible by 4, the patch size"):
        traced(_images((1, 18, 16, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="Image width is not divisible by 4, the patch size"):
        traced(_images((1, 16, 10, 3)))


def test_bad_sizes_are_named():
    dynamic, _ = _pair()
    with pytest.raises(ValueError, match=r"Image height 18 \(input shape \(1, 18, 16, 3\)\) "
                                         r"is not divisible by patch_size 4"):
        dynamic(_images((1, 18, 16, 3)))


def test_hybrid_and_include_top_false(monkeypatch):
    from keras_vit import variants

    # A one-unit-per-stage ResNet, registered as "R5" (as in checkpoints_test): a small hybrid.
    monkeypatch.setitem(variants.HYBRID_STAGES, ("R5", 16), (1, 1, 1))
    dynamic, static = _pair("R5+mu/16", image_size=32)
    images = _images((2, 48, 64, 3))
    np.testing.assert_allclose(_numpy(dynamic(images)),
                               _numpy(finetune.adapt(static, image_size=(48, 64))(images)),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Image height 40 .* is not divisible by 16, the "
                                         "patch size \\(a hybrid's feature-map stride\\)"):
        dynamic(_images((1, 40, 32, 3)))
    features = keras_vit.ViT("mu/4", image_size=16, include_top=False, pooling="gap",
                             dynamic_image_size=True)
    assert _numpy(features(_images((2, 24, 36, 3)))).shape == (2, 32)


def test_keras_file_round_trip_and_adapt(tmp_path):
    dynamic, _ = _pair()
    path = str(tmp_path / "dynamic.keras")
    dynamic.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.input_shape == (None, None, None, 3)
    for shape in [(16, 16), (28, 44)]:
        images = _images((2,) + shape + (3,))
        np.testing.assert_array_equal(_numpy(loaded(images)), _numpy(dynamic(images)))
    # adapt keeps a model of any size: a new head, and image_size sets the stored grid.
    tuned = finetune.adapt(dynamic, image_size=32, num_classes=3)
    assert tuned.input_shape == (None, None, None, 3)
    assert tuned.get_layer("position_embedding").grid_size == (8, 8)
    assert _numpy(tuned(_images((2, 20, 24, 3)))).shape == (2, 3)
    # Loaded as weights of a model of any size from a static .keras file, and back.
    static_path = str(tmp_path / "static.keras")
    keras_vit.ViT("mu/4", image_size=16, num_classes=5).save(static_path)
    from_file = keras_vit.ViT("mu/4", image_size=16, num_classes=5, dynamic_image_size=True,
                              weights=static_path)
    assert from_file.input_shape == (None, None, None, 3)


def test_explain_functions_on_a_non_square_image():
    dynamic, _ = _pair()
    images = _images((2, 24, 40, 3))
    out = explain.intermediate_outputs(dynamic, images)
    assert _numpy(out["attention"][0]).shape == (2, 2, 1 + 6 * 10, 1 + 6 * 10)
    np.testing.assert_allclose(_numpy(out["outputs"]), _numpy(dynamic(images)), atol=1e-5)
    maps = _numpy(explain.attention_rollout(dynamic, images))
    assert maps.shape == (2, 24, 40)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="SavedModel export needs TensorFlow")
def test_saved_model_serves_any_size(tmp_path):
    import tensorflow as tf

    from training import export

    dynamic, static = _pair()
    out = export.export_saved_model(dynamic, str(tmp_path / "saved_model"))
    serve = tf.saved_model.load(out).signatures["serving_default"]
    for shape in [(16, 16), (24, 40)]:
        raw = np.random.default_rng(3).integers(0, 256, (2,) + shape + (3,), dtype=np.uint8)
        expected = _numpy(finetune.adapt(static, image_size=shape)(raw / 127.5 - 1.0))
        np.testing.assert_allclose(serve(images=tf.constant(raw))["logits"].numpy(), expected,
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Image height is not divisible"):
        serve(images=tf.zeros((1, 18, 16, 3), tf.uint8))
    # With --image_size, images are resized to it, as for a model of a fixed size.
    resized = export.export_saved_model(dynamic, str(tmp_path / "at_24"), image_size=24)
    serve = tf.saved_model.load(resized).signatures["serving_default"]
    assert serve(images=tf.zeros((1, 18, 16, 3), tf.uint8))["logits"].shape == (1, 5)
