"""Optimisers over the global-threshold design space: exhaustive reference and fast exact search.

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
per-sample latency. Accuracy constraints are checked on one-sided bounds at the user's
``bound_level`` (:mod:`hapi_onnx.search.bounds`): the drop budget on a paired upper bound that
depends on the right answers C *and* the discordant count D (samples where the design and the
final classifier differ in being right), the accuracy floor on a Wilson lower bound of C. The
latency SLA is checked on the predicted statistic itself (deterministic given the profile): a mean
SLA on the path costs' mean; a percentile SLA, where the table has distributions, on the percentile
predicted with the backbone's jitter (:mod:`hapi_onnx.search.latency`), exactly, by counting each
design's latency draws within the SLA (:attr:`Goal.within_need`). Percentiles are not additive
over a path, so no bound on the path costs' percentile stands in for it: that one (the latency
key) only orders designs (objective and tie-breaks).

**Tie-breaking** (total and deterministic, the same in every optimiser): first the objective
(``max-accuracy``: higher accuracy, then lower latency; ``min-latency``: lower latency, then higher
accuracy), then fewer kept exits, then the lexicographically smallest exit indices, then the
higher threshold (the more conservative of thresholds that behave identically on the data).

The fast optimiser scores every subset for a batch of thresholds at once with subset-sum
transforms (:mod:`hapi_onnx.search.subsets`), which give C, D and the latency of every design;
each batch's feasible designs are filtered on all three and its best one kept (with a bound the
optimum need not lie on the 2-D accuracy/latency front: a more accurate design at the same speed
may be refused for disagreeing with the final classifier on more samples), and each batch's
Pareto candidates are kept for the front, so it returns exactly the exhaustive optimum and front.
Per-exit refinement (:mod:`hapi_onnx.search.refine`) then runs coordinate descent from the global
optimum over each kept exit's own threshold, accepting only strict improvements that keep every
constraint (bounds included) on the search data and, cross-fitted, on samples that did not choose
them, so it can never end worse than the global optimum on the search data.

The Pareto front is of raw accuracy against latency; a front point stands for the designs with
its accuracy and latency by the tie-break order above.
"""

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from hapi_onnx.errors import HapiError
from hapi_onnx.search.bounds import (
    accuracy_lower_bound,
    drop_upper_bound,
    min_correct_for_accuracy,
    min_correct_for_drop,
    z_score,
)
from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.latency import needed_weight
from hapi_onnx.search.pareto import front_candidates, pareto_indices
from hapi_onnx.search.problem import NS_PER_MS, SearchProblem, ms_from_ns
from hapi_onnx.search.score import batch_metrics, exit_positions, position_counts, score_problem
from hapi_onnx.search.subsets import SubsetSpace

GRID_SIZE = 100
MAX_EXHAUSTIVE_CANDIDATES = 14


@dataclass(frozen=True)
class Candidate:
    """One scored design.

    Attributes:
        exits (tuple[int, ...]): Kept intermediate exits (trace indices, ascending).
        thresholds (tuple[float, ...]): One threshold per kept exit.
        correct (int): Samples classified right on the search data.
        latency_key (int): Total ns (statistic ``mean``) or the percentile's ns.
        discordant (int): Samples where the design and the final classifier differ in being right.
        within (int | None): Its latency draws within the SLA (:meth:`Goal.within`), where the goal
            checks a percentile SLA on them; else None.
    """

    exits: tuple[int, ...]
    thresholds: tuple[float, ...]
    correct: int
    latency_key: int
    discordant: int
    within: int | None = None


