"""Score designs on the search data: where each sample leaves, its latency, and whether it is right.

Policy (``max-softmax``): a sample leaves at the first kept exit ``j`` whose confidence reaches the
exit's threshold (``conf >= t_j``), otherwise at the final classifier, whose prediction it takes.
Costs follow :mod:`hapi_onnx.search.problem`. All functions are vectorised with numpy; the batch
variants score many threshold vectors of one exit subset at once for the optimisers.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hapi_onnx.choice import ExitChoice, check_choices, check_threshold, confidences_staying, first_exit
from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.search.constraints import PERCENTILES
from hapi_onnx.search.problem import SearchProblem, check_stat, ms_from_ns, percentile_rank
from hapi_onnx.trace import Trace


@dataclass(frozen=True)
class Score:
    """How one design behaves on the search data.

    Attributes:
        exits (tuple[int, ...]): Kept intermediate exits (trace indices, ascending).
        thresholds (tuple[float, ...]): Threshold of each kept intermediate exit.
        num_samples (int): N.
        correct (int): Samples classified right.
        losses (int): Samples the design gets wrong that the final classifier gets right.
        gains (int): Samples the design gets right that the final classifier gets wrong.
        total_ns (int): Sum of the per-sample latencies.
        percentile_ns (dict[str, int]): Nearest-rank ``p50``/``p90``/``p99`` latency.
        exit_counts (tuple[int, ...]): Samples leaving at each kept exit, the final classifier last.
        exit_position (np.ndarray | None): int[N] where each sample left (0..m, m = final), if kept.
    """

    exits: tuple[int, ...]
    thresholds: tuple[float, ...]
    num_samples: int
    correct: int
    losses: int
    gains: int
    total_ns: int
    percentile_ns: dict[str, int]
    exit_counts: tuple[int, ...]
    exit_position: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def accuracy(self) -> float:
        """Fraction of samples classified right."""
        return self.correct / self.num_samples

    @property
    def discordant(self) -> int:
        """Samples where the design and the final classifier differ in being right (L + G)."""
        return self.losses + self.gains

    @property
    def mean_ms(self) -> float:
        """Mean per-sample latency."""
        return ms_from_ns(self.total_ns / self.num_samples)

    def stat_ms(self, stat: str) -> float:
        """Latency statistic ``stat`` (``mean``, ``p50``, ``p90``, ``p99``) in ms."""
        check_stat(stat)
        return self.mean_ms if stat == "mean" else ms_from_ns(self.percentile_ns[stat])

    def latency_key(self, stat: str) -> int:
        """The exact integer the optimisers compare: total ns for the mean, else the percentile's ns."""
        check_stat(stat)
        return self.total_ns if stat == "mean" else self.percentile_ns[stat]

    @property
    def exit_distribution(self) -> tuple[float, ...]:
        """Fraction of samples leaving at each kept exit, the final classifier last."""
        return tuple(c / self.num_samples for c in self.exit_counts)


def score_design(
    trace: Trace, table: LatencyTable, exits: Sequence[ExitChoice], *, keep_positions: bool = False
) -> Score:
    """Score one design on a trace with a latency table.

    Args:
        trace (Trace): The search data.
        table (LatencyTable): Costs of the same model.
        exits (Sequence[ExitChoice]): The design's exits in depth order, the final classifier
            last (see :mod:`hapi_onnx.choice`).
        keep_positions (bool): Keep every sample's exit position. Defaults to False.

    Raises:
        HapiError: when the artifacts disagree or the design is malformed.
    """
    exits = check_choices(exits)
    problem = SearchProblem.from_artifacts(trace, table)
    kept = problem.exit_tuple([c.name for c in exits])
    return score_problem(problem, kept, [c.threshold for c in exits[:-1]], keep_positions=keep_positions)


