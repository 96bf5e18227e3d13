"""Per-sample latency as a distribution, so predicted percentiles include the device's jitter.

The search ranks designs on exact integer costs built from each piece's *mean*
(:mod:`hapi_onnx.search.problem`): the mean of a sum is the sum of the means, so mean latency
predictions need nothing more. Percentiles do: a sample leaving at kept exit ``j`` pays every
segment up to it, every kept head on the way and one session call per stage, and the p99 of that
sum is not the sum of p99s nor the deterministic path cost. So the latency table keeps each
piece's measured distribution (101 quantiles, :class:`~hapi_onnx.profile.table.TimingStats`), and
:class:`LatencyModel` draws each piece's time from its own distribution (inverse-CDF sampling,
independent draws, seeded) and sums along the path, the same bookkeeping as the mean model: a piece
contributes its measured time minus one mean call overhead, each stage call adds one mean overhead,
the cost of cutting at an exit moves from the segments beside it to keeping that exit (less the
part on the next segment's side, for the samples leaving there), and the runtime's per-predict
work is paid once. The design's latency distribution is the mixture of the exit positions'
distributions weighted by where the samples leave; its percentiles are the predictions reported
and checked against a percentile SLA.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hapi_onnx.profile.table import QUANTILES, LatencyTable

DRAWS = 20_000
SEED = 0
LEVELS = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


@dataclass(frozen=True, eq=False)
class LatencyModel:
    """The measured time distribution of every piece of a latency table, call overhead removed.

    Attributes:
        segments (np.ndarray): float64[K, Q] quantiles (ms) of each segment's compute.
        heads (np.ndarray): float64[K-1, Q] quantiles (ms) of each head's compute.
        overhead_ms (float): Mean cost of one session call.
        runtime_ms (float): The runtime's own work per predict (paid once per sample).
        entry_ms (np.ndarray): float64[K-1] each exit's cut on the next segment's side (mean), not paid by the
            samples leaving there.
    """

    segments: np.ndarray
    heads: np.ndarray
    overhead_ms: float
    runtime_ms: float
    entry_ms: np.ndarray

    @classmethod
    def from_table(cls, table: LatencyTable, runtime_ms: float = 0.0) -> "LatencyModel | None":
        """The model of ``table``, or None when its pieces carry no distributions (older tables)."""
        pieces = [p.stats.quantiles_ms for p in (*table.segments, *table.heads)]
        if any(q is None for q in pieces):
            return None
        over = table.overhead.mean_ms
        k = len(table.segments)
        quantiles = np.asarray(pieces, dtype=np.float64) - over
        cuts = np.asarray(table.cut_costs("mean"))  # charged to keeping the exit, as the mean model does
        entry = np.asarray(table.entry_costs("mean"))
        quantiles[: k - 1] -= (cuts - entry)[:, None]  # the rest of the cut, off the segment before
        quantiles[1:k] -= entry[:, None]  # the next segment's side, off it
        quantiles[k:] += cuts[:, None]
        return cls(quantiles[:k], quantiles[k:], float(over), float(runtime_ms), entry)

    def position_draws(self, exits: Sequence[int], draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
        """float64[m+1, draws]: latency draws (ms) of a sample leaving at each kept exit, the final last.

        Args:
            exits (Sequence[int]): Kept intermediate exits, ascending trace indices (m of them).
            draws (int): Draws per position. Defaults to :data:`DRAWS`.
            seed (int): Seed of the draws (the same pieces get the same draws for every design).
        """
        path, head = self._piece_draws(draws, seed)
        k = len(self.segments)
        out = np.empty((len(exits) + 1, draws))
        heads = np.full(draws, self.runtime_ms)
        for j, e in enumerate(exits):
            heads = heads + head[e] + self.overhead_ms
            out[j] = path[e] + heads - self.entry_ms[e]
        out[len(exits)] = path[k - 1] + heads + self.overhead_ms
        return out

    def _piece_draws(self, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The backbone's cumulative draws [K, draws] and the heads' draws [K-1, draws], made once per
        (draws, seed): they do not depend on the design, which every search round asks about."""
        cache = self.__dict__.setdefault("_draws", {})  # frozen: the cache lives beside the fields
        if (draws, seed) not in cache:
            rng = np.random.default_rng(seed)
            levels = np.linspace(0.0, 1.0, QUANTILES)
            seg = np.stack([np.interp(rng.random(draws), levels, q) for q in self.segments])  # [K, draws]
            head = np.stack([np.interp(rng.random(draws), levels, q) for q in self.heads]) if len(self.heads) \
                else seg[:0]
            cache[draws, seed] = (np.cumsum(seg, axis=0), head)  # backbone up to and including segment i
        return cache[draws, seed]

    def percentiles(self, exits: Sequence[int], exit_counts: Sequence[int],
                    stats: Sequence[str] = tuple(LEVELS)) -> dict[str, float]:
        """Predicted percentiles (ms) of a design whose samples leave at its positions in ``exit_counts``."""
        draws = self.position_draws(exits)
        weights = np.asarray(exit_counts, dtype=np.float64)
        weights = np.repeat(weights / weights.sum() / draws.shape[1], draws.shape[1])
        values = draws.ravel()
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weights[order])
        values = values[order]
        return {s: float(values[min(np.searchsorted(cumulative, LEVELS[s] - 1e-12), len(values) - 1)])
                for s in stats}
