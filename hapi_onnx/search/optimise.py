"""Optimisers over the design space: exhaustive reference, fast exact search, per-exit refinement.

**Global-threshold space.** A design keeps a subset ``S`` of the candidate exits and one threshold
``t`` for all of them, ``t`` taken from the *threshold grid*: up to ``grid_size`` (default 100)
distinct confidence values found at evenly spaced quantiles (0%, ..., 100%) of the pooled
confidences of the candidate exits on the search data (:func:`threshold_grid`). Thresholds
between two grid values behave like the next grid value on the search data, so the grid loses
little; using observed values keeps every threshold meaningful.

**Objective.** With only a latency SLA: maximise accuracy subject to ``latency <= SLA``
(``max-accuracy``). With an accuracy floor (``min_accuracy`` and/or ``max_accuracy_drop``, the
stricter wins), with or without an SLA: minimise latency subject to all constraints
(``min-latency``). Latency is the chosen statistic (mean, p50, p90, p99) of the predicted
per-sample latency.

**Tie-breaking** (total and deterministic, the same in every optimiser): first the objective
(``max-accuracy``: higher accuracy, then lower latency; ``min-latency``: lower latency, then higher
accuracy), then fewer kept exits, then the lexicographically smallest exit indices, then the
higher threshold (the more conservative of thresholds that behave identically on the data).

The fast optimiser scores every subset for a batch of thresholds at once with subset-sum
transforms (:mod:`hapi_onnx.search.subsets`) and keeps only each batch's Pareto candidates, so it
returns exactly the exhaustive optimum and front. Per-exit refinement then runs coordinate descent
from the global optimum over each kept exit's own threshold, accepting only strict improvements
that keep every constraint, so it can never end worse than the global optimum on the search data.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np

from hapi_onnx.errors import HapiError
from hapi_onnx.search.evaluate import batch_metrics, sweep_threshold
from hapi_onnx.search.pareto import front_candidates, pareto_indices
from hapi_onnx.search.problem import NS_PER_MS, SearchProblem, check_stat, ms_from_ns
from hapi_onnx.search.subsets import SubsetSpace

GRID_SIZE = 100
MAX_EXHAUSTIVE_CANDIDATES = 14
MAX_SWEEPS = 20


@dataclass(frozen=True)
class Candidate:
    """One scored design.

    Attributes:
        exits (tuple[int, ...]): Kept intermediate exits (trace indices, ascending).
        thresholds (tuple[float, ...]): One threshold per kept exit.
        correct (int): Samples classified right on the search data.
        latency_key (int): Total ns (statistic ``mean``) or the percentile's ns.
    """

    exits: tuple[int, ...]
    thresholds: tuple[float, ...]
    correct: int
    latency_key: int


@dataclass(frozen=True)
class Goal:
    """Constraints and objective resolved against one problem, as exact integers.

    Attributes:
        stat (str): Latency statistic: ``mean``, ``p50``, ``p90`` or ``p99``.
        objective (str): ``max-accuracy`` or ``min-latency``.
        min_correct (int): Fewest right answers allowed (0 without an accuracy floor).
        max_latency_key (int | None): Largest latency key allowed (None without an SLA).
        num_samples (int): N, to turn keys and counts back into ms and fractions.
        constraints (dict): The constraints as the user gave them.
    """

    stat: str
    objective: str
    min_correct: int
    max_latency_key: int | None
    num_samples: int
    constraints: dict

    def feasible(self, correct: np.ndarray, latency_key: np.ndarray) -> np.ndarray:
        """Whether each design meets every constraint."""
        ok = np.asarray(correct) >= self.min_correct
        if self.max_latency_key is not None:
            ok = ok & (np.asarray(latency_key) <= self.max_latency_key)
        return ok

    def metric_order(self, correct: np.ndarray, latency_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(primary, secondary) keys, smaller is better, for the objective."""
        correct, latency_key = np.asarray(correct), np.asarray(latency_key)
        if self.objective == "max-accuracy":
            return -correct, latency_key
        return latency_key, -correct

    def better(self, a: Candidate, b: Candidate) -> bool:
        """Whether ``a`` beats ``b`` on the objective alone (strictly)."""
        ka = tuple(int(x) for x in self.metric_order(a.correct, a.latency_key))
        kb = tuple(int(x) for x in self.metric_order(b.correct, b.latency_key))
        return ka < kb

    def latency_ms(self, latency_key: int) -> float:
        """A latency key in ms."""
        return ms_from_ns(latency_key / self.num_samples if self.stat == "mean" else latency_key)


@dataclass(frozen=True)
class GlobalResult:
    """Outcome of a global-threshold optimiser.

    Attributes:
        best (Candidate | None): The optimum, None when no design meets the constraints.
        front (list[Candidate]): Pareto front of the whole space, by increasing latency.
    """

    best: Candidate | None
    front: list[Candidate]


