"""Per-exit refinement with cross-fitted acceptance: never worse than the global optimum on the
search data, every constraint kept, deterministic, folds that partition the samples, and less
overfitting than the plain descent on held-out samples."""

from functools import partial

import numpy as np
import pytest

from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.optimise import optimise_fast, resolve_goal, threshold_grid
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.refine import (
    cross_fit_folds,
    cross_fitted_move,
    exit_threshold_values,
    refine_per_exit,
)
from hapi_onnx.search.score import score_problem
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

PerDesign = partial(Constraints, guarantee="per-design")  # the per-design bounds these tests check

CONSTRAINTS = (
    {"max_accuracy_drop": 1.0},
    {"max_accuracy_drop": 3.0, "percentile": "p90"},
    {"min_accuracy": 0.8, "latency_sla_ms": 2.0},
    {"latency_sla_ms": 1.5},
)


def problem_for(seed, n=600):
    trace, table = synthetic_trace(8, n, seed=seed, decimals=3), synthetic_table(8, seed=seed)
    return SearchProblem.from_artifacts(trace, table)


def start_for(problem, constraints, grid_size=40):
    goal = resolve_goal(problem, PerDesign(**constraints))
    grid = threshold_grid(problem, grid_size)
    return goal, grid, optimise_fast(problem, grid, goal).best


@pytest.mark.parametrize("seed", [0, 1])
def test_never_worse_than_global_keeps_constraints_and_is_deterministic(seed):
    problem = problem_for(seed)
    moved = 0
    for constraints in CONSTRAINTS:
        goal, grid, start = start_for(problem, constraints)
        if start is None:
            continue
        refined = refine_per_exit(problem, start, goal, grid, grid_size=40)
        assert refined == refine_per_exit(problem, start, goal, grid, grid_size=40)
        assert refined.exits == start.exits
        assert not goal.better(start, refined)
        ev = score_problem(problem, refined.exits, refined.thresholds)
        key = ev.latency_key(goal.stat)
        assert (ev.correct, ev.discordant, key) == (refined.correct, refined.discordant, refined.latency_key)
        assert goal.feasible(ev.correct, ev.discordant, key)
        moved += refined != start
    assert moved  # the rule does take moves, it is not the global design in disguise


def test_folds_partition_the_samples_and_resolve_the_goal_on_their_complement():
    problem = problem_for(3, n=103)
    goal = resolve_goal(problem, PerDesign(max_accuracy_drop=2.0))
    folds = cross_fit_folds(problem, goal, 5)
    assert len(folds) == 5
    assert sum(f.held_out.num_samples for f in folds) == problem.num_samples
    held = np.concatenate([f.held_out.correct for f in folds], axis=1)
    assert held.sum() == problem.correct.sum()
    for f in folds:
        assert f.train.num_samples + f.held_out.num_samples == problem.num_samples
        assert f.goal.num_samples == f.train.num_samples
        assert f.goal.final_correct == f.train.final_correct
    assert cross_fit_folds(problem.subset(np.arange(103) < 1), goal, 5) == []


def test_cross_fitted_move_without_a_choice_is_the_current_design():
    problem = problem_for(4)
    goal, grid, start = start_for(problem, {"max_accuracy_drop": 2.0})
    folds = cross_fit_folds(problem, goal)
    current = np.array([start.thresholds[0]], dtype=np.float32)
    fitted, flips = cross_fitted_move(problem, goal, folds, start, 0, current)
    assert (fitted.correct, fitted.discordant, fitted.latency_key) == (
        start.correct,
        start.discordant,
        start.latency_key,
    )
    assert flips == 0


def test_one_sample_cannot_confirm_a_move():
    problem = problem_for(5, n=200)
    goal, grid, start = start_for(problem, {"max_accuracy_drop": 5.0})
    one = problem.subset(np.arange(200) == 0)
    goal1 = resolve_goal(one, PerDesign(latency_sla_ms=100.0))
    assert refine_per_exit(one, start, goal1, grid) == start


def test_cross_fitting_overfits_less_than_the_plain_descent_on_held_out_data():
    """Search on one half, score on the other: the cross-fitted design loses less there, summed
    over seeds, while both are equally feasible on the search half."""
    lost = {0: 0, 5: 0}
    for seed in range(4):
        full = problem_for(10 + seed, n=1200)
        calib, held = full.subset(np.arange(1200) < 600), full.subset(np.arange(1200) >= 600)
        goal, grid, start = start_for(calib, {"max_accuracy_drop": 1.0})
        values = {k: exit_threshold_values(calib, k, grid, 40) for k in start.exits}
        assert all(len(v) > 1 for v in values.values())
        for folds in lost:
            design = refine_per_exit(calib, start, goal, grid, grid_size=40, folds=folds)
            assert goal.feasible_candidate(design)
            lost[folds] += held.final_correct - score_problem(held, design.exits, design.thresholds).correct
    assert lost[5] < lost[0]
