"""Search optimisers: the fast one returns exactly the exhaustive optimum and front (ties included),
with accuracy bounds (confidence 0.9) and on raw counts (confidence 0); the exhaustive one matches
a brute-force Python reference; per-exit refinement never loses and keeps the bounds."""

import itertools
import math
from functools import partial

import numpy as np
import pytest

from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import LatencyTable, PieceLatency, TimingStats
from hapi_onnx.search import score_design, search
from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.optimise import (
    optimise_exhaustive,
    optimise_fast,
    resolve_goal,
    threshold_grid,
)
from hapi_onnx.search.pareto import pareto_indices
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.refine import refine_per_exit
from hapi_onnx.search.score import score_problem
from hapi_onnx.search.subsets import SubsetSpace
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

PerDesign = partial(Constraints, guarantee="per-design")  # the per-design bounds these tests check

STATS = ["mean", "p50", "p90", "p99"]


def stats(ms):
    return TimingStats(n=50, warmup=5, mean_ms=ms, p50_ms=ms, p90_ms=ms, p99_ms=ms, std_ms=0.0, min_ms=ms)


def round_cost_table(num_intermediate, seed):
    """Costs in round 0.1 ms steps: many designs tie exactly on latency, exercising tie-breaks."""
    base = synthetic_table(num_intermediate, seed=seed)
    rng = np.random.default_rng(seed)
    seg = [
        PieceLatency(f"segment{i}", [], [], stats(0.1 * int(rng.integers(1, 4)) + 0.1))
        for i in range(num_intermediate + 1)
    ]
    heads = [PieceLatency(f"head{i}", [], [], stats(0.2)) for i in range(num_intermediate)]
    return LatencyTable(**{**base.__dict__, "segments": seg, "heads": heads, "overhead": stats(0.1)})


def problem_for(num_intermediate, n, seed, *, decimals=None, round_costs=False):
    trace = synthetic_trace(num_intermediate, n, seed=seed, decimals=decimals)
    table = (
        round_cost_table(num_intermediate, seed)
        if round_costs
        else synthetic_table(num_intermediate, seed=seed, cuts=True)
    )
    return trace, table, SearchProblem.from_artifacts(trace, table)


def constraint_sets(problem):
    """SLAs spread over the achievable range, accuracy floors near the final classifier's."""
    full = score_problem(problem, (), ())
    final_acc = problem.final_correct / problem.num_samples
    out = []
    for stat in STATS:
        sla = full.stat_ms(stat)
        out += [
            {"latency_sla_ms": 0.45 * sla, "percentile": stat},
            {"latency_sla_ms": 0.8 * sla, "percentile": stat},
            {"max_accuracy_drop": 1.0, "percentile": stat},
            {"max_accuracy_drop": 4.0, "percentile": stat},
            {"min_accuracy": final_acc - 0.05, "latency_sla_ms": 0.9 * sla, "percentile": stat},
        ]
    out += [
        {"min_accuracy": final_acc + 0.01},
        {"max_accuracy_drop": 0.0, "min_accuracy": 0.5},
        {"max_accuracy_drop": 6.0, "min_accuracy": final_acc - 0.1, "latency_sla_ms": 0.7 * full.mean_ms},
    ]
    return out


@pytest.mark.parametrize(
    "num_intermediate,n,seed,decimals,round_costs",
    [
        (5, 200, 0, None, False),
        (7, 300, 1, 2, False),
        (9, 250, 2, 2, True),
        (6, 150, 3, 1, True),
        (8, 300, 4, None, True),
    ],
)
@pytest.mark.parametrize("confidence", [0.9, 0])
def test_fast_equals_exhaustive(num_intermediate, n, seed, decimals, round_costs, confidence):
    _, _, problem = problem_for(num_intermediate, n, seed, decimals=decimals, round_costs=round_costs)
    grid = threshold_grid(problem, 30)
    checked = with_exits = 0
    for constraints in constraint_sets(problem):
        goal = resolve_goal(problem, PerDesign(**constraints, bound_level=confidence))
        fast, slow = optimise_fast(problem, grid, goal), optimise_exhaustive(problem, grid, goal)
        assert fast.best == slow.best, constraints
        assert fast.front == slow.front, constraints
        if fast.best is not None:
            checked += 1
            with_exits += bool(fast.best.exits)
            ev = score_problem(problem, fast.best.exits, fast.best.thresholds)
            got = (ev.correct, ev.discordant, ev.latency_key(goal.stat))
            assert got == (fast.best.correct, fast.best.discordant, fast.best.latency_key)
            assert goal.feasible_candidate(fast.best)
    assert checked >= 10  # most constraint sets are feasible, so the comparison is not vacuous
    assert with_exits >= 8  # and most optima keep exits (not only the final classifier)


