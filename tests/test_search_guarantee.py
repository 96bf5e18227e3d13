"""The certified search: exact p-values, fixed-sequence testing, the level holding for the chosen
design over many calibration draws, and label-free calibration against the full model."""

import numpy as np
import pytest
from scipy.stats import binom

from hapi_onnx.errors import HapiError, InfeasibleError
from hapi_onnx.search import Constraints, Design, search
from hapi_onnx.search.guarantee import (
    CERTIFY_FRACTION,
    certify,
    choose_tests,
    net_rejects,
    net_upper_bound,
    passes,
    rate_upper_bound,
    samples_to_certify,
    split_indices,
    tail_p_value,
    walk,
)
from hapi_onnx.search.optimise import Candidate, resolve_goal
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.report import guarantee_text
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
    tested = certify(problem, iter(path), goal, "loss")
    verdicts = [t.certified for t in tested]
    assert verdicts[0] and verdicts[-1] is False and all(verdicts[:-1])  # a prefix, then one failure
    assert len(tested) < len(path)  # the walk stopped: the last (safe) design was never tested
    for t in tested[1:]:
        losses = score_problem(problem, t.design.exits, t.design.thresholds).losses
        assert t.certified == (binom.cdf(losses, problem.num_samples, 0.03) <= 0.1)
        assert t.drop_bound == pytest.approx(rate_upper_bound(losses, problem.num_samples, 0.9))


def test_each_design_gets_the_test_with_the_tighter_bound_on_the_search_part():
    trace, table = synthetic_trace(4, 3000, seed=2, decimals=3), synthetic_table(4, seed=2)
    problem = SearchProblem.from_artifacts(trace, table)
    part, held = problem.subset(np.arange(900)), problem.subset(np.arange(900, 3000))
    goal = resolve_goal(problem, Constraints(max_accuracy_drop=3.0))
    path = [Candidate((), (), 0, 0, 0)] + [Candidate((0, 2), (t, t), 0, 0, 0) for t in (0.99, 0.9, 0.7, 0.5)]
    tests = choose_tests(part, path, held.num_samples, goal)
    for design, test in zip(path, tests, strict=True):
        s = score_problem(part, design.exits, design.thresholds)
        losses, gains = round(s.losses * 2100 / 900), round(s.gains * 2100 / 900)
        net = net_upper_bound(losses, gains, 2100, 0.9) < rate_upper_bound(losses, 2100, 0.9)
        assert test == ("net" if net else "loss")
    assert set(tests) == {"loss", "net"}  # this path has designs of both kinds
    tested = certify(held, path, goal, tests)
    for t, test in zip(tested, tests, strict=False):
        s = score_problem(held, t.design.exits, t.design.thresholds)
        assert t.test == test
        assert t.certified == passes(test, s.losses, s.gains, 2100 - s.correct, 2100, goal, full=not t.design.exits)
    floor_only = resolve_goal(problem, Constraints(min_accuracy=0.5))
    assert choose_tests(part, path, held.num_samples, floor_only) == ["loss"] * len(path)


def test_the_level_holds_for_the_chosen_design_over_many_calibration_draws():
    """The population plays the truth: 100 calibration draws of 1,000 samples, each searched and
    certified; the chosen design's true drop (and, when the loss test certified it, its loss rate)
    exceeds the budget in at most 10% of the draws (plus Monte Carlo error), while the designs do
    use the budget."""
    population, table = synthetic_trace(5, 200_000, seed=7, decimals=3), synthetic_table(5, seed=7)
    truth = SearchProblem.from_artifacts(population, table)
    rng = np.random.default_rng(0)
    budget, draws, exceeded, drops, tests = 4.0, 100, 0, [], set()
    for _ in range(draws):
        calib = subset(population, rng.choice(population.num_samples, 1000, replace=False))
        design = search(calib, table, Constraints(max_accuracy_drop=budget))
        exits = tuple(population.exit_names.index(e.name) for e in design.exits[:-1])
        score = score_problem(truth, exits, [e.threshold for e in design.exits[:-1]])
        rate = score.losses / truth.num_samples if exits else 0.0
        drop = (truth.final_correct - score.correct) / truth.num_samples
        assert drop <= rate + 1e-12  # the loss rate bounds the drop
        test = design.search["guarantee"]["test"]
        exceeded += (rate if test == "loss" else drop) > budget / 100
        drops.append(drop)
        tests.add(test)
    assert exceeded / draws <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / draws)
    assert np.mean(drops) > 0.25 * budget / 100  # not vacuous: the chosen designs use the budget
    assert "net" in tests  # this population's exits fix many of the final classifier's errors


