"""Accuracy bounds of the search: the formulas against direct computation, the integer limits
against the formulas, monotonicity in the confidence, and the design they pick."""

import math
from functools import partial
from statistics import NormalDist

import numpy as np
import pytest

from hapi_onnx.errors import HapiError
from hapi_onnx.search import score_design, search
from hapi_onnx.search.bounds import (
    accuracy_lower_bound,
    drop_upper_bound,
    min_correct_for_accuracy,
    min_correct_for_drop,
    z_score,
)
from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.optimise import resolve_goal
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

PerDesign = partial(Constraints, guarantee="per-design")  # the per-design bounds these tests check


def artifacts(num_intermediate=7, n=600, seed=40):
    return synthetic_trace(num_intermediate, n, seed=seed, decimals=3), synthetic_table(num_intermediate, seed=seed)


def test_z_score_is_the_one_sided_normal_quantile_and_0_means_raw():
    assert z_score(0) == 0.0 and z_score(0.5) == 0.0
    assert z_score(0.9) == pytest.approx(1.2815516, abs=1e-6)
    assert z_score(0.95) == pytest.approx(1.6448536, abs=1e-6)
    for bad in (0.3, 1.0, 1.5, -0.1, float("nan"), True, "0.9"):  # refused once, where levels are made
        with pytest.raises(HapiError, match="'bound_level' must be a number in"):
            PerDesign(max_accuracy_drop=1.0, bound_level=bad)


def test_drop_bound_is_the_paired_formula_with_one_pseudo_disagreement():
    z = z_score(0.9)
    # losses 7, gains 2 of 1000: (7 - 2 + z * sqrt(10)) / 1000
    assert drop_upper_bound(990, 985, 9, 1000, z) == pytest.approx((5 + z * math.sqrt(10)) / 1000)
    # a design that agrees with the final classifier everywhere is not certain ...
    assert drop_upper_bound(990, 990, 0, 1000, z) == pytest.approx(z / 1000)
    # ... but the final classifier itself is
    assert drop_upper_bound(990, 990, 0, 1000, z, reference=True) == 0.0
    assert drop_upper_bound(990, 985, 9, 1000, 0.0) == pytest.approx(0.005)  # raw drop
    arr = drop_upper_bound(990, np.array([985, 990]), np.array([9, 0]), 1000, z, reference=np.array([False, True]))
    np.testing.assert_allclose(arr, [(5 + z * math.sqrt(10)) / 1000, 0.0])


def test_wilson_bound_matches_the_textbook_formula():
    z, n = z_score(0.95), 500
    for c in (0, 1, 250, 480, 499, 500):
        p = c / n
        want = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
        assert accuracy_lower_bound(c, n, z) == pytest.approx(max(want, 0.0), abs=1e-12)
    assert accuracy_lower_bound(n, n, z) == pytest.approx(n / (n + z * z))  # never 100% on finite data
    assert accuracy_lower_bound(123, n, 0.0) == 123 / n


@pytest.mark.parametrize("confidence", [0, 0.8, 0.9, 0.99])
def test_integer_limits_agree_with_the_bound_formulas(confidence):
    z, n, final = z_score(confidence), 400, 380
    for budget in (0.0, 0.5, 1.25, 3.0):
        table = min_correct_for_drop(budget, final, n, z)
        assert np.all(np.diff(table) >= 0)  # more disagreement never needs fewer right answers
        c = np.arange(n + 1)[:, None]
        d = np.arange(n + 1)[None, :]
        bound = np.broadcast_to(100 * drop_upper_bound(final, c, d, n, z), (n + 1, n + 1))
        clear = np.abs(bound - budget) > 1e-7  # away from float ties at the limit
        np.testing.assert_array_equal((c >= table[None, :])[clear], (bound <= budget)[clear])
    for floor in (0.5, 0.9, 0.95, 0.999, 1.0):
        need = min_correct_for_accuracy(floor, n, z)
        bounds = accuracy_lower_bound(np.arange(n + 1), n, z)
        assert np.all(bounds[need:] >= floor - 1e-9) and np.all(bounds[:need] < floor - 1e-9)
    if not z:  # raw counts: exactly the old rule
        assert min_correct_for_accuracy(0.9, n, z) == math.ceil(0.9 * n - 1e-9)
        assert np.all(min_correct_for_drop(1.25, final, n, z) == math.ceil((final / n - 0.0125) * n - 1e-9))