def brute_force(problem, grid, goal):
    """Every design scored alone; the documented total order picks the winner and front points.

    Feasibility is recomputed here from the bound formulas of hapi_onnx.search.bounds (float), not
    read from the goal's integer tables.
    """
    designs = []
    for r in range(len(problem.candidates) + 1):
        for exits in itertools.combinations(problem.candidates, r):
            for t in grid:
                ev = score_problem(problem, exits, [t] * len(exits))
                designs.append((exits, float(t), ev.correct, ev.latency_key(goal.stat), ev.losses, ev.gains))
    n, z, c = problem.num_samples, goal.z, goal.constraints

    def accurate(d):
        exits, _, correct, _, losses, gains = d
        ok = True
        if c.max_accuracy_drop is not None and exits:
            ok &= (losses - gains + z * math.sqrt(losses + gains + 1)) / n * 100 <= c.max_accuracy_drop + 1e-9
        if c.min_accuracy is not None:
            p = correct / n
            wilson = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
            ok &= wilson >= c.min_accuracy - 1e-9
        return ok

    def order(d):
        exits, t, correct, lat = d[:4]
        metric = (-correct, lat) if goal.objective == "max-accuracy" else (lat, -correct)
        return metric + (len(exits), exits, -t)

    feasible = [
        d for d in designs if accurate(d) and (goal.max_latency_key is None or d[3] <= goal.max_latency_key)
    ]
    best = min(feasible, key=order) if feasible else None
    pairs = {(d[2], d[3]) for d in designs}
    front_pairs = sorted(
        (c, lat)
        for c, lat in pairs
        if not any(c2 >= c and l2 <= lat and (c2, l2) != (c, lat) for c2, l2 in pairs)
    )
    front = [
        min((d for d in designs if (d[2], d[3]) == p), key=lambda d: (len(d[0]), d[0], -d[1]))
        for p in front_pairs
    ]
    return best, sorted(front, key=lambda d: d[3])


@pytest.mark.parametrize("seed,stat,confidence", [(10, "mean", 0.9), (11, "p90", 0), (12, "p50", 0.8)])
def test_exhaustive_and_fast_match_brute_force_order(seed, stat, confidence):
    _, _, problem = problem_for(4, 60, seed, decimals=1, round_costs=True)
    grid = threshold_grid(problem, 8)
    full = score_problem(problem, (), ())
    final_acc = problem.final_correct / problem.num_samples
    for constraints in (
        {"latency_sla_ms": 0.7 * full.stat_ms(stat)},
        {"max_accuracy_drop": 2.0},
        {"max_accuracy_drop": 8.0},
        {"min_accuracy": final_acc - 0.1, "max_accuracy_drop": 12.0},
    ):
        goal = resolve_goal(problem, PerDesign(percentile=stat, bound_level=confidence, **constraints))
        best, front = brute_force(problem, grid, goal)
        for result in (optimise_exhaustive(problem, grid, goal), optimise_fast(problem, grid, goal)):
            got = result.best
            want = None if best is None else (best[0], (best[1],) * len(best[0]), best[2], best[3])
            assert (
                None if got is None else (got.exits, got.thresholds, got.correct, got.latency_key)
            ) == want
            assert [(p.exits, p.correct, p.latency_key) for p in result.front] == [
                (d[0], d[2], d[3]) for d in front
            ]
            assert [p.thresholds for p in result.front] == [(d[1],) * len(d[0]) for d in front]


