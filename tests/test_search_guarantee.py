"""The certified search: exact p-values, fixed-sequence testing, the level holding for the chosen
design over many calibration draws, and label-free calibration against the full model."""

import numpy as np
import pytest
from scipy.stats import binom

from hapi_onnx.errors import HapiError
from hapi_onnx.search import Constraints, Design, search
from hapi_onnx.search.guarantee import CERTIFY_FRACTION, certify, rate_upper_bound, split_indices, tail_p_value
from hapi_onnx.search.optimise import Candidate, resolve_goal
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.score import score_problem
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace
from hapi_onnx.trace import Trace


def subset(trace: Trace, idx: np.ndarray, labels: bool = True) -> Trace:
    return Trace(**{**trace.__dict__, "labels": trace.labels[idx] if labels else None,
                    "pred": trace.pred[:, idx], "conf": trace.conf[:, idx], "margin": None})


def test_p_values_are_the_exact_binomial_tail_and_bounds_invert_them():
    assert tail_p_value(3, 500, 0.01) == pytest.approx(binom.cdf(3, 500, 0.01))
    assert tail_p_value(0, 500, 0.005) == pytest.approx(0.995**500)
    for count, n in ((0, 500), (4, 1000), (30, 2000)):
        upper = rate_upper_bound(count, n, 0.9)
        assert tail_p_value(count, n, upper) == pytest.approx(0.1, abs=1e-9)  # rejects exactly at the level
        assert tail_p_value(count, n, upper * 0.99) > 0.1 and tail_p_value(count, n, upper * 1.01) < 0.1


def test_the_split_is_seeded_and_partitions_the_samples():
    search_idx, certify_idx = split_indices(1001)
    assert len(certify_idx) == round(1001 * CERTIFY_FRACTION) and len(np.union1d(search_idx, certify_idx)) == 1001
    again = split_indices(1001)
    assert np.array_equal(again[0], search_idx) and np.array_equal(again[1], certify_idx)


def test_fixed_sequence_testing_stops_at_the_first_failure():
    trace, table = synthetic_trace(4, 2000, seed=2, decimals=3), synthetic_table(4, seed=2)
    problem = SearchProblem.from_artifacts(trace, table)
    goal = resolve_goal(problem, Constraints(max_accuracy_drop=3.0))
    path = [Candidate((), (), 0, 0, 0)] + [Candidate((0, 2), (t, t), 0, 0, 0) for t in (0.99, 0.9, 0.5, 0.2, 0.95)]
    tested = certify(problem, iter(path), goal)
    verdicts = [t.certified for t in tested]
    assert verdicts[0] and verdicts[-1] is False and all(verdicts[:-1])  # a prefix, then one failure
    assert len(tested) < len(path)  # the walk stopped: the last (safe) design was never tested
    for t in tested[1:]:
        losses = score_problem(problem, t.design.exits, t.design.thresholds).losses
        assert t.certified == (binom.cdf(losses, problem.num_samples, 0.03) <= 0.1)
        assert t.drop_bound == pytest.approx(rate_upper_bound(losses, problem.num_samples, 0.9))


def test_the_level_holds_for_the_chosen_design_over_many_calibration_draws():
    """The population plays the truth: 100 calibration draws of 1,000 samples, each searched and
    certified; the chosen design's true loss rate exceeds the budget in at most 10% of the draws
    (plus Monte Carlo error), while the designs do use the budget."""
    population, table = synthetic_trace(5, 200_000, seed=7, decimals=3), synthetic_table(5, seed=7)
    truth = SearchProblem.from_artifacts(population, table)
    rng = np.random.default_rng(0)
    budget, draws, exceeded, rates = 4.0, 100, 0, []
    for _ in range(draws):
        calib = subset(population, rng.choice(population.num_samples, 1000, replace=False))
        design = search(calib, table, Constraints(max_accuracy_drop=budget))
        exits = tuple(population.exit_names.index(e.name) for e in design.exits[:-1])
        score = score_problem(truth, exits, [e.threshold for e in design.exits[:-1]])
        rate = score.losses / truth.num_samples if exits else 0.0
        drop = (truth.final_correct - score.correct) / truth.num_samples
        assert drop <= rate + 1e-12  # the loss rate bounds the drop
        exceeded += rate > budget / 100
        rates.append(rate)
    assert exceeded / draws <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / draws)
    assert np.mean(rates) > 0.4 * budget / 100  # not vacuous: the chosen designs come close to the budget


def test_the_design_records_the_guarantee_and_certified_bounds():
    trace, table = synthetic_trace(5, 2000, seed=31, decimals=3), synthetic_table(5, seed=31)
    design = search(trace, table, Constraints(max_accuracy_drop=4.0, min_accuracy=0.8))
    g = design.search["guarantee"]
    assert g["method"] == "split" and g["level"] == 0.9 and g["search_samples"] + g["certify_samples"] == 2000
    assert "with probability >= 0.9" in g["statement"] and g["certified"] >= 1
    assert design.predicted["accuracy_drop_bound_pp"] <= 4.0 and design.predicted["accuracy_lower_bound"] >= 0.8
    assert any(q.exits == design.exits and q.feasible for q in design.pareto_front)
    assert Design.from_dict(design.to_dict()) == design


def test_a_floor_the_full_model_cannot_be_certified_to_reach_is_one_clear_error():
    trace, table = synthetic_trace(5, 600, seed=3, decimals=3), synthetic_table(5, seed=3)
    with pytest.raises(HapiError, match=r"no design reaches 99\.00% accuracy .*even the full model's"):
        search(trace, table, Constraints(min_accuracy=0.99))


def test_label_free_search_bounds_the_disagreement_with_the_full_model():
    labelled, table = synthetic_trace(5, 3000, seed=11, decimals=3), synthetic_table(5, seed=11)
    unlabelled = subset(labelled, np.arange(3000), labels=False)
    assert not unlabelled.labelled
    with pytest.raises(HapiError, match="--reference final"):
        search(unlabelled, table, Constraints(max_accuracy_drop=5.0))
    design = search(unlabelled, table, Constraints(max_accuracy_drop=5.0, reference="final"))
    assert design.reference["accuracy"] == 1.0  # the full model agrees with itself
    exits = tuple(labelled.exit_names.index(e.name) for e in design.exits[:-1])
    agree = SearchProblem.from_artifacts(unlabelled, table, reference="final")
    disagreement = 1 - score_problem(agree, exits, [e.threshold for e in design.exits[:-1]]).correct / 3000
    assert design.predicted["accuracy"] == pytest.approx(1 - disagreement)
    # the labelled view of the same design: its drop never exceeds its disagreement
    right = SearchProblem.from_artifacts(labelled, table)
    score = score_problem(right, exits, [e.threshold for e in design.exits[:-1]])
    assert (right.final_correct - score.correct) / 3000 <= disagreement + 1e-12
