"""The search problem: a trace and a latency table turned into exact integer costs and outcomes.

Every optimiser and the evaluator read the same :class:`SearchProblem`, so they agree to the last
bit: piece costs are rounded once to whole nanoseconds (far below measurement noise) and every
sum after that is integer arithmetic. Two designs with the same outcome therefore tie exactly,
whichever algorithm scored them, and ties are broken by the documented order in
:mod:`hapi_onnx.search.optimise`.

Cost model (the bundle and runtime are built to match it: one ONNX session per kept exit).
A design keeps intermediate exits ``s_0 < ... < s_{m-1}`` and always the final classifier.
Stage ``j`` runs backbone segments ``(s_{j-1}, s_j]`` plus head ``s_j`` in one session call, so a
sample leaving at kept exit ``j`` costs::

    sum(seg[i] for i <= s_j) + sum(head[s_i] for i <= j) + (j + 1) * overhead

and a sample reaching the final classifier costs ``sum(seg) + sum(kept heads) + (m + 1) * overhead``.
Piece costs are :meth:`LatencyTable.segment_costs` / :meth:`~LatencyTable.head_costs` of the mean
(per-call overhead removed) and ``overhead.mean_ms``. Cutting the backbone at an exit's tensor
costs more than one call (:meth:`~LatencyTable.cut_costs`: the layout conversions a session does
at its inputs and outputs); a stage that fuses several segments does not pay it inside, so it is
taken off the segment before it and charged to keeping that exit, with its head (``head[k]`` is
the exit's keep-cost). Where a cut costs more than the whole segment before it, the excess lies on
the next segment's input side (:meth:`~LatencyTable.entry_costs`): it comes off that segment, and
a sample leaving at kept exit ``s_j`` does not pay it (``entry[s_j]``: the next stage never runs),
so its position cost is the sum above minus ``entry[s_j]``. The runtime's own per-``predict``
work (the Python between stages, measured by the profiler as ``extra["runtime"]["per_predict_ms"]``
where the batch-1 runtime path applies) is paid once per sample, so it is added to ``seg[0]``.

Latency statistics over the search samples: the mean, and nearest-rank percentiles ``p50``,
``p90``, ``p99``: the ``ceil(q * N)``-th smallest per-sample latency (a latency that at least a
fraction q of the samples do not exceed; always one of the samples' own latencies).
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from hapi_onnx.checks import finite_number
from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import QUANTILES, LatencyTable
from hapi_onnx.search.constraints import PERCENTILES
from hapi_onnx.search.latency import LatencyModel, position_quantiles
from hapi_onnx.trace import Trace

PERCENTILE_LEVELS = {"p50": 50, "p90": 90, "p99": 99}
NS_PER_MS = 1_000_000


def check_stat(stat: str) -> str:
    """Return ``stat`` if it is a latency statistic the search knows.

    Raises:
        HapiError: when it is not one of ``mean``, ``p50``, ``p90``, ``p99``.
    """
    if stat not in PERCENTILES:
        raise HapiError(f"The latency statistic must be one of {', '.join(PERCENTILES)}. Got {stat!r} instead.")
    return stat


def percentile_rank(stat: str, num_samples: int) -> int:
    """1-based rank of the nearest-rank percentile ``stat`` among ``num_samples`` sorted latencies."""
    pct = PERCENTILE_LEVELS[stat]
    return max(1, -(-pct * num_samples // 100))


def ms_from_ns(value: float) -> float:
    """Milliseconds from nanoseconds."""
    return float(value) / NS_PER_MS


@dataclass(frozen=True, eq=False)
class SearchProblem:
    """What the search needs from a trace and a latency table, validated and in integer ns.

    Exit indices are the trace's: ``0 .. K-2`` intermediate, ``K-1`` the final classifier.

    Attributes:
        exit_names (tuple[str, ...]): All K exit names, final classifier last.
        candidates (tuple[int, ...]): Intermediate exits the search may keep, ascending.
        conf (np.ndarray): float32[K-1, N] max-softmax confidence of every intermediate exit.
        correct (np.ndarray): bool[K, N] whether each exit's top-1 class is right (against the
            labels), or is the final classifier's (``reference="final"``: then the final
            classifier is always "right" and a drop is a disagreement).
        seg_ns (np.ndarray): int64[K] compute time of each backbone segment.
        head_ns (np.ndarray): int64[K-1] compute time of each intermediate head, plus its cut.
        entry_ns (np.ndarray): int64[K-1] each exit's cut on the next segment's side, which a sample leaving
            there does not pay.
        overhead_ns (int): Cost of one session call.
        monolithic_ms (float): Measured mean latency of the original model in one session.
        trace_fingerprint (str): :attr:`Trace.fingerprint` of the trace.
        latency_fingerprint (str): :attr:`LatencyTable.fingerprint` of the table.
        model_fingerprint (str): The over-provisioned model both were taken on.
        device (str): Device preset of the latency table.
        latency_model (LatencyModel | None): The backbone's measured jitter, for percentile
            predictions (:mod:`hapi_onnx.search.latency`); None for a table without distributions.
    """

    exit_names: tuple[str, ...]
    candidates: tuple[int, ...]
    conf: np.ndarray
    correct: np.ndarray
    seg_ns: np.ndarray
    head_ns: np.ndarray
    entry_ns: np.ndarray
    overhead_ns: int
    monolithic_ms: float
    trace_fingerprint: str = ""
    latency_fingerprint: str = ""
    model_fingerprint: str = ""
    device: str = ""
    latency_model: LatencyModel | None = None

    @classmethod
    def from_artifacts(
        cls,
        trace: Trace,
        table: LatencyTable,
        candidates: Sequence[str | int] | None = None,
        reference: str = "labels",
    ) -> "SearchProblem":
        """Check that ``trace`` and ``table`` describe the same model and build the problem.

        Args:
            trace (Trace): Calibration trace (the search data).
            table (LatencyTable): Latency table of the same over-provisioned model.
            candidates (Sequence[str | int] | None): Intermediate exits (names or indices) the
                search may keep. Defaults to None: all of them.
            reference (str): ``labels`` (right = the true class) or ``final`` (right = the final
                classifier's class). Defaults to "labels".

        Raises:
            HapiError: when the two come from different models or exits, a candidate is unknown,
                or the trace has no labels and ``reference`` is ``labels``.
        """
        if trace.model_fingerprint != table.model_fingerprint:
            raise HapiError(
                "The trace and the latency table come from different models: trace model fingerprint "
                f"{trace.model_fingerprint[:12]}..., latency table {table.model_fingerprint[:12]}.... "
                "Calibrate and profile the same over-provisioned model (ee.onnx)."
            )
        if list(trace.exit_names) != list(table.exit_names):
            raise HapiError(
                f"The trace's exits {list(trace.exit_names)} differ from the latency table's "
                f"{list(table.exit_names)}. Calibrate and profile the same over-provisioned model."
            )
        if table.batch_size != 1:
            raise HapiError(
                f"The latency table was measured at batch size {table.batch_size!r}; the search models "
                "single-stream latency (one sample at a time). Re-run profile with --batch-size 1."
            )
        if not table.overhead.mean_ms > 0:
            raise HapiError(
                f"The latency table's per-call overhead must be positive. Got {table.overhead.mean_ms!r} ms; "
                "re-run profile."
            )
        conf = np.minimum(np.asarray(trace.conf, dtype=np.float32), np.float32(1.0))  # Trace checked [0, 1]
        return cls(
            exit_names=tuple(trace.exit_names),
            candidates=resolve_candidates(trace.exit_names, candidates),
            conf=np.ascontiguousarray(conf[:-1]),
            correct=np.ascontiguousarray(trace.agreement if reference == "final" else trace.correct),
            seg_ns=_ns(_segment_costs(table)),
            latency_model=LatencyModel.from_table(table),
            head_ns=_ns(_exit_costs(table)),
            entry_ns=_ns(table.entry_costs("mean")),
            overhead_ns=int(_ns([table.overhead.mean_ms])[0]),
            monolithic_ms=float(table.monolithic.mean_ms),
            trace_fingerprint=trace.fingerprint,
            latency_fingerprint=table.fingerprint,
            model_fingerprint=trace.model_fingerprint,
            device=table.device,
        )

    @property
    def num_exits(self) -> int:
        """K, exits including the final classifier."""
        return len(self.exit_names)

    @property
    def num_samples(self) -> int:
        """N, samples in the search data."""
        return self.correct.shape[1]

    @property
    def final_correct(self) -> int:
        """How many samples the final classifier gets right."""
        return int(self.correct[-1].sum())

    def subset(self, mask: np.ndarray) -> "SearchProblem":
        """The same problem (exits, costs) on the samples where ``mask`` is True (or at these indices)."""
        return replace(
            self,
            conf=np.ascontiguousarray(self.conf[:, mask]),
            correct=np.ascontiguousarray(self.correct[:, mask]),
        )

    def exit_tuple(self, exits: Sequence[str | int]) -> tuple[int, ...]:
        """Kept intermediate exits as ascending trace indices, validated.

        Args:
            exits (Sequence[str | int]): Names or indices of intermediate exits; a trailing final
                classifier (name or index) is accepted and dropped.

        Raises:
            HapiError: when an exit is unknown, repeated or out of depth order.
        """
        idx = [_exit_index(self.exit_names, e) for e in exits]
        if idx and idx[-1] == self.num_exits - 1:
            idx = idx[:-1]
        if any(i == self.num_exits - 1 for i in idx):
            raise HapiError("The final classifier can only be the last exit of a design.")
        if any(a >= b for a, b in zip(idx, idx[1:], strict=False)):
            raise HapiError(f"Exits must be distinct and in depth order. Got {list(exits)!r} instead.")
        return tuple(idx)

    @functools.cached_property
    def step_ns(self) -> np.ndarray:
        """int64[K-1] what keeping each intermediate exit adds to every position from it on: its head and a call."""
        return self.head_ns + self.overhead_ns

    @functools.cached_property
    def leave_ns(self) -> np.ndarray:
        """int64[K-1] leaving at each intermediate exit, kept heads and calls apart: the backbone up to it,
        less its cut's part on the next segment's side (paid only by the samples going on)."""
        return np.cumsum(self.seg_ns)[:-1] - self.entry_ns

    @functools.cached_property
    def final_ns(self) -> int:
        """Reaching the final classifier, kept heads and their calls apart: the whole backbone and its call."""
        return int(self.seg_ns.sum()) + self.overhead_ns

    def position_costs(self, exits: Sequence[int]) -> np.ndarray:
        """int64[m+1] latency in ns of a sample leaving at each kept exit, the final classifier last.

        Args:
            exits (Sequence[int]): Kept intermediate exits, ascending trace indices.
        """
        exits = np.asarray(exits, dtype=np.int64)
        heads = np.cumsum(self.step_ns[exits])
        costs = np.empty(len(exits) + 1, dtype=np.int64)
        costs[:-1] = self.leave_ns[exits] + heads
        costs[-1] = self.final_ns + (heads[-1] if len(exits) else 0)
        return costs

    def ends(self, exits: Sequence[int]) -> np.ndarray:
        """int64[m+1] the trace exit each position ends at: the kept exits, then the final classifier."""
        return np.asarray((*exits, self.num_exits - 1), dtype=np.int64)

    def percentiles(self, exits: Sequence[int], exit_counts: Sequence[int], stats: Sequence[str]) -> dict[str, float]:
        """Predicted latency percentiles (ms) of a design keeping ``exits`` whose samples leave at its
        positions in ``exit_counts``: with the backbone's jitter (:mod:`.latency`), or the nearest-rank
        percentiles of the path costs for a table without distributions."""
        costs = self.position_costs(exits)
        if self.latency_model is not None:
            return self.latency_model.percentiles(self.ends(exits), costs / NS_PER_MS, exit_counts, stats)
        counts = np.asarray(exit_counts, dtype=np.int64)
        return {s: ms_from_ns(costs[np.argmax(np.cumsum(counts) >= percentile_rank(s, int(counts.sum())))])
                for s in stats}

    def position_draws(self, exits: Sequence[int]) -> np.ndarray:
        """float64[m+1, D] latency draws (ms) of leaving at each position (needs a latency model)."""
        return self.latency_model.position_draws(self.ends(exits), self.position_costs(exits) / NS_PER_MS)

    def position_records(self, exits: Sequence[int]) -> list[dict]:
        """What the design records of each position (kept exits, the final classifier last): its exit,
        the mean latency of leaving there and its distribution (:data:`~.latency.QUANTILES` quantiles,
        ms), and where the numbers come from (``pieces``: summed from the latency table's timed pieces).
        :func:`~.latency.mixture_stats` re-computes a prediction from them for any exit counts."""
        costs = self.position_costs(exits) / NS_PER_MS
        if self.latency_model is not None:
            quantiles = position_quantiles(self.position_draws(exits))
        else:
            quantiles = np.repeat(costs[:, None], QUANTILES, axis=1)
        return [{"exit": name, "mean_ms": float(c), "quantiles_ms": [round(float(v), 7) for v in q],
                 "source": "pieces"}
                for name, c, q in zip(self.names(exits), costs, quantiles, strict=True)]

    def within(self, exits: Sequence[int], limit_ms: float) -> np.ndarray:
        """int64[m+1] how many of each position's latency draws are <= ``limit_ms`` (needs a latency model)."""
        return self.latency_model.within(self.ends(exits), self.position_costs(exits) / NS_PER_MS, limit_ms)

    def names(self, exits: Sequence[int]) -> list[str]:
        """Names of kept intermediate exits followed by the final classifier's."""
        return [self.exit_names[i] for i in exits] + [self.exit_names[-1]]


def _segment_costs(table: LatencyTable) -> list[float]:
    """Segment costs as a stage pays them: the cuts at either end removed (charged to keeping those
    exits, :func:`_exit_costs`), the runtime's per-predict work on the first segment (paid once)."""
    entry = table.entry_costs("mean")
    out = [cut - e for cut, e in zip(table.cut_costs("mean"), entry, strict=True)] + [0.0]
    entry = [0.0, *entry]
    costs = [max(c - o - i, 0.0) for c, o, i in zip(table.segment_costs("mean"), out, entry, strict=True)]
    costs[0] += _runtime_cost(table)
    return costs


def _exit_costs(table: LatencyTable) -> list[float]:
    """What keeping each intermediate exit costs: its head, and cutting the backbone there."""
    return [h + cut for h, cut in zip(table.head_costs("mean"), table.cut_costs("mean"), strict=True)]


def _runtime_cost(table: LatencyTable) -> float:
    """The runtime's own work per predict (ms) the profiler measured, else 0."""
    runtime = table.extra.get("runtime") or {}
    per_predict = runtime.get("per_predict_ms") if isinstance(runtime, dict) else None
    return float(per_predict) if finite_number(per_predict) and per_predict > 0 else 0.0


def resolve_candidates(exit_names: Sequence[str], candidates: Sequence[str | int] | None) -> tuple[int, ...]:
    """Ascending indices of the intermediate exits named by ``candidates`` (all when None).

    Raises:
        HapiError: when a candidate is unknown, repeated, or the final classifier.
    """
    if candidates is None:
        return tuple(range(len(exit_names) - 1))
    idx = [_exit_index(exit_names, c) for c in candidates]
    if len(set(idx)) != len(idx):
        raise HapiError(f"Candidate exits must be distinct. Got {list(candidates)!r} instead.")
    if len(exit_names) - 1 in idx:
        raise HapiError(
            f"Candidate exits are intermediate exits; the final classifier {exit_names[-1]!r} is always kept."
        )
    return tuple(sorted(idx))


def _exit_index(exit_names: Sequence[str], exit: str | int) -> int:
    if isinstance(exit, (int, np.integer)) and not isinstance(exit, bool):
        if 0 <= exit < len(exit_names):
            return int(exit)
        raise HapiError(f"Exit index must be in 0..{len(exit_names) - 1}. Got {exit!r} instead.")
    if isinstance(exit, str) and exit in exit_names:
        return list(exit_names).index(exit)
    raise HapiError(f"Unknown exit {exit!r}. The exits are: {', '.join(exit_names)}.")


def _ns(values_ms: Sequence[float]) -> np.ndarray:
    ns = np.rint(np.asarray(values_ms, dtype=np.float64) * NS_PER_MS)
    if not np.all(np.isfinite(ns)) or np.any(ns < 0):
        raise HapiError(f"Latency table costs must be finite and non-negative. Got {list(values_ms)!r}.")
    return ns.astype(np.int64)