def score_problem(
    problem: SearchProblem,
    exits: Sequence[int],
    thresholds: Sequence[float],
    *,
    keep_positions: bool = False,
) -> Score:
    """Score one design of ``problem`` (exits as ascending trace indices).

    Raises:
        HapiError: when the number of thresholds does not match the exits.
    """
    exits = tuple(int(e) for e in exits)
    thr = check_thresholds(exits, thresholds)
    pos = exit_positions(problem, exits, thr[None, :])[0]
    costs = problem.position_costs(exits)[pos]
    rows = np.asarray(exits + (problem.num_exits - 1,))
    right = problem.correct[rows[pos], np.arange(problem.num_samples)]
    final = problem.correct[-1]
    sorted_costs = np.sort(costs)
    n = problem.num_samples
    return Score(
        exits=exits,
        thresholds=tuple(float(t) for t in thr),
        num_samples=n,
        correct=int(right.sum()),
        losses=int(np.count_nonzero(final & ~right)),
        gains=int(np.count_nonzero(right & ~final)),
        total_ns=int(costs.sum()),
        percentile_ns={s: int(sorted_costs[percentile_rank(s, n) - 1]) for s in PERCENTILES if s != "mean"},
        exit_counts=tuple(int(c) for c in np.bincount(pos, minlength=len(exits) + 1)),
        exit_position=pos if keep_positions else None,
    )


def check_thresholds(exits: Sequence[int], thresholds: Sequence[float]) -> np.ndarray:
    """float32 thresholds, one per kept intermediate exit, each checked by the one threshold rule.

    Raises:
        HapiError: when the count differs from the exits or a threshold breaks the rule
            (:func:`hapi_onnx.choice.check_threshold`).
    """
    values = list(thresholds)
    if len(values) != len(exits):
        raise HapiError(
            f"A design needs one threshold per kept intermediate exit ({len(exits)}). "
            f"Got {len(values)} thresholds instead."
        )
    return np.array([check_threshold(t) for t in values], dtype=np.float32)


def exit_positions(problem: SearchProblem, exits: Sequence[int], thresholds: np.ndarray) -> np.ndarray:
    """Where each sample leaves, for a batch of threshold vectors over the same kept exits.

    Args:
        problem (SearchProblem): The search data.
        exits (Sequence[int]): Kept intermediate exits, ascending trace indices (m of them).
        thresholds (np.ndarray): float32[D, m], one threshold vector per design.

    Returns:
        np.ndarray: int64[D, N] exit position per design and sample (0..m; m is the final classifier).
    """
    return first_exit(problem.conf[list(exits)], thresholds)


def position_counts(positions: np.ndarray, m: int) -> np.ndarray:
    """int64[D, m+1] samples leaving at each position, from exit positions int[D, N] (0..m)."""
    d = positions.shape[0]
    flat = (np.arange(d, dtype=np.int64)[:, None] * (m + 1) + positions).ravel()
    return np.bincount(flat, minlength=d * (m + 1)).reshape(d, m + 1)


