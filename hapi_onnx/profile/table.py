"""The Latency table artifact: measured cost of every backbone segment and head on one device."""

from dataclasses import asdict, dataclass, field
from typing import Any

from hapi_onnx.artifact import JsonArtifact
from hapi_onnx.checks import finite_number
from hapi_onnx.errors import HapiError

QUANTILES = 101
"""Quantiles kept of each timing (0%, 1%, ..., 100%): the distribution the latency model samples."""


@dataclass(frozen=True)
class TimingStats:
    """Statistics of back-to-back timed session runs, in milliseconds (warm-up excluded).

    ``quantiles_ms`` keeps the whole distribution compactly (:data:`QUANTILES` evenly spaced
    quantiles), so percentiles of sums of pieces can be predicted with their jitter, not only
    from sums of means (:mod:`hapi_onnx.search.latency`).
    """

    n: int
    warmup: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    std_ms: float
    min_ms: float
    quantiles_ms: list[float] | None = None

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise HapiError(f"timing statistics need n >= 1 runs. Got n={self.n!r}.")
        for name in ("warmup", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "std_ms", "min_ms"):
            value = getattr(self, name)
            if not _non_negative(value):
                raise HapiError(f"timing statistic {name!r} must be a finite number >= 0. Got {value!r}.")
        q = self.quantiles_ms
        if q is not None and not (
            isinstance(q, list) and len(q) == QUANTILES and all(_non_negative(v) for v in q)
            and all(a <= b for a, b in zip(q, q[1:], strict=False))
        ):
            raise HapiError(f"timing quantiles must be {QUANTILES} non-decreasing numbers >= 0. Got {q!r}.")

    def stat(self, name: str) -> float:
        """The statistic ``name`` (``mean``, ``p50``, ``p90``, ``p99``) in ms."""
        return getattr(self, f"{name}_ms")


def _non_negative(value: Any) -> bool:
    return finite_number(value) and value >= 0


@dataclass(frozen=True)
class PieceLatency:
    """One timed piece of the model: a backbone segment or an exit head.

    Attributes:
        name (str): ``segment<k>`` or ``head<k>``; k is the exit the piece ends at / belongs to.
        inputs (list[str]): Tensors the piece reads.
        outputs (list[str]): Tensors the piece produces.
        stats (TimingStats): Whole ``session.run`` timings, per-call overhead included.
    """

    name: str
    inputs: list[str]
    outputs: list[str]
    stats: TimingStats

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise HapiError(f"a timed piece needs a name. Got {self.name!r}.")
        for field_name in ("inputs", "outputs"):
            if not _names(getattr(self, field_name)):
                raise HapiError(f"piece {self.name!r}: {field_name} must be a list of tensor names. "
                                f"Got {getattr(self, field_name)!r}.")
        if not isinstance(self.stats, TimingStats):
            raise HapiError(f"piece {self.name!r}: stats must be timing statistics. Got {self.stats!r}.")