def test_the_recorded_bounds_are_the_formulas_on_direct_counts():
    """L and G counted sample by sample from the trace, then the formulas by hand."""
    trace, table = artifacts()
    for space in ("global", "per-exit"):
        design = search(trace, table, PerDesign(max_accuracy_drop=2.0, space=space, bound_level=0.9))
        exits = [trace.exit_names.index(e.name) for e in design.exits[:-1]]
        thr = [e.threshold for e in design.exits[:-1]]
        right = trace.pred == trace.labels[None, :]
        losses = gains = 0
        for n in range(len(trace.labels)):
            at = next((k for k, t in zip(exits, thr, strict=True) if trace.conf[k, n] >= np.float32(t)), -1)
            losses += int(right[-1, n] and not right[at, n])
            gains += int(right[at, n] and not right[-1, n])
        z, n = NormalDist().inv_cdf(0.9), len(trace.labels)
        want = 100 * (losses - gains + z * math.sqrt(losses + gains + 1)) / n
        assert design.predicted["accuracy_drop_bound_pp"] == pytest.approx(want)
        assert want <= 2.0 + 1e-9  # the constraint holds on the bound, not only on the raw drop
        assert design.predicted["accuracy"] == pytest.approx(design.reference["accuracy"] - (losses - gains) / n)


@pytest.mark.parametrize("seed", [40, 41])
def test_higher_confidence_never_gives_a_faster_design(seed):
    trace, table = artifacts(seed=seed)
    final_acc = float(trace.accuracy[-1])
    for constraints in (
        {"max_accuracy_drop": 1.0},
        {"max_accuracy_drop": 3.0, "percentile": "p90"},
        {"min_accuracy": final_acc - 0.02},
        {"min_accuracy": final_acc - 0.05, "max_accuracy_drop": 2.0},
    ):
        latencies, bounds = [], []
        for confidence in (0, 0.6, 0.8, 0.9, 0.95, 0.99):
            design = search(trace, table, PerDesign(**constraints, bound_level=confidence))
            latencies.append(design.predicted[f"{design.latency_stat}_ms"])
            bounds.append(design.predicted["accuracy_drop_bound_pp"])
        assert latencies == sorted(latencies), constraints
        assert latencies[-1] > latencies[0], constraints  # the bound does bite on 600 samples


def test_raw_counts_overfit_more_than_bounds_on_held_out_data():
    """Search on one half, score on the other: the bounded design keeps its budget there more often."""
    kept = {0: 0, 0.9: 0}
    for seed in range(6):
        full = synthetic_trace(8, 1600, seed=seed, decimals=3)
        table = synthetic_table(8, seed=seed)
        halves = [np.arange(0, 800), np.arange(800, 1600)]
        calib, held = (_subset(full, idx) for idx in halves)
        for confidence in kept:
            design = search(calib, table, PerDesign(max_accuracy_drop=1.0, bound_level=confidence))
            ev = score_design(held, table, design.exits)
            kept[confidence] += 100 * (held.accuracy[-1] - ev.accuracy) <= 1.0 + 1e-9
    assert kept[0.9] > kept[0] and kept[0.9] >= 5


def test_the_final_classifier_is_certain_to_keep_a_zero_drop():
    trace, table = artifacts()
    design = search(trace, table, PerDesign(max_accuracy_drop=0.0, bound_level=0.95))
    assert design.predicted["accuracy_drop_bound_pp"] <= 0.0
    assert design.predicted["accuracy"] >= design.reference["accuracy"]


def test_goal_tables_per_discordant_count():
    trace, table = artifacts()
    problem = SearchProblem.from_artifacts(trace, table)
    raw = resolve_goal(problem, PerDesign(max_accuracy_drop=1.0, bound_level=0))
    bounded = resolve_goal(problem, PerDesign(max_accuracy_drop=1.0, bound_level=0.9))
    assert len(set(raw.min_correct.tolist())) == 1 and raw.z == 0.0
    assert np.all(bounded.min_correct >= raw.min_correct) and bounded.min_correct[-1] > bounded.min_correct[0]
    assert bounded.constraints.bound_level == 0.9 and raw.constraints.bound_level == 0
    with pytest.raises(HapiError, match="'bound_level' must be a number in"):
        PerDesign(max_accuracy_drop=1.0, bound_level=1.0)


def _subset(trace, idx):
    from hapi_onnx.trace import Trace

    return Trace(
        **{
            **trace.__dict__,
            "labels": trace.labels[idx],
            "pred": trace.pred[:, idx],
            "conf": trace.conf[:, idx],
        }
    )
