"""Exit heads: the logistic-regression objective, folding, temperature scaling, determinism."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.special import softmax

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.blas import _loaded_openblas, blas_threads
from hapi_onnx.exits.heads import _loss_and_grad, fit_head, head_probabilities, heldout_split
from hapi_onnx.exits.temperature import fit_temperature, nll


def blobs(n=900, f=12, k=4, noise=1.5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, f)) * 2
    y = rng.integers(0, k, n)
    x = centers[y] + rng.normal(scale=noise, size=(n, f))
    return x.astype(np.float32), y


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 5))
    onehot = np.eye(3)[rng.integers(0, 3, 40)]
    params = rng.normal(size=5 * 3 + 3) * 0.3
    _, grad = _loss_and_grad(params, z, onehot, 0.05)
    numeric = approx_fprime(params, lambda p: _loss_and_grad(p, z, onehot, 0.05)[0], 1e-7)
    np.testing.assert_allclose(grad, numeric, atol=1e-5)


def test_head_learns_and_reports_both_splits():
    x, y = blobs()
    fit = fit_head(x, y, 4)
    assert fit.head.weight.shape == (12, 4) and fit.head.weight.dtype == np.float32
    assert fit.train_accuracy > 0.9 and fit.heldout_accuracy > 0.85
    assert fit.l2 in (1e-2, 1e-3, 1e-4) and fit.temperature > 0
    probs = head_probabilities(fit.head, x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_standardisation_is_folded_so_affine_rescaling_of_features_changes_nothing():
    x, y = blobs(seed=2)
    scale = np.linspace(0.01, 100, x.shape[1]).astype(np.float32)
    shifted = x * scale + 7.0
    a, b = fit_head(x, y, 4), fit_head(shifted, y, 4)
    np.testing.assert_allclose(head_probabilities(a.head, x), head_probabilities(b.head, shifted), atol=2e-3)
    assert a.l2 == b.l2


def test_constant_features_do_not_break_the_fit():
    x, y = blobs(seed=3)
    x = np.concatenate([x, np.zeros((len(x), 3), np.float32), np.full((len(x), 1), 5.0, np.float32)], axis=1)
    fit = fit_head(x, y, 4)
    assert np.isfinite(fit.head.weight).all() and fit.heldout_accuracy > 0.85


def test_fit_is_deterministic():
    x, y = blobs(seed=4)
    a, b = fit_head(x, y, 4), fit_head(x, y, 4)
    np.testing.assert_array_equal(a.head.weight, b.head.weight)
    np.testing.assert_array_equal(a.head.bias, b.head.bias)
    assert a.temperature == b.temperature


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(5)
    true_logits = rng.normal(size=(4000, 5)) * 2
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits, axis=1)])
    t = fit_temperature(3.0 * true_logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(3.0 * true_logits, labels, t) < nll(3.0 * true_logits, labels, 1.0)


def test_a_perfect_heldout_score_does_not_saturate_confidences():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, 300)
    logits = rng.normal(size=(300, 10))
    logits[np.arange(300), labels] += 6.0  # every sample right, margins around 6
    plain = fit_temperature(logits, labels, prior=0.0)  # plain NLL: T collapses towards 0
    assert (softmax(logits / plain, axis=1).max(axis=1).astype(np.float32) == 1.0).mean() > 0.9
    t = fit_temperature(logits, labels)
    assert 0.2 < t < 2.0
    conf = softmax(logits / t, axis=1).max(axis=1).astype(np.float32)
    assert (conf < 1.0).all() and 0.99 < conf.mean() < 0.9999


def test_heldout_split_is_seeded_and_disjoint():
    fit_a, held_a = heldout_split(100, 0.2, seed=0)
    fit_b, held_b = heldout_split(100, 0.2, seed=0)
    np.testing.assert_array_equal(held_a, held_b)
    assert len(held_a) == 20 and not set(fit_a) & set(held_a)
    assert sorted(np.concatenate([fit_a, held_a])) == list(range(100))
    with pytest.raises(HapiError, match="more training samples"):
        heldout_split(2, 0.15)


def test_blas_threads_is_one_inside_and_restored_after():
    handles = _loaded_openblas()
    assert handles, "numpy/scipy ship OpenBLAS on this platform"
    before = [get() for get, _ in handles]
    with blas_threads(1):
        assert [get() for get, _ in handles] == [1] * len(handles)
    assert [get() for get, _ in handles] == before


def test_auto_solver_by_head_size():
    from hapi_onnx.exits.heads import EXACT_MAX_PARAMS, choose_solver

    assert choose_solver(320, 10) == "exact" and choose_solver(2048, 1000) == "whitened"
    limit = EXACT_MAX_PARAMS // 4
    assert choose_solver(limit, 4) == "exact" and choose_solver(limit + 1, 4) == "whitened"
    assert choose_solver(2048, 1000, "exact") == "exact"
    with pytest.raises(HapiError, match="solver must be one of auto, exact, whitened"):
        choose_solver(10, 10, "sgd")


def test_whitened_solver_matches_exact_and_folds_everything():
    x, y = blobs(n=3000, f=40, k=30, noise=2.5, seed=7)
    x = x * np.linspace(0.1, 10, 40, dtype=np.float32) + 3.0  # badly scaled, offset features
    exact, fast = fit_head(x, y, 30, solver="exact"), fit_head(x, y, 30, solver="whitened")
    assert fast.solver == "whitened" and fast.iterations in (4, 8, 12)
    assert fast.heldout_accuracy > exact.heldout_accuracy - 0.03
    assert fast.heldout_nll < exact.heldout_nll + 0.1
    # The reported held-out numbers are those of the folded head on raw features.
    _, held = heldout_split(len(x))
    probs = head_probabilities(fast.head, x[held])
    assert np.mean(probs.argmax(axis=1) == y[held]) == pytest.approx(fast.heldout_accuracy, abs=2 / len(held))
    again = fit_head(x, y, 30, solver="whitened")
    np.testing.assert_array_equal(again.head.weight, fast.head.weight)
