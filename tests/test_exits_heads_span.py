"""Heads on more features than samples are fitted on the span of the samples: the same head."""

import numpy as np

from hapi_onnx.exits import heads
from hapi_onnx.exits.heads import fit_head, head_probabilities


def wide_problem(n=120, f=400, k=7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    centres = rng.normal(0, 1, size=(k, f))
    x = (centres[y] + rng.normal(0, 2.0, size=(n, f))).astype(np.float32) + 3.0
    return x, y, k


def test_span_fit_gives_the_head_of_the_full_fit(monkeypatch):
    x, y, k = wide_problem()
    assert heads._sample_span((x - x.mean(0))[:100].astype(np.float64)).shape[1] <= 100
    reduced = fit_head(x, y, k)
    monkeypatch.setattr(heads, "_sample_span", lambda z: None)
    full = fit_head(x, y, k)
    assert reduced.l2 == full.l2
    assert abs(reduced.temperature - full.temperature) < 1e-3 * full.temperature
    p, q = head_probabilities(reduced.head, x), head_probabilities(full.head, x)
    assert np.abs(p - q).max() < 2e-3
    assert (p.argmax(1) == q.argmax(1)).mean() == 1.0
    assert reduced.heldout_accuracy == full.heldout_accuracy


def test_narrow_features_are_fitted_as_they_are():
    x, y, k = wide_problem(n=300, f=20)
    z = (x - x.mean(0)) / x.std(0)
    assert heads._sample_span(z.astype(np.float64)) is None
