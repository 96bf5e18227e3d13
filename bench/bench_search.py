"""Benchmark: fast exact design search vs exhaustive scoring, measured side by side in one run.

Problem: a synthetic trace with 16 candidate exits (+ final classifier) and 10,000 samples, a
100-value global threshold grid: 2^16 x 100 = 6.6 M designs.

- fast: :func:`optimise_fast` (subset-sum transforms give every design's right answers,
  discordant count and latency; one pass gives the optimum, with feasibility checked on the
  accuracy bounds of every design, and the exact Pareto front), and the whole :func:`search` call
  (front + Design), global and per-exit, at confidence 0.9 (the default) and 0 (raw counts).
- exhaustive: the reference scores each subset for all thresholds per sample. Over 16 exits it
  would take tens of minutes, so it is timed on a seeded uniform random sample of subsets and
  extrapolated linearly to all 2^16 (stated in the report). On 10 candidate exits it is run in
  full, checked equal to the fast result, and timed: a fully measured ratio.

Scalable: :func:`optimise_local` (local search from a thinned exact optimum; any number of
candidates) on synthetic traces with E = 16, 23, 40, 66 and 100 candidate exits x 10,000 samples x
100 thresholds, three constraint sets: time to the optimum (descents only, ``front_rounds=0``) and
to the optimum and front (the default call, what ``search()`` runs), with the target of under 5 s
at E = 66; for E <= 20 the exact optimiser runs on the same problem in the same process, and the
table gives the ratio of the two optima (latency, and accuracy difference) and how close the local
front comes to the exact one (for each exact front point, the least latency of a local front point
at least as accurate: median and worst excess).

Run: ``python bench/bench_search.py`` (about 3 minutes on a 2-core machine).
"""

import statistics
import sys
import time
from functools import partial

import numpy as np

from hapi_onnx.search import search
from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.local_search import optimise_local
from hapi_onnx.search.optimise import optimise_exhaustive, optimise_fast, resolve_goal, threshold_grid
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.score import batch_metrics
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

PerDesign = partial(Constraints, guarantee="per-design")  # the optimiser alone, without the certify split

EXITS, SAMPLES, GRID, SAMPLED_SUBSETS, REPEATS = 16, 10_000, 100, 256, 3