@dataclass(frozen=True)
class LatencyTable(JsonArtifact):
    """Measured costs of an over-provisioned model's pieces on one device preset.

    ``segments[k]`` is the backbone from exit ``k-1`` (the model input for k=0) to exit ``k``;
    the last segment ends at the final classifier's output. ``heads[k]`` is the head of
    intermediate exit ``k`` (there is none for the final classifier). ``overhead`` times a
    trivial graph: the fixed cost of one ``session.run``, included in every other timing.

    Attributes:
        device (str): Preset name or path the table was measured with.
        preset (dict): The preset's contents (providers, options, threads, ...).
        environment (dict): ORT version, providers, CPU model, threads, Python, platform.
        model_fingerprint (str): sha256 of the over-provisioned model profiled.
        batch_size (int): Batch size of every timed run.
        exit_names (list[str]): Exits in order, final classifier last (as in the Trace).
        segments (list[PieceLatency]): One per exit.
        heads (list[PieceLatency]): One per intermediate exit.
        boundaries (list[PieceLatency]): ``boundary<k>``, segments ``k`` and ``k + 1`` fused in one
            session, one per intermediate exit (empty in tables that did not time them): see
            :meth:`cut_costs`.
        overhead (TimingStats): Per-call overhead of a session run.
        monolithic (TimingStats): The original model (no heads) in one session, for reference.
    """

    KIND = "hapi-onnx latency table"
    FORMAT_VERSION = 2

    device: str
    preset: dict[str, Any]
    environment: dict[str, Any]
    model_fingerprint: str
    batch_size: int
    exit_names: list[str]
    segments: list[PieceLatency]
    heads: list[PieceLatency]
    overhead: TimingStats
    monolithic: TimingStats
    extra: dict[str, Any] = field(default_factory=dict)
    boundaries: list[PieceLatency] = field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise HapiError(f"Latency table batch_size must be an int >= 1. Got {self.batch_size!r}.")
        for name, kind in (("device", str), ("model_fingerprint", str), ("preset", dict), ("environment", dict),
                           ("extra", dict)):
            if not isinstance(getattr(self, name), kind):
                raise HapiError(f"Latency table {name} must be a {kind.__name__}. Got {getattr(self, name)!r}.")
        if not _names(self.exit_names) or not self.exit_names:
            raise HapiError(f"Latency table exit_names must be a list of names. Got {self.exit_names!r}.")
        pieces = (self.segments, self.heads, self.boundaries)
        if not all(isinstance(p, list | tuple) and all(isinstance(q, PieceLatency) for q in p) for p in pieces):
            raise HapiError("Latency table segments, heads and boundaries must be lists of timed pieces.")
        if not isinstance(self.overhead, TimingStats) or not isinstance(self.monolithic, TimingStats):
            raise HapiError("Latency table overhead and monolithic must be timing statistics.")
        k = len(self.exit_names)
        if len(self.segments) != k or len(self.heads) != k - 1:
            raise HapiError(
                f"Latency table for {k} exits needs {k} segments and {k - 1} heads. "
                f"Got {len(self.segments)} segments and {len(self.heads)} heads."
            )
        if len(self.boundaries) not in (0, k - 1):
            raise HapiError(
                f"Latency table for {k} exits needs {k - 1} boundaries (or none). Got {len(self.boundaries)}."
            )

    def segment_costs(self, stat: str = "mean") -> list[float]:
        """Compute time of each segment in ms, per-call overhead removed (never below 0)."""
        over = self.overhead.stat(stat)
        return [max(p.stats.stat(stat) - over, 0.0) for p in self.segments]

    def head_costs(self, stat: str = "mean") -> list[float]:
        """Compute time of each intermediate head in ms, per-call overhead removed (never below 0)."""
        over = self.overhead.stat(stat)
        return [max(p.stats.stat(stat) - over, 0.0) for p in self.heads]

    def cut_costs(self, stat: str = "mean") -> list[float]:
        """What cutting the backbone at each intermediate exit's tensor costs beyond one session call, in ms.

        Segments ``k`` and ``k + 1`` cost more apart than fused (``boundary<k>``) by one call and by
        the work a session adds at its inputs and outputs (ONNX Runtime converts layouts there,
        e.g. to and from NCHWc): a bundle pays it only where a stage ends, i.e. at the exits it
        keeps. Never below 0; all 0 for a table without boundaries.
        """
        if not self.boundaries:
            return [0.0] * len(self.heads)
        over = self.overhead.stat(stat)
        return [
            max(a.stats.stat(stat) + b.stats.stat(stat) - pair.stats.stat(stat) - over, 0.0)
            for a, b, pair in zip(self.segments, self.segments[1:], self.boundaries, strict=False)
        ]

    def entry_costs(self, stat: str = "mean") -> list[float]:
        """The part of each cut (ms) that lies on the next segment's side: beyond the segment before it.

        A cut is paid at the output of the segment before it and the input of the one after (each
        timed apart pays its side). Where a cut costs more than the whole segment before it (a
        small segment whose next one converts a large map), at least the excess is the next
        segment's: a sample leaving at that exit never pays it, the samples going on do.
        Between 0 and :meth:`cut_costs`.
        """
        return [max(cut - seg, 0.0) for cut, seg in zip(self.cut_costs(stat), self.segment_costs(stat), strict=False)]

    @property
    def fingerprint(self) -> str:
        """sha256 over the table's contents, recorded in designs that used it."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyTable":
        return cls(**{
            **data,
            "segments": [_piece(p) for p in data["segments"]],
            "heads": [_piece(p) for p in data["heads"]],
            "boundaries": [_piece(p) for p in data.get("boundaries", [])],
            "overhead": TimingStats(**data["overhead"]),
            "monolithic": TimingStats(**data["monolithic"]),
        })


def _names(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


def _piece(data: dict[str, Any]) -> PieceLatency:
    return PieceLatency(data["name"], data["inputs"], data["outputs"], TimingStats(**data["stats"]))
