"""``search``: from a trace and a latency table to a :class:`Design`, in one call.

The CLI's ``hapi-onnx search`` is this function; see :mod:`hapi_onnx.search.optimise` for the
space, the objective and the tie-breaking, and :mod:`hapi_onnx.search.problem` for the cost model.
"""

from collections.abc import Sequence

import numpy as np

from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.search.design import Design
from hapi_onnx.search.evaluate import Evaluation, evaluate_problem
from hapi_onnx.search.optimise import (
    GRID_SIZE,
    Candidate,
    GlobalResult,
    Goal,
    optimise_exhaustive,
    optimise_fast,
    refine_per_exit,
    resolve_goal,
    threshold_grid,
)
from hapi_onnx.search.pareto import pareto_indices
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.trace import Trace

SPACES = ("global", "per-exit")
OPTIMISERS = ("fast", "exhaustive")


def search(
    trace: Trace,
    table: LatencyTable,
    *,
    latency_sla_ms: float | None = None,
    percentile: str = "mean",
    min_accuracy: float | None = None,
    max_accuracy_drop: float | None = None,
    thresholds: str = "global",
    candidates: Sequence[str | int] | None = None,
    optimiser: str = "fast",
    grid_size: int = GRID_SIZE,
) -> Design:
    """Choose exits and thresholds for a latency SLA and/or an accuracy floor.

    Objective: with only ``latency_sla_ms``, the most accurate design within it; with an accuracy
    floor (``min_accuracy``, ``max_accuracy_drop``), the fastest design meeting every constraint.

    Args:
        trace (Trace): Trace of the over-provisioned model on the calibration (search) split.
        table (LatencyTable): Latency table of the same model on the target device.
        latency_sla_ms (float | None): Largest allowed ``percentile`` latency, in ms.
        percentile (str): ``mean``, ``p50``, ``p90`` or ``p99``. Defaults to mean.
        min_accuracy (float | None): Accuracy floor, a fraction in (0, 1].
        max_accuracy_drop (float | None): Largest drop in percentage points from the final
            classifier's accuracy on the trace.
        thresholds (str): ``global`` (one threshold for all kept exits) or ``per-exit`` (the global
            optimum refined exit by exit). Defaults to global.
        candidates (Sequence[str | int] | None): Intermediate exits the search may keep. Defaults
            to None: all.
        optimiser (str): ``fast`` or ``exhaustive`` (reference; same result, small problems only).
            Defaults to fast.
        grid_size (int): Quantile levels of the global threshold grid. Defaults to 100.

    Returns:
        Design: The chosen design with its predictions and the Pareto front.

    Raises:
        HapiError: when the artifacts disagree, an argument is invalid, or no design meets the
            constraints (the message names the closest achievable design).
    """
    if thresholds not in SPACES:
        raise HapiError(f"thresholds must be one of {', '.join(SPACES)}. Got {thresholds!r} instead.")
    if optimiser not in OPTIMISERS:
        raise HapiError(f"optimiser must be one of {', '.join(OPTIMISERS)}. Got {optimiser!r} instead.")
    problem = SearchProblem.from_artifacts(trace, table, candidates)
    goal = resolve_goal(
        problem,
        latency_sla_ms=latency_sla_ms,
        percentile=percentile,
        min_accuracy=min_accuracy,
        max_accuracy_drop=max_accuracy_drop,
    )
    grid = threshold_grid(problem, grid_size)
    result = (optimise_fast if optimiser == "fast" else optimise_exhaustive)(problem, grid, goal)
    if result.best is None:
        raise HapiError(infeasible_message(problem, goal, result))
    chosen, front = result.best, result.front
    if thresholds == "per-exit":
        chosen = refine_per_exit(problem, chosen, goal, grid, grid_size=grid_size)
        front = _merge_front(front, chosen)
    return _design(problem, goal, chosen, front, space=thresholds, optimiser=optimiser, grid_size=grid_size)