def test_the_net_bound_is_the_smallest_budget_the_net_test_rejects():
    for losses, gains, n in ((0, 0, 700), (3, 0, 700), (10, 25, 700), (40, 30, 2000), (5, 5, 10)):
        bound = net_upper_bound(losses, gains, n, 0.9)
        assert 0.0 <= bound <= rate_upper_bound(losses + gains, n, 0.99)
        assert net_rejects(losses, gains, n, bound + 1e-9, 0.1)
        assert bound == 0 or not net_rejects(losses, gains, n, bound * 0.999, 0.1)
    assert net_upper_bound(10, 30, 700, 0.9) < rate_upper_bound(10, 700, 0.9)  # gains credited
    assert net_upper_bound(20, 20, 700, 0.95) > net_upper_bound(20, 20, 700, 0.9) > 0  # a higher level, a larger bound


DRAWS = 4000  # enough that a test erring twice as often as its level fails the check below
LEVEL = 0.9


def error_allowed(level: float = LEVEL, draws: int = DRAWS) -> float:
    """The nominal error plus three Monte Carlo standard errors."""
    return (1 - level) + 3 * np.sqrt(level * (1 - level) / draws)


def rejection_rate(test: str, p_loss: float, p_gain: float, n: int, budget: float, level: float) -> float:
    """How often ``test`` certifies a design whose true loss and gain rates are given, over DRAWS
    certify parts of ``n`` samples (the trinomial counts drawn directly)."""
    draws = np.random.default_rng(1).multinomial(n, [p_loss, p_gain, 1 - p_loss - p_gain], size=DRAWS)
    goal = resolve_goal(
        SearchProblem.from_artifacts(synthetic_trace(1, 10, seed=0), synthetic_table(1, seed=0)),
        Constraints(max_accuracy_drop=100 * budget, bound_level=level),
    )
    verdicts = [walk(test, [(0, 0, 0), (int(losses), int(gains), 0)], n, goal) for losses, gains in draws[:, :2]]
    assert np.array_equal(passes(test, draws[:, 0], draws[:, 1], 0, n, goal), [v == [True, True] for v in verdicts])
    return float(np.mean([v == [True, True] for v in verdicts]))


@pytest.mark.parametrize("p_loss,p_gain", [(0.01, 0.0), (0.015, 0.005), (0.03, 0.02), (0.07, 0.06), (0.2, 0.19)])
def test_the_net_test_errs_at_most_at_its_level_on_the_null_boundary(p_loss, p_gain):
    """A design whose drop is exactly the budget (1 pt), from no gains to very gain-heavy: certified
    in at most 10% of the draws (the net test is conservative: 0.6% to 7.4% here)."""
    assert rejection_rate("net", p_loss, p_gain, 700, 0.01, LEVEL) <= error_allowed()
    if p_gain >= 0.06:  # where it is sharpest, a run at level 0.7 errs about twice as often and is caught
        assert rejection_rate("net", p_loss, p_gain, 700, 0.01, 0.7) > error_allowed()


def test_the_loss_test_errs_at_most_at_its_level_and_a_mislevelled_one_is_caught():
    """The exact binomial test errs 8% of the time at level 0.9 on the boundary and 18% at level 0.8:
    the check has the draws to tell the two apart."""
    assert rejection_rate("loss", 0.01, 0.03, 700, 0.01, LEVEL) <= error_allowed()
    assert rejection_rate("loss", 0.01, 0.03, 700, 0.01, 0.8) > error_allowed()


def path_exceedance(truth: SearchProblem, path: list[Candidate], goal, test: str, n: int, breaks) -> float:
    """Fixed-sequence testing along a fixed ``path`` on DRAWS // 4 certify parts of ``n`` samples
    drawn from ``truth``: how often the last design certified breaks a constraint in truth
    (``breaks(score)``). The verdicts are :func:`passes`' (the one rule :func:`walk` and
    :func:`certify` apply), on every draw at once."""
    draws = DRAWS // 4
    rng = np.random.default_rng(5)
    idx = np.stack([rng.choice(truth.num_samples, n, replace=False) for _ in range(draws)])
    final = truth.correct[-1]
    verdicts = []
    for k, design in enumerate(path):
        s = score_problem(truth, design.exits, design.thresholds, keep_positions=True)
        picked = np.asarray(design.exits + (truth.num_exits - 1,))[s.exit_position]
        right = truth.correct[picked, np.arange(truth.num_samples)][idx]
        counts = ((final[idx] & ~right).sum(1), (right & ~final[idx]).sum(1), (~right).sum(1))
        verdicts.append(passes(test, *counts, n, goal, full=k == 0))
    verdicts = np.stack(verdicts, axis=1)
    first_failure = np.where(verdicts.all(1), len(path), np.argmin(verdicts, axis=1))
    broken = np.array([breaks(score_problem(truth, d.exits, d.thresholds)) for d in path] + [False])
    return float(np.mean((first_failure > 0) & broken[first_failure - 1]))