@dataclass(frozen=True, eq=False)
class Goal:
    """Constraints and objective resolved against one problem, as exact integers.

    Attributes:
        stat (str): Latency statistic: ``mean``, ``p50``, ``p90`` or ``p99``.
        objective (str): ``max-accuracy`` or ``min-latency``.
        min_correct (np.ndarray): int64[N+1] fewest right answers allowed, by discordant count
            (all 0 without an accuracy constraint); see :mod:`hapi_onnx.search.bounds`.
        reference_min_correct (int): Fewest right answers allowed for the design keeping no
            intermediate exit, which is the final classifier (its drop is exactly 0).
        max_latency_key (int | None): Largest latency key allowed (None without an SLA, or where the
            SLA is checked on the jittered prediction, ``within_need``).
        within_need (int | None): For a percentile SLA with a latency model: the weight (samples x
            draws) a design's latency draws within the SLA must reach, ``ceil(q * N * D)``; a design
            meets the SLA exactly when its predicted percentile does (:mod:`.latency`). None otherwise.
        num_samples (int): N, to turn keys and counts back into ms and fractions.
        final_correct (int): Samples the final classifier gets right.
        z (float): One-sided normal quantile of the bound level (0: raw counts).
        constraints (Constraints): The constraints as the user gave them.
    """

    stat: str
    objective: str
    min_correct: np.ndarray
    reference_min_correct: int
    max_latency_key: int | None
    num_samples: int
    final_correct: int
    z: float
    constraints: Constraints
    within_need: int | None = None

    @property
    def has_sla(self) -> bool:
        """Whether a latency SLA is checked (on the key, or on the jittered prediction)."""
        return self.max_latency_key is not None or self.within_need is not None

    @property
    def has_accuracy_constraint(self) -> bool:
        """Whether an accuracy floor or a drop budget is set (then the objective is min-latency)."""
        return self.objective == "min-latency"

    def required_correct(self, discordant, reference=False) -> np.ndarray:
        """Fewest right answers allowed for designs with these discordant counts.

        Args:
            discordant (int | np.ndarray): Discordant counts (0..N).
            reference (bool | np.ndarray): Whether each design keeps no intermediate exit.
                Defaults to False.
        """
        if self.min_correct[0] == self.min_correct[-1]:  # no bound on D (raw counts, floor only): no lookup
            required = self.min_correct[0]
        else:
            required = self.min_correct[np.asarray(discordant)]
        if reference is False:
            return np.asarray(required)
        return np.where(reference, self.reference_min_correct, required)

    def accurate(self, correct, discordant, reference=False) -> np.ndarray:
        """Whether each design meets the accuracy constraints (bounds included)."""
        return np.asarray(correct) >= self.required_correct(discordant, reference)

    def feasible(self, correct, discordant, latency_key, reference=False, within=None) -> np.ndarray:
        """Whether each design meets every constraint.

        Args:
            correct (int | np.ndarray): Right answers.
            discordant (int | np.ndarray): Discordant counts.
            latency_key (int | np.ndarray): Latency keys.
            reference (bool | np.ndarray): Whether each design keeps no intermediate exit.
                Defaults to False.
            within (int | np.ndarray | None): Each design's latency draws within the SLA
                (:meth:`within`); needed when ``within_need`` is set. Defaults to None.
        """
        return self.accurate(correct, discordant, reference) & self.fast_enough(latency_key, within)

    def fast_enough(self, latency_key, within=None) -> np.ndarray:
        """Whether each design meets the SLA (all True without one)."""
        if self.within_need is not None:
            if within is None:
                raise ValueError("a percentile SLA with a latency model is checked on the draws within it")
            return np.asarray(within) >= self.within_need
        if self.max_latency_key is not None:
            return np.asarray(latency_key) <= self.max_latency_key
        return np.ones(np.shape(latency_key), dtype=bool)

    def within(self, problem: SearchProblem, exits, counts) -> np.ndarray | None:
        """int64[D] the latency draws within the SLA of designs keeping ``exits`` with samples per
        position ``counts`` (int64[D, m+1]), or None when the SLA is not checked on draws."""
        if self.within_need is None:
            return None
        return np.asarray(counts, dtype=np.int64) @ problem.within(exits, self.constraints.latency_sla_ms)

    def feasible_candidate(self, point: "Candidate") -> bool:
        """Whether one scored design meets every constraint."""
        return bool(self.feasible(point.correct, point.discordant, point.latency_key, not point.exits, point.within))

    def scored(self, problem: SearchProblem, exits, thresholds) -> "Candidate":
        """One design scored on ``problem`` as the optimisers score it (its draws within the SLA included)."""
        s = score_problem(problem, exits, thresholds)
        within = self.within(problem, s.exits, np.asarray(s.exit_counts)[None, :])
        return Candidate(s.exits, s.thresholds, s.correct, s.latency_key(self.stat), s.discordant,
                         None if within is None else int(within[0]))

    def drop_bound_pp(self, point: "Candidate") -> float:
        """Upper bound of the design's accuracy drop, in percentage points (raw drop when z = 0)."""
        bound = drop_upper_bound(
            self.final_correct, point.correct, point.discordant, self.num_samples, self.z,
            reference=not point.exits,
        )
        return 100.0 * bound

    def accuracy_bound(self, point: "Candidate") -> float:
        """Lower bound of the design's accuracy, a fraction (raw accuracy when z = 0)."""
        return accuracy_lower_bound(point.correct, self.num_samples, self.z)

    def without_sla(self) -> "Goal":
        """The same goal with no latency SLA (to explain infeasibility)."""
        return replace(self, max_latency_key=None, within_need=None)

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