def resolve_goal(
    problem: SearchProblem,
    *,
    latency_sla_ms: float | None = None,
    percentile: str = "mean",
    min_accuracy: float | None = None,
    max_accuracy_drop: float | None = None,
) -> Goal:
    """Validate the constraints and turn them into exact limits on ``problem``.

    Args:
        problem (SearchProblem): The search data.
        latency_sla_ms (float | None): Largest allowed latency statistic, in ms.
        percentile (str): Latency statistic: ``mean``, ``p50``, ``p90`` or ``p99``. Defaults to mean.
        min_accuracy (float | None): Accuracy floor as a fraction in (0, 1].
        max_accuracy_drop (float | None): Largest drop, in percentage points, from the final
            classifier's accuracy on the search data.

    Raises:
        HapiError: when no constraint is given or a value is out of range.
    """
    check_stat(percentile)
    if latency_sla_ms is None and min_accuracy is None and max_accuracy_drop is None:
        raise HapiError(
            "The search needs at least one constraint: a latency SLA (latency_sla_ms / --latency-sla), "
            "an accuracy floor (min_accuracy / --min-accuracy) or a largest accuracy drop "
            "(max_accuracy_drop / --max-accuracy-drop)."
        )
    n = problem.num_samples
    min_correct = 0
    if min_accuracy is not None:
        if not (isinstance(min_accuracy, (int, float)) and 0.0 < min_accuracy <= 1.0):
            raise HapiError(f"min_accuracy must be a fraction in (0, 1]. Got {min_accuracy!r} instead.")
        min_correct = max(min_correct, math.ceil(min_accuracy * n - 1e-9))
    if max_accuracy_drop is not None:
        if not (isinstance(max_accuracy_drop, (int, float)) and 0.0 <= max_accuracy_drop <= 100.0):
            raise HapiError(
                "max_accuracy_drop is in percentage points, from 0 to 100. "
                f"Got {max_accuracy_drop!r} instead."
            )
        floor = problem.final_correct / n - max_accuracy_drop / 100.0
        min_correct = max(min_correct, math.ceil(floor * n - 1e-9))
    max_key = None
    if latency_sla_ms is not None:
        if not (
            isinstance(latency_sla_ms, (int, float)) and math.isfinite(latency_sla_ms) and latency_sla_ms > 0
        ):
            raise HapiError(
                f"latency_sla_ms must be a positive number of ms. Got {latency_sla_ms!r} instead."
            )
        scale = n if percentile == "mean" else 1
        limit = latency_sla_ms * NS_PER_MS * scale
        max_key = math.floor(limit + 1e-9 * max(1.0, limit))  # 1.2 ms is 1200000 ns, not 1199999.99...
    only_sla = min_accuracy is None and max_accuracy_drop is None
    return Goal(
        stat=percentile,
        objective="max-accuracy" if only_sla else "min-latency",
        min_correct=int(min_correct),
        max_latency_key=max_key,
        num_samples=n,
        constraints={
            "latency_sla_ms": latency_sla_ms,
            "percentile": percentile,
            "min_accuracy": min_accuracy,
            "max_accuracy_drop": max_accuracy_drop,
        },
    )


def threshold_grid(problem: SearchProblem, size: int = GRID_SIZE) -> np.ndarray:
    """Candidate global thresholds: distinct confidences at ``size`` evenly spaced quantiles.

    Args:
        problem (SearchProblem): The search data; the confidences of its candidate exits are pooled.
        size (int): Number of quantile levels, 0% to 100%. Defaults to 100.

    Returns:
        np.ndarray: float32 ascending, at most ``size`` values (fewer when confidences repeat).
    """
    if not isinstance(size, int) or size < 1:
        raise HapiError(f"The threshold grid size must be a positive integer. Got {size!r} instead.")
    pooled = problem.conf[list(problem.candidates)].ravel()
    if pooled.size == 0:
        return np.ones(1, dtype=np.float32)
    levels = np.linspace(0.0, 1.0, size) if size > 1 else np.ones(1)
    return np.unique(np.quantile(pooled, levels, method="inverted_cdf").astype(np.float32))


def exit_threshold_values(
    problem: SearchProblem, exit: int, grid: np.ndarray, size: int = GRID_SIZE
) -> np.ndarray:
    """Candidate thresholds of one exit for per-exit refinement: the global grid plus the
    distinct confidences at ``size`` evenly spaced quantiles of that exit's own confidences."""
    levels = np.linspace(0.0, 1.0, size) if size > 1 else np.ones(1)
    own = np.quantile(problem.conf[exit], levels, method="inverted_cdf").astype(np.float32)
    return np.unique(np.concatenate([np.asarray(grid, dtype=np.float32), own]))