def threshold_path(truth: SearchProblem, exits: tuple[int, ...], per_exit: bool) -> list[Candidate]:
    """The full model, then ``exits`` with thresholds lowered step by step (equal ones, or per-exit
    ones spread apart), fixed in advance."""
    steps = np.linspace(1.0, 0.3, 120)
    spread = np.linspace(0.0, 0.08, len(exits)) if per_exit else np.zeros(len(exits))
    path = [Candidate((), (), 0, 0, 0)]
    path += [Candidate(exits, tuple(float(np.float32(min(1.0, t + d))) for d in spread), 0, 0, 0) for t in steps]
    return path


@pytest.mark.parametrize("case", ["net", "loss", "floor", "final", "per-exit"])
def test_fixed_sequence_testing_holds_its_level_along_a_path(case):
    """A fine path crossing the constraint, tested on 1,000 draws of 700 certify samples from a
    population: the certified design breaks the constraint in truth in at most 10% of them (drop
    budget with either test, accuracy floor, ``reference="final"``, per-exit thresholds). Where
    the test is sharp (the exact binomial ones), the same walk at level 0.8 breaks it about twice
    as often and fails the check: the check has the draws to see a level error of 2x. (The net
    test is conservative here: 2-3% at level 0.9, 6-7% at 0.8.)"""
    population, table = synthetic_trace(5, 100_000, seed=7, decimals=3), synthetic_table(5, seed=7)
    reference = "final" if case == "final" else "labels"
    truth = SearchProblem.from_artifacts(population, table, reference=reference)
    n, budget = truth.num_samples, 0.08 if case == "final" else 0.02  # where the path steps finely
    path = threshold_path(truth, (0, 2, 3), per_exit=case == "per-exit")
    test = "net" if case in ("net", "per-exit") else "loss"
    if case == "floor":
        floor = truth.final_correct / n - 0.03
        constraints = dict(min_accuracy=floor)
        breaks = lambda s: s.correct / n < floor  # noqa: E731
    else:
        constraints = dict(max_accuracy_drop=100 * budget)
        if test == "net":
            breaks = lambda s: (truth.final_correct - s.correct) / n > budget  # noqa: E731
        else:
            breaks = lambda s: s.losses / n > budget  # noqa: E731
    rates = {}
    for level in (LEVEL, 0.8):
        goal = resolve_goal(truth, Constraints(**constraints, bound_level=level, reference=reference))
        rates[level] = path_exceedance(truth, path, goal, test, 700, breaks)
    draws = DRAWS // 4
    assert rates[LEVEL] <= error_allowed(draws=draws), rates
    if test == "loss":
        assert rates[0.8] > error_allowed(draws=draws), rates


def test_the_design_records_the_guarantee_and_certified_bounds():
    trace, table = synthetic_trace(5, 2000, seed=31, decimals=3), synthetic_table(5, seed=31)
    design = search(trace, table, Constraints(max_accuracy_drop=4.0, min_accuracy=0.8))
    g = design.search["guarantee"]
    assert g["method"] == "split" and g["level"] == 0.9 and g["search_samples"] + g["certify_samples"] == 2000
    assert "with probability >= 0.9" in g["statement"] and g["certified"] >= 1
    assert design.predicted["accuracy_drop_bound_pp"] <= 4.0 and design.predicted["accuracy_lower_bound"] >= 0.8
    assert any(q.exits == design.exits and q.feasible for q in design.pareto_front)
    # the certified path to the chosen design, safest first (the full model before it, not listed)
    path = g["path"]
    assert path[-1] == [e.threshold for e in design.exits[:-1]] and len(path) + 1 <= g["certified"]
    assert all(len(step) == len(design.exits) - 1 for step in path)
    assert all(a >= b for prev, step in zip(path, path[1:], strict=False)  # thresholds fall
               for a, b in zip(prev, step, strict=True))
    assert Design.from_dict(design.to_dict()) == design