def timed(fn, repeats=REPEATS):
    """Median wall time of ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    trace = synthetic_trace(EXITS, SAMPLES, seed=0)
    table = synthetic_table(EXITS, seed=0)
    problem = SearchProblem.from_artifacts(trace, table)
    grid = threshold_grid(problem, GRID)
    designs = (1 << EXITS) * len(grid)
    print(
        f"problem: {EXITS} candidate exits + final, {SAMPLES} samples, {len(grid)} global thresholds "
        f"-> {designs:,} designs"
    )
    lines = []
    for constraints in (
        {"max_accuracy_drop": 1.0, "bound_level": 0.9},
        {"max_accuracy_drop": 1.0, "bound_level": 0},
        {"min_accuracy": 0.8, "latency_sla_ms": 1.5, "percentile": "p90", "bound_level": 0.9},
        {"latency_sla_ms": 1.2, "percentile": "p90"},
    ):
        goal = resolve_goal(problem, PerDesign(**constraints))
        fast_s, result = timed(lambda goal=goal: optimise_fast(problem, grid, goal))
        full_s, _ = timed(lambda c=constraints: search(trace, table, PerDesign(**c)))
        refine_s, refined = timed(lambda c=constraints: search(trace, table, PerDesign(**c, space="per-exit")))
        best = result.best
        lines.append(
            f"  {goal.objective} {goal.stat} {constraints}: optimum + exact front {fast_s:.3f} s "
            f"(target < 1 s; front of {len(result.front)} points, target < 5 s), search() -> Design "
            f"{full_s:.3f} s, per-exit {refine_s:.3f} s\n"
            f"    chosen {len(best.exits)} exits, accuracy {best.correct / SAMPLES:.4f}, "
            f"{goal.stat} {goal.latency_ms(best.latency_key):.3f} ms; per-exit: accuracy "
            f"{refined.predicted['accuracy']:.4f}, {goal.stat} {refined.predicted[goal.stat + '_ms']:.3f} ms"
        )
    print("fast (median of 3):")
    print("\n".join(lines))
    goal = resolve_goal(problem, PerDesign(max_accuracy_drop=1.0, bound_level=0.9))
    fast_s, _ = timed(lambda: optimise_fast(problem, grid, goal))

    rng = np.random.default_rng(0)
    sample = rng.choice(1 << EXITS, size=SAMPLED_SUBSETS, replace=False)
    thr_rows = {m: np.repeat(grid[:, None], m, axis=1) for m in range(EXITS + 1)}
    start = time.perf_counter()
    for mask in sample:
        exits = tuple(i for i in range(EXITS) if mask >> i & 1)
        batch_metrics(problem, exits, thr_rows[len(exits)], goal.stat)
    sampled_s = time.perf_counter() - start
    exhaustive_s = sampled_s * (1 << EXITS) / SAMPLED_SUBSETS
    print(
        f"exhaustive, 16 exits: {SAMPLED_SUBSETS} random subsets x {len(grid)} thresholds took {sampled_s:.2f} s; "
        f"EXTRAPOLATED to all {1 << EXITS} subsets: {exhaustive_s:.0f} s ({exhaustive_s / 60:.1f} min)"
    )
    print(
        f"  speed-up fast vs exhaustive (extrapolated): {exhaustive_s / fast_s:,.0f}x "
        f"({exhaustive_s:.0f} s / {fast_s:.3f} s)"
    )

    small = SearchProblem.from_artifacts(trace, table, candidates=list(range(10)))
    small_grid = threshold_grid(small, GRID)
    all_same = True
    for confidence in (0.9, 0):
        goal = resolve_goal(small, PerDesign(max_accuracy_drop=1.0, bound_level=confidence))
        small_fast_s, fast_result = timed(lambda goal=goal: optimise_fast(small, small_grid, goal))
        small_exh_s, exh_result = timed(lambda goal=goal: optimise_exhaustive(small, small_grid, goal), repeats=1)
        same = fast_result.best == exh_result.best and fast_result.front == exh_result.front
        all_same &= same
        print(
            f"exhaustive, 10 exits ({1 << 10} subsets x {len(small_grid)} thresholds), confidence {confidence}, "
            f"MEASURED in full: {small_exh_s:.2f} s vs fast {small_fast_s:.4f} s -> "
            f"{small_exh_s / small_fast_s:,.0f}x; same optimum and front: {same}"
        )
    return 0 if all_same and scalable() else 1


SCALES = (16, 20, 23, 40, 66, 100)
SCALABLE_CONSTRAINTS = (
    {"max_accuracy_drop": 1.0},
    {"latency_sla_ms": 1.2, "percentile": "p90"},
    {"min_accuracy": 0.8, "latency_sla_ms": 1.5, "percentile": "p90"},
)


def front_excess(exact: list, local: list) -> tuple[float, float, int]:
    """For each exact front point, the least latency of a local front point at least as accurate,
    relative: (median excess, worst excess, exact points with no local point as accurate)."""
    correct = np.array([p.correct for p in local])
    latency = np.array([p.latency_key for p in local], dtype=np.float64)
    excess, uncovered = [], 0
    for point in exact:
        ok = correct >= point.correct
        if ok.any():
            excess.append(latency[ok].min() / point.latency_key - 1.0)
        else:
            uncovered += 1
    return float(np.median(excess)), float(np.max(excess)), uncovered


def scalable() -> bool:
    """The local search at E = 16 .. 100 (exact alongside for E <= 20); True when it met its target."""
    print(f"\nscalable optimiser (local search), {SAMPLES} samples x {GRID} thresholds, synthetic traces:")
    header = (f"{'E':>4} {'constraints':<52} {'optimum s':>9} {'+front s':>8} {'exact s':>8} "
              f"{'latency / exact':>15} {'acc - exact':>11} {'front: median/worst excess, missed':>36}")
    print(header)
    ok = True
    for e in SCALES:
        trace, table = synthetic_trace(e, SAMPLES, seed=0), synthetic_table(e, seed=0)
        problem = SearchProblem.from_artifacts(trace, table)
        grid = threshold_grid(problem, GRID)
        for constraints in SCALABLE_CONSTRAINTS:
            goal = resolve_goal(problem, Constraints(**constraints))
            optimum_s, _ = timed(partial(optimise_local, problem, grid, goal, front_rounds=0), repeats=1)
            full_s, result = timed(partial(optimise_local, problem, grid, goal), repeats=1)
            if e == 66:
                ok &= full_s < 5.0
            cells = ["", "", "", ""]
            if e <= 20:
                exact_s, exact = timed(partial(optimise_fast, problem, grid, goal), repeats=1)
                b, x = result.best, exact.best
                median, worst, missed = front_excess(exact.front, result.front)
                cells = [f"{exact_s:.2f}", f"{b.latency_key / x.latency_key:.4f}",
                         f"{100 * (b.correct - x.correct) / SAMPLES:+.2f} pp",
                         f"+{100 * median:.2f}% / +{100 * worst:.2f}%, {missed} of {len(exact.front)}"]
            text = ", ".join(f"{k}={v}" for k, v in constraints.items())
            print(f"{e:>4} {text:<52} {optimum_s:>9.2f} {full_s:>8.2f} {cells[0]:>8} {cells[1]:>15} "
                  f"{cells[2]:>11} {cells[3]:>36}", flush=True)
    print(f"target: optimum and front under 5 s at E = 66: {'met' if ok else 'MISSED'} in this run")
    return ok


if __name__ == "__main__":
    sys.exit(main())