def test_preference_rank_is_fewer_exits_then_lexicographic():
    _, _, problem = problem_for(5, 20, 0)
    space = SubsetSpace(problem)
    rank = space.preference_rank()
    by_rank = [space.exits(s) for s in np.argsort(rank)]
    assert by_rank == sorted(by_rank, key=lambda e: (len(e), e))


def test_pareto_indices_keeps_one_point_per_pair_and_prefers_the_tiebreak():
    latency = np.array([5, 3, 3, 7, 1, 3, 9])
    correct = np.array([4, 6, 6, 5, 2, 1, 8])
    tiebreak = np.array([0, 9, 2, 0, 0, 0, 0])
    assert pareto_indices(latency, correct, (tiebreak,)).tolist() == [4, 2, 6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_exit_refinement_is_never_worse_and_keeps_constraints(seed):
    trace, table, problem = problem_for(7, 400, seed, decimals=2)
    full = score_problem(problem, (), ())
    for constraints in (
        {"latency_sla_ms": 0.6 * full.mean_ms},
        {"latency_sla_ms": 0.7 * full.stat_ms("p90"), "percentile": "p90"},
        {"max_accuracy_drop": 0.5},
        {"min_accuracy": 0.8, "latency_sla_ms": 0.8 * full.mean_ms},
    ):
        goal = resolve_goal(problem, PerDesign(**constraints))
        glob = search(trace, table, PerDesign(**constraints, space="global"), grid_size=40)
        refined = search(trace, table, PerDesign(**constraints, space="per-exit"), grid_size=40)
        assert refined.exit_names == glob.exit_names
        ev = score_design(trace, table, refined.exits)
        key = ev.latency_key(goal.stat)
        assert goal.feasible(ev.correct, ev.discordant, key, reference=len(refined.exits) == 1)
        g_ev = score_design(trace, table, glob.exits)
        g_key = g_ev.latency_key(goal.stat)
        if goal.objective == "max-accuracy":
            assert (-ev.correct, key) <= (-g_ev.correct, g_key)
        else:
            assert (key, -ev.correct) <= (g_key, -g_ev.correct)
        assert refined.predicted["accuracy"] == pytest.approx(ev.accuracy)


def test_refinement_improves_a_deliberately_poor_start():
    _, _, problem = problem_for(6, 400, 5, decimals=2)
    grid = threshold_grid(problem, 30)
    goal = resolve_goal(problem, PerDesign(max_accuracy_drop=3.0))
    start = optimise_fast(problem, grid, goal).best
    thresholds = tuple(0.999 for _ in start.exits)
    ev = score_problem(problem, start.exits, thresholds)
    poor = type(start)(start.exits, thresholds, ev.correct, ev.latency_key("mean"), ev.discordant)
    better = refine_per_exit(problem, poor, goal, grid, grid_size=30)
    assert goal.better(better, poor) and goal.feasible_candidate(better)


def test_infeasible_constraints_name_the_closest_design():
    trace, table, problem = problem_for(6, 300, 7)
    with pytest.raises(
        HapiError,
        match=r"no design reaches 100\.00% accuracy \(as 90%-level bounds\) on the search data; the most "
        r"accurate is \d+\.\d+% at .* \(accuracy lower bound \d+\.\d+%; exits .*Lower the accuracy floor or the "
        r"bound level \(--bound-level\)",
    ):
        search(trace, table, PerDesign(min_accuracy=1.0))
    with pytest.raises(HapiError, match=r"no design reaches 100\.00% accuracy on the search data; .* \(exits"):
        search(trace, table, PerDesign(min_accuracy=1.0, bound_level=0))
    with pytest.raises(
        HapiError, match=r"no design meets p90 latency <= 0\.001 ms; the fastest is .* \(exits exit"
    ):
        search(trace, table, PerDesign(latency_sla_ms=0.001, percentile="p90"))
    full = score_problem(problem, (), ())
    fastest = search(trace, table, PerDesign(latency_sla_ms=10 * full.mean_ms)).pareto_front[0]
    with pytest.raises(
        HapiError,
        match=r"within the SLA the closest is .*drop upper bound .* the fastest reaching the accuracy is "
        r"\d+\.\d+% at .* \(drop upper bound -?\d+\.\d+ pp; exits .*Relax one",
    ):
        search(trace, table, PerDesign(max_accuracy_drop=0.0, latency_sla_ms=fastest.latency_ms * 1.01))
    with pytest.raises(HapiError, match="no design"):
        search(trace, table, PerDesign(min_accuracy=1.0), optimiser="exhaustive", grid_size=10)


def test_a_floor_met_on_raw_counts_can_fail_its_bound():
    trace, table, _ = problem_for(6, 300, 7)
    best_raw = search(trace, table, PerDesign(latency_sla_ms=100.0)).pareto_front[-1].accuracy
    raw = search(trace, table, PerDesign(min_accuracy=best_raw, bound_level=0))
    assert raw.predicted["accuracy"] == best_raw
    with pytest.raises(HapiError, match="no design reaches .* the most accurate is .*or the bound level"):
        search(trace, table, PerDesign(min_accuracy=best_raw))


def test_bad_arguments_are_refused():
    trace, table, _ = problem_for(4, 50, 0)
    with pytest.raises(HapiError, match="at least one constraint"):
        PerDesign()
    with pytest.raises(HapiError, match="'percentile' must be one of mean, p50, p90, p99"):
        PerDesign(latency_sla_ms=1.0, percentile="p95")
    with pytest.raises(HapiError, match="'space' must be one of global, per-exit"):
        PerDesign(latency_sla_ms=1.0, space="per-layer")
    with pytest.raises(HapiError, match="optimiser must be one of"):
        search(trace, table, PerDesign(latency_sla_ms=1.0), optimiser="greedy")
    with pytest.raises(HapiError, match=r"'min_accuracy' must be a fraction in \(0, 1\] \(a fraction: 98.5%"):
        PerDesign(min_accuracy=98.5)
    with pytest.raises(HapiError, match="'latency_sla_ms' must be a positive"):
        PerDesign(latency_sla_ms=-1.0)
    with pytest.raises(HapiError, match="percentage points"):
        PerDesign(max_accuracy_drop=-1.0)
    with pytest.raises(HapiError, match="must be a hapi_onnx.search.Constraints"):
        search(trace, table, {"max_accuracy_drop": 1.0})
    with pytest.raises(HapiError, match="final classifier .* is always kept"):
        search(trace, table, PerDesign(latency_sla_ms=1.0), candidates=["exit1", "final"])


def test_candidates_restrict_the_exits():
    trace, table, _ = problem_for(6, 200, 8)
    design = search(trace, table, PerDesign(max_accuracy_drop=2.0), candidates=["exit2", "exit4"])
    assert set(design.exit_names[:-1]) <= {"exit2", "exit4"}
    assert design.search["candidates"] == ["exit2", "exit4"]
    assert all({e.name for e in p.exits[:-1]} <= {"exit2", "exit4"} for p in design.pareto_front)


def test_a_model_without_intermediate_exits_has_one_design():
    trace, table, _ = problem_for(0, 100, 0)
    design = search(trace, table, PerDesign(latency_sla_ms=100.0))
    assert design.exit_names == ["final"] and len(design.pareto_front) == 1


def test_too_many_candidates_is_a_clear_error():
    trace, table, problem = problem_for(21, 30, 0)
    with pytest.raises(HapiError, match="at most 20 .*--candidates") as error:
        search(trace, table, PerDesign(latency_sla_ms=1.0), optimiser="fast")
    assert "--optimiser local" in str(error.value) and "candidates=[" not in str(error.value)
    every_other = [f"exit{i}" for i in range(0, 21, 2)]
    assert search(trace, table, PerDesign(latency_sla_ms=10.0), candidates=every_other, optimiser="fast").exits
    with pytest.raises(HapiError, match="Exhaustive search over 21"):
        optimise_exhaustive(problem, threshold_grid(problem, 5), resolve_goal(problem, PerDesign(latency_sla_ms=1.0)))
