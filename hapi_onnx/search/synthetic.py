"""Synthetic traces and latency tables with the shape of real ones, for tests and benchmarks.

Deeper exits are more accurate and more confident, a sample's difficulty is shared by all exits
(so exits agree the way heads on one backbone do), and every backbone segment and head has a
positive cost. Nothing here touches a model: it is for exercising and timing the search.
"""

import hashlib

import numpy as np

from hapi_onnx.profile.table import LatencyTable, PieceLatency, TimingStats
from hapi_onnx.trace import Trace


def synthetic_trace(
    num_intermediate: int,
    num_samples: int,
    *,
    seed: int = 0,
    num_classes: int = 10,
    decimals: int | None = None,
    model_fingerprint: str | None = None,
) -> Trace:
    """A random trace of ``num_intermediate`` intermediate exits plus a final classifier.

    Args:
        num_intermediate (int): Intermediate exits (K - 1).
        num_samples (int): N.
        seed (int): Random seed. Defaults to 0.
        num_classes (int): Classes. Defaults to 10.
        decimals (int | None): Round confidences to this many decimals (many exact ties), or keep
            full float32 precision. Defaults to None.
        model_fingerprint (str | None): Fingerprint to record. Defaults to one derived from the seed.
    """
    rng = np.random.default_rng(seed)
    k = num_intermediate + 1
    depth = np.arange(1, k + 1) / k
    skill = -1.0 + 4.5 * depth**0.7  # logit of being right, grows with depth
    difficulty = rng.normal(0.0, 1.0, size=num_samples)
    score = skill[:, None] - difficulty[None, :] + rng.normal(0.0, 0.5, size=(k, num_samples))
    correct = rng.random((k, num_samples)) < 1.0 / (1.0 + np.exp(-score))
    evidence = score + np.where(correct, 0.8, -0.8) + rng.normal(0.0, 0.6, size=(k, num_samples))
    conf = 1.0 / num_classes + (1.0 - 1.0 / num_classes) / (1.0 + np.exp(-1.5 * evidence))
    if decimals is not None:
        conf = np.round(conf, decimals)
    labels = rng.integers(0, num_classes, size=num_samples)
    wrong = (labels[None, :] + rng.integers(1, num_classes, size=(k, num_samples))) % num_classes
    names = [f"exit{i}" for i in range(num_intermediate)] + ["final"]
    return Trace(
        exit_names=names,
        tensors=[f"t{i}" for i in range(num_intermediate)] + ["logits"],
        labels=labels.astype(np.int64),
        pred=np.where(correct, labels[None, :], wrong).astype(np.int64),
        conf=conf.astype(np.float32),
        num_classes=num_classes,
        model_fingerprint=model_fingerprint or _fingerprint(seed),
    )


def synthetic_table(
    num_intermediate: int,
    *,
    seed: int = 0,
    overhead_ms: float = 0.02,
    backbone_ms: float = 2.0,
    model_fingerprint: str | None = None,
    jitter: float | None = None,
    cuts: bool = False,
) -> LatencyTable:
    """A latency table for the exits of :func:`synthetic_trace` with the same arguments.

    Args:
        num_intermediate (int): Intermediate exits (K - 1).
        seed (int): Random seed. Defaults to 0.
        overhead_ms (float): Per-call overhead. Defaults to 0.02.
        backbone_ms (float): Total backbone compute. Defaults to 2.0.
        model_fingerprint (str | None): Fingerprint to record. Defaults to one derived from the seed.
        jitter (float | None): Give every piece a measured-like distribution: its time is its
            mean times a lognormal factor of this sigma (mean 1), kept as quantiles. Defaults to
            None (summary statistics only).
        cuts (bool): Time fused segment pairs too (``boundaries``), so that cutting at each exit
            costs up to 1.5 times the smaller segment beside it (more than the segment before it
            at about a third of the exits). Defaults to False (cuts cost nothing beyond one call).
    """
    rng = np.random.default_rng(seed + 1_000_003)

    def stats(mean_ms: float) -> TimingStats:
        return _stats(mean_ms) if jitter is None else _jittered(mean_ms, jitter, rng)

    k = num_intermediate + 1
    seg = rng.uniform(0.5, 1.5, size=k)
    seg = seg / seg.sum() * backbone_ms
    heads = rng.uniform(0.01, 0.06, size=num_intermediate) * backbone_ms / 2.0
    names = [f"exit{i}" for i in range(num_intermediate)] + ["final"]
    boundaries = []
    if cuts:
        cut = rng.uniform(0.0, 1.5, size=num_intermediate) * np.minimum(seg[:-1], seg[1:])
        pair = seg[:-1] + seg[1:] + overhead_ms  # two segments and one call, fused
        boundaries = [PieceLatency(f"boundary{i}", [], [], stats(p - c))
                      for i, (p, c) in enumerate(zip(pair, cut, strict=True))]
    return LatencyTable(
        device="synthetic",
        preset={"name": "synthetic"},
        environment={"note": "synthetic costs, not measured"},
        model_fingerprint=model_fingerprint or _fingerprint(seed),
        batch_size=1,
        exit_names=names,
        segments=[PieceLatency(f"segment{i}", [], [], stats(c + overhead_ms)) for i, c in enumerate(seg)],
        heads=[PieceLatency(f"head{i}", [], [], stats(c + overhead_ms)) for i, c in enumerate(heads)],
        overhead=_stats(overhead_ms),
        monolithic=stats(backbone_ms * 0.97 + overhead_ms),
        boundaries=boundaries,
    )


def _stats(mean_ms: float) -> TimingStats:
    return TimingStats(
        n=100,
        warmup=10,
        mean_ms=float(mean_ms),
        p50_ms=float(mean_ms) * 0.99,
        p90_ms=float(mean_ms) * 1.05,
        p99_ms=float(mean_ms) * 1.2,
        std_ms=float(mean_ms) * 0.05,
        min_ms=float(mean_ms) * 0.9,
    )


def _jittered(mean_ms: float, sigma: float, rng: np.random.Generator) -> TimingStats:
    from hapi_onnx.profile.timing import stats_from_samples

    factors = rng.lognormal(-sigma * sigma / 2, sigma, size=5000)
    return stats_from_samples(np.maximum(mean_ms * factors, 0.0) * 1e6, warmup=10)


def _fingerprint(seed: int) -> str:
    return hashlib.sha256(f"synthetic-model-{seed}".encode()).hexdigest()