def test_the_certificate_is_computed_on_the_held_out_part_alone():
    """The certify part is disjoint from the search part, and the design's certified bounds are
    those of its counts there (certifying on every calibration sample gives other ones)."""
    trace, table = synthetic_trace(5, 2000, seed=31, decimals=3), synthetic_table(5, seed=31)
    search_idx, certify_idx = split_indices(2000)
    assert not np.intersect1d(search_idx, certify_idx).size and len(search_idx) + len(certify_idx) == 2000
    design = search(trace, table, Constraints(max_accuracy_drop=4.0, min_accuracy=0.7))
    problem = SearchProblem.from_artifacts(trace, table)
    exits = tuple(trace.exit_names.index(e.name) for e in design.exits[:-1])
    chosen = Candidate(exits, tuple(e.threshold for e in design.exits[:-1]), 0, 0, 0)
    assert exits  # a design with exits, so that the drop is tested
    goal = resolve_goal(problem, design.constraints)
    test = design.search["guarantee"]["test"]
    held = certify(problem.subset(certify_idx), [chosen], goal, test)[0]
    everyone = certify(problem, [chosen], goal, test)[0]
    recorded = (design.predicted["accuracy_drop_bound_pp"], design.predicted["accuracy_lower_bound"])
    assert recorded == pytest.approx((100 * held.drop_bound, held.accuracy_bound))
    assert recorded != pytest.approx((100 * everyone.drop_bound, everyone.accuracy_bound))


def test_a_floor_holds_for_designs_with_exits_not_only_the_full_model():
    """A floor a little under the full model's accuracy: the chosen design keeps exits and its
    certified accuracy bound reaches the floor (a floor tested on the full model alone would pass
    the path's fastest design, far below it)."""
    trace, table = synthetic_trace(5, 3000, seed=11, decimals=3), synthetic_table(5, seed=11)
    problem = SearchProblem.from_artifacts(trace, table)
    floor = problem.final_correct / problem.num_samples - 0.04
    design = search(trace, table, Constraints(min_accuracy=floor))
    assert len(design.exits) > 1 and design.predicted["accuracy_lower_bound"] >= floor
    assert design.predicted["accuracy"] >= floor


def test_the_price_is_the_uncertified_speedup_and_the_samples_that_would_close_half_the_gap():
    trace, table = synthetic_trace(5, 1000, seed=31, decimals=3), synthetic_table(5, seed=31)
    design = search(trace, table, Constraints(max_accuracy_drop=2.0))
    price = design.search["guarantee"]["price"]
    raw = search(trace, table, Constraints(max_accuracy_drop=2.0, bound_level=0.0))
    assert price["certified_speedup"] == pytest.approx(design.predicted["speedup_vs_full"])
    assert price["uncertified_speedup"] == pytest.approx(raw.predicted["speedup_vs_full"])
    assert price["uncertified_speedup"] > price["certified_speedup"]
    assert price["samples_for_half_the_gap"] > 1000  # this many are what limit it
    assert f"x{price['uncertified_speedup']:.2f} uncertified" in guarantee_text(design)


def test_samples_to_certify_is_the_fewest_with_which_the_rates_pass():
    goal = resolve_goal(SearchProblem.from_artifacts(synthetic_trace(1, 10, seed=0), synthetic_table(1, seed=0)),
                        Constraints(max_accuracy_drop=1.0))
    for test, counts in (("loss", (5, 0, 50)), ("net", (12, 8, 50))):
        k = samples_to_certify(test, counts, 1000, goal)
        at = [int(np.floor(c / 1000 * k)) for c in counts]
        assert passes(test, *at, k, goal)
        assert not passes(test, *(int(np.floor(c / 1000 * (k * 0.9))) for c in counts), int(k * 0.9), goal)
    assert samples_to_certify("loss", (10, 0, 50), 1000, goal) is None  # a loss rate at the budget: never
    assert samples_to_certify("net", (20, 11, 50), 1000, goal) > samples_to_certify("net", (12, 8, 50), 1000, goal)


def test_a_floor_the_full_model_cannot_be_certified_to_reach_is_one_clear_error():
    trace, table = synthetic_trace(5, 600, seed=3, decimals=3), synthetic_table(5, seed=3)
    with pytest.raises(InfeasibleError, match=r"no design reaches 99\.00% accuracy .*even the full model's"):
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