def infeasible_message(problem: SearchProblem, goal: Goal, result: GlobalResult) -> str:
    """Why no design meets the constraints, naming the closest achievable designs."""
    front, stat = result.front, goal.stat
    n = problem.num_samples
    sla = goal.constraints["latency_sla_ms"]
    most_accurate, fastest = front[-1], front[0]
    if goal.min_correct > most_accurate.correct:
        return (
            f"no design reaches {100 * goal.min_correct / n:.2f}% accuracy on the search data; the most "
            f"accurate is {_describe(problem, goal, most_accurate)}. Lower the accuracy floor."
        )
    if goal.max_latency_key is not None and fastest.latency_key > goal.max_latency_key:
        return (
            f"no design meets {stat} latency <= {sla:g} ms; the fastest is "
            f"{_describe(problem, goal, fastest)}. Raise the SLA or profile on a faster device."
        )
    within = [p for p in front if goal.max_latency_key is None or p.latency_key <= goal.max_latency_key]
    reaching = [p for p in front if p.correct >= goal.min_correct]
    return (
        f"no design reaches {100 * goal.min_correct / n:.2f}% accuracy within {sla:g} ms {stat}; within the "
        f"SLA the most accurate is {_describe(problem, goal, within[-1])}, and the fastest reaching the "
        f"accuracy is {_describe(problem, goal, reaching[0])}. Relax one of the constraints."
    )


def _describe(problem: SearchProblem, goal: Goal, point: Candidate) -> str:
    names = ", ".join(problem.names(point.exits))
    thr = ", ".join(f"{t:.4g}" for t in point.thresholds) or "none"
    if len(set(point.thresholds)) == 1 and len(point.thresholds) > 1:
        thr = f"{point.thresholds[0]:.4g} at every exit"
    return (
        f"{100 * point.correct / problem.num_samples:.2f}% at {goal.latency_ms(point.latency_key):.3f} ms "
        f"{goal.stat} (exits {names}; thresholds {thr})"
    )


def _merge_front(front: list[Candidate], extra: Candidate) -> list[Candidate]:
    """The Pareto front of ``front`` plus one more point, which wins exact ties (so a refined
    design, never dominated by a global one, is always on the front)."""
    points = [extra] + front
    latency = np.array([p.latency_key for p in points], dtype=np.int64)
    correct = np.array([p.correct for p in points], dtype=np.int64)
    return [points[i] for i in pareto_indices(latency, correct)]


def _design(
    problem: SearchProblem,
    goal: Goal,
    chosen: Candidate,
    front: list[Candidate],
    *,
    space: str,
    optimiser: str,
    grid_size: int,
) -> Design:
    ev = evaluate_problem(problem, chosen.exits, chosen.thresholds)
    full = evaluate_problem(problem, (), ())
    return Design(
        exits=problem.names(ev.exits),
        exit_indices=[*ev.exits, problem.num_exits - 1],
        thresholds=[float(t) for t in ev.thresholds],
        policy="max-softmax",
        predicted=_predicted(ev, problem.monolithic_ms),
        reference={
            "accuracy": problem.final_correct / problem.num_samples,
            "mean_ms": problem.monolithic_ms,
            "no_exit_mean_ms": full.mean_ms,
            "no_exit_p90_ms": full.stat_ms("p90"),
        },
        constraints=dict(goal.constraints),
        objective=goal.objective,
        latency_stat=goal.stat,
        pareto_front=[
            {
                "accuracy": p.correct / problem.num_samples,
                "latency_ms": goal.latency_ms(p.latency_key),
                "exits": problem.names(p.exits),
                "thresholds": [float(t) for t in p.thresholds],
            }
            for p in front
        ],
        search={
            "space": space,
            "optimiser": optimiser,
            "grid_size": grid_size,
            "num_samples": problem.num_samples,
            "candidates": [problem.exit_names[i] for i in problem.candidates],
        },
        device=problem.device,
        trace_fingerprint=problem.trace_fingerprint,
        latency_fingerprint=problem.latency_fingerprint,
        model_fingerprint=problem.model_fingerprint,
    )


def _predicted(ev: Evaluation, monolithic_ms: float) -> dict:
    return {
        "accuracy": ev.accuracy,
        "mean_ms": ev.mean_ms,
        "p50_ms": ev.stat_ms("p50"),
        "p90_ms": ev.stat_ms("p90"),
        "p99_ms": ev.stat_ms("p99"),
        "exit_distribution": list(ev.exit_distribution),
        "speedup_vs_full": monolithic_ms / ev.mean_ms,
    }