def batch_metrics(
    problem: SearchProblem, exits: Sequence[int], thresholds: np.ndarray, stat: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correct and discordant counts and latency keys of a batch of designs sharing their kept exits.

    Works per sample (the exhaustive reference uses it): latencies are gathered per sample and the
    percentile is an order statistic of them.

    Args:
        problem (SearchProblem): The search data.
        exits (Sequence[int]): Kept intermediate exits, ascending trace indices.
        thresholds (np.ndarray): float32[D, m].
        stat (str): ``mean`` (key = total ns) or a percentile (key = its ns).

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: int64[D] correct counts, int64[D] discordant
        counts (samples right where the final classifier is wrong, or the reverse), int64[D]
        latency keys.
    """
    pos = exit_positions(problem, exits, thresholds)
    rows = np.asarray(tuple(exits) + (problem.num_exits - 1,))
    correct = problem.correct[rows[:, None], np.arange(problem.num_samples)[None, :]]  # [m+1, N]
    right = np.take_along_axis(correct, pos, axis=0)  # [D, N]
    n_correct = right.sum(axis=1, dtype=np.int64)
    n_discordant = (right != problem.correct[-1][None, :]).sum(axis=1, dtype=np.int64)
    costs = problem.position_costs(exits)[pos]
    return n_correct, n_discordant, latency_keys(costs, stat)


def latency_keys(costs: np.ndarray, stat: str) -> np.ndarray:
    """int64[D] latency key of per-sample costs int64[D, N]: their sum, or a nearest-rank percentile."""
    if stat == "mean":
        return costs.sum(axis=1)
    k = percentile_rank(stat, costs.shape[1]) - 1
    return np.partition(costs, k, axis=1)[:, k]


def keys_from_counts(counts: np.ndarray, position_costs: np.ndarray, stat: str) -> np.ndarray:
    """int64[D] latency keys from samples per exit position.

    Latency grows with the exit position (each later stage adds non-negative work and a call), so
    the sorted per-sample latencies are the position costs repeated by their counts.

    Args:
        counts (np.ndarray): int64[D, m+1] samples leaving at each position.
        position_costs (np.ndarray): int64[m+1] from :meth:`SearchProblem.position_costs`.
        stat (str): ``mean`` or a percentile.
    """
    if stat == "mean":
        return counts @ position_costs
    rank = percentile_rank(stat, int(counts[0].sum()) if len(counts) else 1)
    first = np.argmax(np.cumsum(counts, axis=1) >= rank, axis=1)
    return position_costs[first]


def sweep_threshold(
    problem: SearchProblem,
    exits: Sequence[int],
    thresholds: Sequence[float],
    position: int,
    values: np.ndarray,
    stat: str,
    *,
    with_counts: bool = False,
) -> tuple[np.ndarray, ...]:
    """Correct and discordant counts and latency keys when one kept exit's threshold takes each
    of ``values``.

    The other thresholds stay fixed, so a sample either leaves before ``position`` (unaffected),
    leaves at ``position`` when its confidence there reaches the value, or goes on to where it
    would leave without that exit. Sorting the samples reaching ``position`` by confidence gives
    every value's outcome from cumulative sums: ``O(N * m + N log N + C * m)`` for C values.

    Args:
        problem (SearchProblem): The search data.
        exits (Sequence[int]): Kept intermediate exits, ascending trace indices (m of them).
        thresholds (Sequence[float]): Current thresholds, one per kept exit.
        position (int): Which kept exit's threshold varies (0..m-1).
        values (np.ndarray): float[C] thresholds to try there.
        stat (str): ``mean`` or a percentile.
        with_counts (bool): Also return int64[C, m+1] the samples leaving at each position.
            Defaults to False.

    Returns:
        tuple[np.ndarray, ...]: int64[C] correct counts, int64[C] discordant counts (see
        :func:`batch_metrics`) and int64[C] latency keys (then the counts, if asked for).
    """
    exits = tuple(exits)
    m, n, j = len(exits), problem.num_samples, position
    thr = check_thresholds(exits, thresholds)
    conf = problem.conf[list(exits)]
    # where each sample leaves if it does not leave at j: exit j left out, later positions shifted back
    without_j = first_exit(np.delete(conf, j, axis=0), np.delete(thr, j))
    elsewhere = np.where(without_j < j, without_j, without_j + 1)
    rows = np.asarray(exits + (problem.num_exits - 1,))
    right = problem.correct[rows[elsewhere], np.arange(n)]
    final = problem.correct[-1]
    disc = right != final
    reach = elsewhere > j
    fixed = np.bincount(elsewhere[~reach], minlength=m + 1)
    fixed_right = int(right[~reach].sum())
    fixed_disc = int(disc[~reach].sum())
    order = np.argsort(conf[j, reach], kind="stable")
    conf_j = conf[j, reach][order]
    later = elsewhere[reach][order]
    cum_later = np.zeros((len(later) + 1, m + 1), dtype=np.int64)
    np.cumsum(np.eye(m + 1, dtype=np.int64)[later], axis=0, out=cum_later[1:])
    cum_right_later = np.concatenate([[0], np.cumsum(right[reach][order])])
    cum_right_j = np.concatenate([[0], np.cumsum(problem.correct[exits[j], reach][order])])
    cum_disc_later = np.concatenate([[0], np.cumsum(disc[reach][order])])
    disc_j = problem.correct[exits[j], reach] != final[reach]
    cum_disc_j = np.concatenate([[0], np.cumsum(disc_j[order])])
    stay = confidences_staying(conf_j, values)
    counts = fixed[None, :] + cum_later[stay]
    counts[:, j] += len(later) - stay
    correct = fixed_right + cum_right_later[stay] + (cum_right_j[-1] - cum_right_j[stay])
    discordant = fixed_disc + cum_disc_later[stay] + (cum_disc_j[-1] - cum_disc_j[stay])
    keys = keys_from_counts(counts, problem.position_costs(exits), stat)
    out = correct.astype(np.int64), discordant.astype(np.int64), keys
    return (*out, counts) if with_counts else out
