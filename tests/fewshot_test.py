"""Tests of keras_vit.fewshot: the closed-form solver, the draws, the evaluation."""

import numpy as np
import pytest
from layer_testing import to_numpy

import keras_vit
from keras_vit import fewshot


@pytest.mark.parametrize("num,dim", [(40, 7), (6, 30)])  # primal and dual sides
def test_least_squares_matches_ridge_and_an_augmented_lstsq(num, dim):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x, y, l2 = rng.normal(size=(num, dim)), rng.normal(size=(num, 3)), 0.7
    weights = fewshot.least_squares(x, y, l2)
    assert weights.shape == (dim, 3)
    ridge = Ridge(alpha=l2, fit_intercept=False, solver="cholesky").fit(x, y)
    np.testing.assert_allclose(weights, ridge.coef_.T, atol=1e-10)
    # min ||xW - y||^2 + l2 ||W||^2 is plain least squares on [x; sqrt(l2) I] and [y; 0].
    stacked_x = np.concatenate([x, np.sqrt(l2) * np.eye(dim)])
    stacked_y = np.concatenate([y, np.zeros((dim, 3))])
    reference = np.linalg.lstsq(stacked_x, stacked_y, rcond=None)[0]
    np.testing.assert_allclose(weights, reference, atol=1e-10)


def test_least_squares_refuses_bad_arguments():
    with pytest.raises(ValueError, match="l2_reg must be a positive number, received 0"):
        fewshot.least_squares(np.ones((2, 2)), np.ones((2, 1)), 0)
    with pytest.raises(ValueError, match=r"received \(3, 2\) and \(2, 1\)"):
        fewshot.least_squares(np.ones((3, 2)), np.ones((2, 1)), 1.0)


def _clusters(num_classes, per_class, dim, seed, spread=0.1):
    """Features of well separated classes: one random centre each, small noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 5
    labels = np.repeat(np.arange(num_classes), per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_separable_features_are_classified_perfectly_from_one_shot():
    train_x, train_y = _clusters(5, 30, 64, seed=0)
    test_x, test_y = _clusters(5, 20, 64, seed=0)  # same centres, new noise draws
    test_x = test_x + 0.05 * np.random.default_rng(1).normal(size=test_x.shape)
    results = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=[1, 5, 25], seeds=4)
    assert sorted(results) == [1, 5, 25]
    for result in results.values():
        assert result == {"mean": 1.0, "std": 0.0, "accuracies": [1.0] * 4}


def test_evaluate_accepts_one_hot_labels_and_spreads_over_draws():
    # Heavily overlapping classes: accuracy is above chance but varies with the draw.
    train_x, train_y = _clusters(4, 50, 16, seed=3, spread=8.0)
    test_x, test_y = _clusters(4, 50, 16, seed=3, spread=8.0)
    one_hot = np.eye(4)[train_y]
    a = fewshot.evaluate(train_x, one_hot, test_x, test_y, shots=[1, 10], seeds=5)
    b = fewshot.evaluate(train_x, train_y, test_x, np.eye(4)[test_y], shots=[1, 10], seeds=5)
    assert a == b
    assert len(a[1]["accuracies"]) == 5
    assert a[1]["std"] > 0
    np.testing.assert_allclose(a[1]["mean"], np.mean(a[1]["accuracies"]))
    np.testing.assert_allclose(a[1]["std"], np.std(a[1]["accuracies"]))
    assert 0.25 < a[10]["mean"] <= 1.0


def test_linear_probe_is_the_documented_least_squares_fit():
    rng = np.random.default_rng(0)
    train_x, train_y = rng.normal(size=(12, 5)), np.arange(12) % 3
    test_x, test_y = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
    # By hand: whiten with the training statistics, add the bias feature 100, fit {-1, 1}
    # targets with l2 = 2.
    mean, std = train_x.mean(0), train_x.std(0) + 1e-5
    design = lambda x: np.concatenate([(x - mean) / std, np.full((len(x), 1), 100.0)], 1)  # noqa
    a = design(train_x)
    weights = np.linalg.solve(a.T @ a + 2.0 * np.eye(6), a.T @ (2 * np.eye(3)[train_y] - 1))
    expected = np.mean(np.argmax(design(test_x) @ weights, 1) == test_y)
    accuracy = fewshot.linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=3,
                                             l2_reg=2.0)
    assert accuracy == pytest.approx(expected, abs=0)


def test_draws_are_per_class_nested_and_reproducible():
    labels = np.repeat(np.arange(3), [7, 9, 8])
    sets = fewshot.draw_support_sets(labels, shots=[2, 5], seeds=3)
    assert sorted(sets) == [(2, 0), (2, 1), (2, 2), (5, 0), (5, 1), (5, 2)]
    for (shot, seed), indices in sets.items():
        assert np.bincount(labels[indices], minlength=3).tolist() == [shot] * 3
        assert len(set(indices.tolist())) == len(indices)
    for seed in range(3):
        assert set(sets[(2, seed)]) <= set(sets[(5, seed)])
    assert set(sets[(5, 0)]) != set(sets[(5, 1)])
    again = fewshot.draw_support_sets(labels, shots=[5, 2], seeds=3)
    for key in sets:
        np.testing.assert_array_equal(sets[key], again[key])


def test_too_many_shots_names_the_class_the_count_and_what_is_available():
    labels = np.repeat(np.arange(3), [7, 4, 8])
    features = np.zeros((19, 2))
    with pytest.raises(ValueError, match=r"5-shot evaluation needs 5 training examples of every "
                                         r"class, but class 1 has only 4 available"):
        fewshot.evaluate(features, labels, features, labels, shots=[1, 5])
    with pytest.raises(ValueError, match=r"class 3 has only 0 available"):
        fewshot.draw_support_sets(labels, shots=[1], seeds=1, num_classes=4)
    with pytest.raises(ValueError, match=r"shots must be positive integers, received \[0\]"):
        fewshot.draw_support_sets(labels, shots=[0], seeds=1)
    with pytest.raises(ValueError, match="seeds must be a positive integer, received 0"):
        fewshot.draw_support_sets(labels, shots=[1], seeds=0)
    with pytest.raises(ValueError, match=r"train_features must have shape \(N, D\) with N = 19"):
        fewshot.evaluate(features[:5], labels, features, labels, shots=[1])


def test_feature_model_gives_the_pre_logits_representation():
    model = keras_vit.ViT("mu/4", image_size=16, num_classes=10, representation_size=24)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype("float32")
    features = fewshot.feature_model(model)
    assert tuple(features.output.shape) == (None, 24)
    pre_logits = model.get_layer("pre_logits")(
        model.get_layer("pooling")(model.get_layer("encoder_norm")(
            keras_vit.explain.intermediate_outputs(model, images)["tokens"][-1])))
    np.testing.assert_allclose(to_numpy(features(images)), to_numpy(pre_logits), atol=1e-5)
    headless = keras_vit.ViT("mu/4", image_size=16, include_top=False)
    assert fewshot.feature_model(headless) is headless
    extracted, labels = fewshot.extract_features(
        features, [(images[:2], np.eye(10)[[3, 4]]), (images[2:], np.eye(10)[[5]])])
    assert extracted.shape == (3, 24) and labels.tolist() == [3, 4, 5]
    np.testing.assert_allclose(extracted, to_numpy(features(images)), atol=1e-5)