def resolve_goal(problem: SearchProblem, constraints: Constraints) -> Goal:
    """Turn the user's constraints into exact integer limits on ``problem``.

    Args:
        problem (SearchProblem): The search data.
        constraints (Constraints): What the design must meet (validated when it was made).
    """
    c = constraints
    z = z_score(c.bound_level)
    n = problem.num_samples
    min_correct = np.zeros(n + 1, dtype=np.int64)
    reference_min = 0
    if c.min_accuracy is not None:
        reference_min = min_correct_for_accuracy(c.min_accuracy, n, z)
        min_correct[:] = reference_min
    if c.max_accuracy_drop is not None:
        # The design without intermediate exits is the final classifier: its drop is 0, in budget.
        np.maximum(min_correct, min_correct_for_drop(c.max_accuracy_drop, problem.final_correct, n, z), out=min_correct)
    max_key = within_need = None
    if c.latency_sla_ms is not None and c.percentile != "mean" and problem.latency_model is not None:
        within_need = needed_weight(c.percentile, n, problem.latency_model.num_draws)
    elif c.latency_sla_ms is not None:
        scale = n if c.percentile == "mean" else 1
        limit = c.latency_sla_ms * NS_PER_MS * scale
        max_key = math.floor(limit + 1e-9 * max(1.0, limit))  # 1.2 ms is 1200000 ns, not 1199999.99...
    return Goal(
        stat=c.percentile,
        objective=c.objective,
        min_correct=min_correct,
        reference_min_correct=int(reference_min),
        max_latency_key=max_key,
        num_samples=n,
        final_correct=problem.final_correct,
        z=z if c.has_accuracy_constraint else 0.0,
        constraints=c,
        within_need=within_need,
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
            f"one by one; it allows at most {MAX_EXHAUSTIVE_CANDIDATES}. Use --optimiser fast (exact, same "
            "result) or restrict the candidates (--candidates)."
        )
    subsets = sorted(
        (s for r in range(e + 1) for s in itertools.combinations(problem.candidates, r)),
        key=lambda s: (len(s), s),
    )
    grid = np.asarray(grid, dtype=np.float32)
    correct = np.empty((len(subsets), len(grid)), dtype=np.int64)
    discordant = np.empty_like(correct)
    latency = np.empty_like(correct)
    within = np.zeros_like(correct)
    for i, exits in enumerate(subsets):
        thr = np.repeat(grid[:, None], len(exits), axis=1)
        correct[i], discordant[i], latency[i] = batch_metrics(problem, exits, thr, goal.stat)
        if goal.within_need is not None:
            within[i] = goal.within(problem, exits, position_counts(exit_positions(problem, exits, thr), len(exits)))
    rank = np.repeat(np.arange(len(subsets))[:, None], len(grid), axis=1).ravel()
    neg_g = np.tile(-np.arange(len(grid)), len(subsets))
    c, d, lat, w = correct.ravel(), discordant.ravel(), latency.ravel(), within.ravel()
    w_or_none = None if goal.within_need is None else w

    def candidate(i: int) -> Candidate:
        exits = subsets[rank[i]]
        return Candidate(exits, (float(grid[-neg_g[i]]),) * len(exits), int(c[i]), int(lat[i]), int(d[i]),
                         None if w_or_none is None else int(w[i]))

    primary, secondary = goal.metric_order(c, lat)
    feasible = np.flatnonzero(goal.feasible(c, d, lat, rank == 0, w_or_none))  # subsets[0] is ()
    best = None
    if len(feasible):
        f = feasible
        best = candidate(int(f[np.lexsort((neg_g[f], rank[f], secondary[f], primary[f]))[0]]))
    front = [candidate(int(i)) for i in pareto_indices(lat, c, (rank, neg_g))]
    return GlobalResult(best, front)