def optimise_exhaustive(problem: SearchProblem, grid: np.ndarray, goal: Goal) -> GlobalResult:
    """Reference optimiser: score every (subset, grid threshold) design one subset at a time.

    Each subset is scored per sample for all thresholds at once (:func:`batch_metrics`), so the
    cost is ``O(2^E * G * N * E)``. Meant for checking the fast optimiser on small problems.

    Raises:
        HapiError: when there are more than ``MAX_EXHAUSTIVE_CANDIDATES`` candidate exits.
    """
    e = len(problem.candidates)
    if e > MAX_EXHAUSTIVE_CANDIDATES:
        raise HapiError(
            f"Exhaustive search over {e} candidate exits scores {2**e} subsets x {len(grid)} thresholds "
            f"one by one; it allows at most {MAX_EXHAUSTIVE_CANDIDATES}. Use optimiser='fast' (exact, same "
            "result) or restrict the candidates."
        )
    subsets = sorted(
        (s for r in range(e + 1) for s in itertools.combinations(problem.candidates, r)),
        key=lambda s: (len(s), s),
    )
    grid = np.asarray(grid, dtype=np.float32)
    correct = np.empty((len(subsets), len(grid)), dtype=np.int64)
    latency = np.empty_like(correct)
    for i, exits in enumerate(subsets):
        thr = np.repeat(grid[:, None], len(exits), axis=1)
        correct[i], latency[i] = batch_metrics(problem, exits, thr, goal.stat)
    rank = np.repeat(np.arange(len(subsets))[:, None], len(grid), axis=1).ravel()
    neg_g = np.tile(-np.arange(len(grid)), len(subsets))
    c, lat = correct.ravel(), latency.ravel()

    def candidate(i: int) -> Candidate:
        exits = subsets[rank[i]]
        return Candidate(exits, (float(grid[-neg_g[i]]),) * len(exits), int(c[i]), int(lat[i]))

    primary, secondary = goal.metric_order(c, lat)
    feasible = np.flatnonzero(goal.feasible(c, lat))
    best = None
    if len(feasible):
        f = feasible
        best = candidate(int(f[np.lexsort((neg_g[f], rank[f], secondary[f], primary[f]))[0]]))
    front = [candidate(int(i)) for i in pareto_indices(lat, c, (rank, neg_g))]
    return GlobalResult(best, front)


def optimise_fast(problem: SearchProblem, grid: np.ndarray, goal: Goal) -> GlobalResult:
    """Exact optimum and Pareto front of the global-threshold space, far faster than exhaustive.

    Every subset is scored for a batch of thresholds at once by subset-sum transforms
    (``O(G * (N * E + E * 2^E))``); each batch keeps only its Pareto candidates (found in linear
    time), and the optimum of any objective here lies on the front (a design dominating it would
    be feasible and better), so choosing from the merged front gives the exhaustive answer,
    tie-breaks included.
    """
    space = SubsetSpace(problem)
    rank = space.preference_rank()
    grid = np.asarray(grid, dtype=np.float32)
    kept = []
    step = space.chunk_size
    for start in range(0, len(grid), step):
        correct, latency = space.metrics(grid[start : start + step], goal.stat)
        width = correct.shape[1]
        idx = front_candidates(latency.ravel(), correct.ravel())
        kept.append((idx // width, start + idx % width, correct.ravel()[idx], latency.ravel()[idx]))
    subset, g, c, lat = (np.concatenate(parts) for parts in zip(*kept, strict=True))
    front = []
    for i in pareto_indices(lat, c, (rank[subset], -g)):
        exits = space.exits(int(subset[i]))
        front.append(Candidate(exits, (float(grid[g[i]]),) * len(exits), int(c[i]), int(lat[i])))
    return GlobalResult(best_on_front(front, goal), front)


def best_on_front(front: list[Candidate], goal: Goal) -> Candidate | None:
    """The optimum of ``goal`` among front points (ordered by increasing latency), or None."""
    feasible = [p for p in front if goal.feasible(p.correct, p.latency_key)]
    if not feasible:
        return None
    return feasible[-1] if goal.objective == "max-accuracy" else feasible[0]


def refine_per_exit(
    problem: SearchProblem,
    start: Candidate,
    goal: Goal,
    grid: np.ndarray,
    *,
    grid_size: int = GRID_SIZE,
    max_sweeps: int = MAX_SWEEPS,
) -> Candidate:
    """Per-exit thresholds by coordinate descent from a (global) design.

    Each sweep visits the kept exits in depth order and tries every candidate value of that exit's
    threshold (:func:`exit_threshold_values`) with the others fixed; the best value is taken only
    if it meets every constraint and strictly improves the objective (ties: the higher threshold).
    Stops after a sweep without a change or after ``max_sweeps`` sweeps.

    Returns:
        Candidate: A design at least as good as ``start`` on the search data, meeting the
        constraints whenever ``start`` does.
    """
    current = start
    values = {k: exit_threshold_values(problem, k, grid, grid_size) for k in start.exits}
    for _ in range(max_sweeps):
        changed = False
        for j, k in enumerate(current.exits):
            cand = values[k]
            correct, latency = sweep_threshold(problem, current.exits, current.thresholds, j, cand, goal.stat)
            ok = np.flatnonzero(goal.feasible(correct, latency))
            if not len(ok):
                continue
            primary, secondary = goal.metric_order(correct[ok], latency[ok])
            i = int(ok[np.lexsort((-np.arange(len(ok)), secondary, primary))[0]])
            thresholds = current.thresholds[:j] + (float(cand[i]),) + current.thresholds[j + 1 :]
            proposal = Candidate(current.exits, thresholds, int(correct[i]), int(latency[i]))
            if goal.better(proposal, current):
                current, changed = proposal, True
        if not changed:
            break
    return current
