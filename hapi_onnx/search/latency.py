"""Per-sample latency as a distribution, so predicted percentiles include the device's jitter.

The search ranks designs on exact integer costs built from each piece's *mean*
(:mod:`hapi_onnx.search.problem`): the mean of a sum is the sum of the means, so mean latency
predictions need nothing more. Percentiles do: a sample leaving at kept exit ``j`` pays every
segment up to it, and the p99 of that sum is neither the sum of p99s nor the path's mean cost. So
the latency table keeps each piece's measured distribution (101 quantiles,
:class:`~hapi_onnx.profile.table.TimingStats`), and a sample leaving at a position costs

    the position's mean path cost (exactly :meth:`SearchProblem.position_costs`)
    + the backbone's jitter up to that exit

where the jitter is the sum of the segments' centred draws (inverse-CDF sampling from each
segment's distribution, independent, seeded; made once per model). The kept heads, the calls and the
cuts are charged at their means: they are the same few microseconds on every path through them,
while the backbone's jitter grows with depth. Because a position's distribution is its exit's
jitter *shifted* by its mean cost, the share of a position's draws within a latency limit is one
sorted lookup (:meth:`LatencyModel.within`), whatever exits are kept before it; the optimisers use
that to check a percentile SLA on this very prediction, design by design
(:meth:`hapi_onnx.search.optimise.Goal.feasible`).

A design's latency distribution is the mixture of its positions' distributions weighted by how
many samples leave at each (every draw of position ``j`` weighs ``counts[j]``); its nearest-rank
percentile ``q`` is the smallest draw value whose cumulative weight reaches ``ceil(q * N * D)``
(N samples, D draws), in integers, so ``percentile <= limit`` exactly when
``sum(counts[j] * within[j]) >= ceil(q * N * D)``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hapi_onnx.profile.table import QUANTILES, LatencyTable

DRAWS = 20_000
SEED = 0
LEVELS = {"p50": 50, "p90": 90, "p99": 99}


def needed_weight(stat: str, num_samples: int, draws: int = DRAWS) -> int:
    """The cumulative weight (samples x draws) a percentile's value must reach: ``ceil(q * N * D)``."""
    return -(-LEVELS[stat] * num_samples * draws // 100)


@dataclass(frozen=True, eq=False)
class LatencyModel:
    """The backbone's measured jitter up to every exit, around its mean.

    Attributes:
        segments (np.ndarray): float64[K, Q] quantiles (ms) of each segment's measured time.
        means (np.ndarray): float64[K] each segment's measured mean (ms).
    """

    segments: np.ndarray
    means: np.ndarray

    @classmethod
    def from_table(cls, table: LatencyTable) -> "LatencyModel | None":
        """The model of ``table``, or None when its segments carry no distributions (older tables)."""
        pieces = [p.stats.quantiles_ms for p in table.segments]
        if any(q is None for q in pieces):
            return None
        return cls(np.asarray(pieces, dtype=np.float64), np.array([p.stats.mean_ms for p in table.segments]))

    @property
    def num_draws(self) -> int:
        """D, draws per position."""
        return DRAWS

    def jitter(self) -> np.ndarray:
        """float64[K, D]: the backbone's jitter (ms) up to and including each segment, each row sorted.

        Made once per model (the draws do not depend on the design, which every search round asks about).
        """
        cache = self.__dict__.setdefault("_jitter", [])  # frozen: the cache lives beside the fields
        if not cache:
            rng = np.random.default_rng(SEED)
            seg = np.stack([inverse_cdf(q, mean, rng.random(DRAWS)) for q, mean in zip(self.segments, self.means,
                                                                                       strict=True)])
            seg -= seg.mean(axis=1, keepdims=True)  # centred exactly: a position's mean is its path cost
            cache.append(np.sort(np.cumsum(seg, axis=0), axis=1))
        return cache[0]

    def position_draws(self, ends: Sequence[int], costs_ms: Sequence[float]) -> np.ndarray:
        """float64[P, D]: latency draws (ms) of leaving at positions ending at trace exits ``ends``
        whose mean path costs are ``costs_ms``."""
        return self.jitter()[np.asarray(ends, dtype=np.int64)] + np.asarray(costs_ms, dtype=np.float64)[:, None]

    def within(self, ends: np.ndarray, costs_ms: np.ndarray, limit_ms: float) -> np.ndarray:
        """int64, shaped like ``costs_ms``: how many of each position's D draws are <= ``limit_ms``.

        Args:
            ends (np.ndarray): Trace exit index each position ends at (the final classifier: K - 1),
                broadcastable to ``costs_ms``.
            costs_ms (np.ndarray): Each position's mean path cost (ms).
            limit_ms (float): The latency limit.
        """
        jitter = self.jitter()
        ends, costs = np.broadcast_arrays(np.asarray(ends, dtype=np.int64), np.asarray(costs_ms, dtype=np.float64))
        out = np.zeros(costs.shape, dtype=np.int64)
        for e in np.unique(ends):
            here = ends == e
            row, cost = jitter[e], costs[here]
            count = np.searchsorted(row, limit_ms - cost, side="right")
            while True:  # to the draw: count the draws as percentiles() forms them (row + cost), not by a difference
                over = (count > 0) & (row[np.maximum(count - 1, 0)] + cost > limit_ms)
                under = (count < len(row)) & (row[np.minimum(count, len(row) - 1)] + cost <= limit_ms)
                if not (over.any() or under.any()):
                    break
                count += under.astype(np.int64) - over.astype(np.int64)
            out[here] = count
        return out

    def percentiles(self, ends: Sequence[int], costs_ms: Sequence[float], exit_counts: Sequence[int],
                    stats: Sequence[str] = tuple(LEVELS)) -> dict[str, float]:
        """Predicted nearest-rank percentiles (ms) of a design whose samples leave at its positions
        (ending at ``ends``, mean costs ``costs_ms``) in ``exit_counts``."""
        draws = self.position_draws(ends, costs_ms)
        counts = np.asarray(exit_counts, dtype=np.int64)
        values = draws.ravel()
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(np.repeat(counts, draws.shape[1])[order])
        values = values[order]
        n = int(counts.sum())
        return {s: float(values[min(np.searchsorted(cumulative, needed_weight(s, n, draws.shape[1])),
                                    len(values) - 1)]) for s in stats}


def inverse_cdf(quantiles: np.ndarray, mean: float, u: np.ndarray) -> np.ndarray:
    """Times (ms) at levels ``u`` in [0, 1) of a timing kept as :data:`QUANTILES` quantiles and its mean.

    Between two quantiles the time is interpolated linearly, except in the top bin (the slowest 1%):
    there the quantiles say only that it lies between the 99th percentile and the maximum, and one
    run the OS preempted (a maximum of 3 ms for a 20 us segment, measured here) spread evenly over
    1% of the draws puts 1% of every path ms too slow: each piece then reads up to twice its mean,
    and a path's p99 five times what runs. So the top bin is the 99th percentile and, for the share
    of it that the measured mean leaves room for, the maximum (the slowest runs are that rare).
    """
    levels = np.linspace(0.0, 1.0, QUANTILES)
    top, q99, q100 = levels[-2], quantiles[-2], quantiles[-1]
    body = np.trapezoid(quantiles[:-1], levels[:-1])  # the mean's part below the top bin
    bin_mean = (mean - body) / (1.0 - top)
    share = 0.0 if q100 <= q99 else float(np.clip((bin_mean - q99) / (q100 - q99), 0.0, 1.0))
    out = np.interp(u, levels[:-1], quantiles[:-1])
    in_top = u >= top
    out[in_top] = np.where((u[in_top] - top) / (1.0 - top) >= 1.0 - share, q100, q99)
    return out


def position_quantiles(draws: np.ndarray) -> np.ndarray:
    """float64[P, Q] each position's latency distribution as :data:`QUANTILES` quantiles (ms), from its draws."""
    return np.quantile(draws, np.linspace(0.0, 1.0, QUANTILES), axis=1).T


def mixture_stats(positions: Sequence[dict], exit_counts: Sequence[int], resolution: int = 1000) -> dict[str, float]:
    """Predicted ``mean_ms`` and ``p50_ms``/``p90_ms``/``p99_ms`` of a design whose samples leave at its
    positions in ``exit_counts``, from the positions' records in a design (``mean_ms``, ``quantiles_ms``).

    This is how a design's prediction is re-computed for other samples' exits (``evaluate`` on the test
    split): the mean exactly, the percentiles from each position's distribution read back at
    ``resolution`` evenly spaced levels (the same nearest-rank rule as :meth:`LatencyModel.percentiles`).

    Args:
        positions (Sequence[dict]): One record per kept exit, the final classifier last.
        exit_counts (Sequence[int]): Samples leaving at each position.
        resolution (int): Levels each position's distribution is read at. Defaults to 1000.
    """
    counts = np.asarray(exit_counts, dtype=np.int64)
    n = int(counts.sum())
    means = np.array([float(p["mean_ms"]) for p in positions])
    levels = (np.arange(resolution) + 0.5) / resolution
    grid = np.linspace(0.0, 1.0, QUANTILES)
    values = np.concatenate([np.interp(levels, grid, np.asarray(p["quantiles_ms"], dtype=np.float64))
                             for p in positions])
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(np.repeat(counts, resolution)[order])
    values = values[order]
    out = {"mean_ms": float(counts @ means / n)}
    for s in LEVELS:
        out[f"{s}_ms"] = float(values[min(np.searchsorted(cumulative, needed_weight(s, n, resolution)),
                                          len(values) - 1)])
    return out