def optimise_fast(problem: SearchProblem, grid: np.ndarray, goal: Goal) -> GlobalResult:
    """Exact optimum and Pareto front of the global-threshold space, far faster than exhaustive.

    Every subset is scored for a batch of thresholds at once by subset-sum transforms
    (``O(G * (N * E + E * 2^E))``), giving each design's right answers, discordant count and
    latency. Each batch keeps its best feasible design (feasibility is checked on every design,
    since with accuracy bounds it depends on the discordant count too) and its Pareto candidates
    (found in linear time); the best of the kept designs by the full tie-break order, and the
    front of the kept candidates, are the exhaustive answers.
    """
    space = SubsetSpace(problem)
    rank = space.preference_rank()
    grid = np.asarray(grid, dtype=np.float32)
    reference = np.zeros((space.size, 1), dtype=bool)
    reference[0] = True  # the empty subset: the final classifier alone
    kept, winners = [], []
    step = space.chunk_size
    limit = goal.constraints.latency_sla_ms if goal.within_need is not None else None
    for start in range(0, len(grid), step):
        correct, discordant, latency, within = space.metrics(grid[start : start + step], goal.stat, limit)
        width = correct.shape[1]
        c, d, lat = correct.ravel(), discordant.ravel(), latency.ravel()
        w = np.zeros_like(lat) if within is None else within.ravel()
        idx = front_candidates(lat, c)
        kept.append((idx // width, start + idx % width, c[idx], d[idx], lat[idx], w[idx]))
        ok = goal.feasible(correct, discordant, latency, reference, within).ravel()
        i = _best_feasible(goal, ok, c, lat, rank, width)
        if i is not None:
            winners.append((i // width, start + i % width, c[i], d[i], lat[i], w[i]))

    def candidate(subset: int, g: int, c: int, d: int, lat: int, w: int) -> Candidate:
        exits = space.exits(int(subset))
        return Candidate(exits, (float(grid[g]),) * len(exits), int(c), int(lat), int(d),
                         None if limit is None else int(w))

    best = None
    if winners:
        subset, g, c, d, lat, w = (np.array(v) for v in zip(*winners, strict=True))
        primary, secondary = goal.metric_order(c, lat)
        i = int(np.lexsort((-g, rank[subset], secondary, primary))[0])
        best = candidate(subset[i], g[i], c[i], d[i], lat[i], w[i])
    subset, g, c, d, lat, w = (np.concatenate(parts) for parts in zip(*kept, strict=True))
    front = [candidate(subset[i], g[i], c[i], d[i], lat[i], w[i])
             for i in pareto_indices(lat, c, (rank[subset], -g))]
    return GlobalResult(best, front)


def _best_feasible(
    goal: Goal, ok: np.ndarray, correct: np.ndarray, latency: np.ndarray, rank: np.ndarray, width: int
) -> int | None:
    """Flat index (subset * width + column) of the best feasible design of one batch, or None.

    Filters on the primary key first (one pass over all designs), then orders the few ties by the
    secondary key, the subset's preference ``rank`` and the higher threshold.
    """
    if not ok.any():
        return None
    if goal.objective == "max-accuracy":
        top = correct[ok].max()
        tied = np.flatnonzero(ok & (correct == top))
    else:
        top = latency[ok].min()
        tied = np.flatnonzero(ok & (latency == top))
    _, secondary = goal.metric_order(correct[tied], latency[tied])
    order = np.lexsort((-(tied % width), rank[tied // width], secondary))
    return int(tied[order[0]])
