"""The timing loop: warm-up excluded, back-to-back calls, run until the median is known well enough.

Follows onnxruntime_perf_test / MLPerf single-stream practice: each sample is one whole call
(``session.run``) timed with ``time.perf_counter_ns``, after untimed warm-up runs. Several calls
(the pieces of a model) are timed together in lockstep rounds, every call in every round until
the loop ends, so all of them are sampled over the same stretch of time: slow drift of a noisy
machine (frequency scaling, other processes coming and going) hits every piece alike, and
their means stay comparable and additive. Garbage collection is off while timing. The loop ends
once, for every call, the distribution-free confidence interval of its median and the
confidence interval of its mean (the statistic path latencies are summed from) are both
narrower than the target precision; or when the time budget (per call, pooled) is spent after
``min_runs``; or at ``max_runs``.

Needs numpy and the standard library only.
"""

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hapi_onnx.errors import HapiError
from hapi_onnx.profile.presets import TimingPolicy
from hapi_onnx.profile.table import QUANTILES, TimingStats

# Most back-to-back runs of one call in a round when ``burst_s`` > 0.
MAX_BURST = 64
# Stop rules are checked after rounds adding up to this much timed work (not after every round).
CHECK_EVERY_S = 0.02


@dataclass(frozen=True)
class TimingResult:
    """The timings of one call and how the loop ended for it.

    Attributes:
        stats (TimingStats): Statistics of the timed runs, in ms.
        rel_precision (float): Half-width of the median's confidence interval over the median.
        mean_rel_precision (float): Half-width of the mean's confidence interval (normal
            approximation, z * std / sqrt(n)) over the mean.
        stop (str): ``precision`` (target met), else why timing ended: ``budget`` (time budget
            spent) or ``max_runs``.
        timed_s (float): Seconds spent in this call's timed runs.
    """

    stats: TimingStats
    rel_precision: float
    mean_rel_precision: float
    stop: str
    timed_s: float


def median_interval(sorted_ns: np.ndarray, confidence: float) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from sorted samples (order statistics).

    Uses the normal approximation of the binomial rank distribution: ranks
    ``n/2 -+ z*sqrt(n)/2``, rounded outwards (conservative).

    Args:
        sorted_ns (np.ndarray): Samples in ascending order (at least 1).
        confidence (float): Confidence level, e.g. 0.95.

    Returns:
        tuple[float, float]: Lower and upper bound.
    """
    n = len(sorted_ns)
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)) - 1, 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    return float(sorted_ns[lo]), float(sorted_ns[hi])


def relative_precision(samples_ns: Sequence[int] | np.ndarray, confidence: float) -> float:
    """Half-width of the median's confidence interval relative to the median (inf if undefined)."""
    data = np.sort(np.asarray(samples_ns, dtype=np.float64))
    if len(data) < 2:
        return math.inf
    median = float(np.median(data))
    lo, hi = median_interval(data, confidence)
    return (hi - lo) / 2 / median if median > 0 else math.inf


def stats_from_samples(samples_ns: Sequence[int] | np.ndarray, warmup: int) -> TimingStats:
    """:class:`TimingStats` in ms from per-run durations in nanoseconds.

    Raises:
        HapiError: when there are no samples.
    """
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        raise HapiError("Cannot summarise a timing with no runs; time at least one run.")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return TimingStats(
        n=int(ms.size),
        warmup=int(warmup),
        mean_ms=float(ms.mean()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        std_ms=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        min_ms=float(ms.min()),
        quantiles_ms=[float(v) for v in np.quantile(ms, np.linspace(0.0, 1.0, QUANTILES))],
    )


def time_calls(
    calls: Sequence[Callable[[], object]],
    policy: TimingPolicy,
    names: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    burst_s: float = 0.0,
) -> list[TimingResult]:
    """Time several zero-argument calls together, in lockstep rounds.

    Every call is warmed up first (``policy.warmup_runs`` runs and ``policy.warmup_s`` seconds,
    at least one run, at most the time budget). Then each round runs every call, in the order
    given but starting at a random one (a rotation), for a burst of back-to-back runs lasting
    about ``burst_s``. The loop ends when every call meets the precision target, when the timed
    runs add up to ``policy.time_budget_s`` times the number of calls (after ``min_runs``), or
    at ``policy.max_runs``.

    Args:
        calls (Sequence[Callable]): The calls, e.g. ``functools.partial(session.run, None, feeds)``.
        policy (TimingPolicy): Warm-up, run counts, precision target, time budget per call.
        names (Sequence[str] | None): Names for progress lines. Defaults to ``call<i>``.
        progress (Callable[[str], None] | None): Receives one line per call: when it first meets
            the precision target, or when the loop ends without it.
        burst_s (float): Length of one call's burst in a round. ``0`` runs each call once per
            round, so every call follows the previous one in the list, as the stages of a
            pipeline do (how the profiler times pieces). Defaults to 0.

    Returns:
        list[TimingResult]: One per call, in the order given; ``stop`` is ``precision`` for a
        call that met the target, else why the loop ended (``budget`` or ``max_runs``).
    """
    names = list(names) if names is not None else [f"call{i}" for i in range(len(calls))]
    if len(names) != len(calls):
        raise HapiError(f"time_calls got {len(calls)} calls but {len(names)} names; give one name per call.")
    samples: list[list[int]] = [[] for _ in calls]
    met = [False] * len(calls)
    reported = 0
    width = len(str(len(calls)))

    def report(i: int, why: str) -> None:
        nonlocal reported
        reported += 1
        if progress is not None:
            ms = np.median(samples[i]) / 1e6
            progress(f"[{reported:>{width}}/{len(calls)}] {names[i]}: p50 {ms:.4f} ms after {len(samples[i])} "
                     f"runs ({why})")

    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        warmups, bursts = _warm_up_all(calls, policy, burst_s)
        reason = _rounds(calls, bursts, policy, samples, met, report)
    finally:
        if gc_was_enabled:
            gc.enable()
    for i in range(len(calls)):
        if not met[i]:
            report(i, f"{reason}, precision not reached")
    return [
        TimingResult(
            stats=stats_from_samples(out, warmups[i]),
            rel_precision=relative_precision(out, policy.interval_level),
            mean_rel_precision=mean_relative_precision(out, policy.interval_level),
            stop="precision" if met[i] else reason,
            timed_s=sum(out) / 1e9,
        )
        for i, out in enumerate(samples)
    ]


def _warm_up_all(calls: Sequence[Callable[[], object]], policy: TimingPolicy,
                 burst_s: float) -> tuple[list[int], list[int]]:
    """Warm every call up; its warm-up run count, and its runs per burst (about ``burst_s`` long)."""
    warmups, bursts = [], []
    for call in calls:
        runs, typical_ns = _warm_up(call, policy)
        warmups.append(runs)
        bursts.append(int(min(max(burst_s * 1e9 // max(typical_ns, 1), 1), MAX_BURST)))
    return warmups, bursts


def _rounds(calls: Sequence[Callable[[], object]], bursts: list[int], policy: TimingPolicy,
            samples: list[list[int]], met: list[bool], report: Callable[[int, str], None]) -> str:
    """Run lockstep rounds until the policy stops them; append each run's ns to ``samples``, mark
    the calls that met the precision target in ``met`` (reporting each), return why they ended."""
    clock = time.perf_counter_ns
    budget_ns = policy.time_budget_s * 1e9 * len(calls)
    spent = 0
    next_check = CHECK_EVERY_S * 1e9
    reason = ""
    rotation = np.random.default_rng(0)
    while not reason:
        # Each round starts at a random call (order otherwise kept), so no call sits at a
        # fixed position in a round that could beat with the scheduler's periodic slices.
        first = int(rotation.integers(len(calls)))
        for i in [*range(first, len(calls)), *range(first)]:
            call, out = calls[i], samples[i]
            runs = min(bursts[i], policy.max_runs - len(out))
            for _ in range(runs):
                start = clock()
                call()
                out.append(clock() - start)
            if runs > 0:
                spent += sum(out[-runs:])
        full = any(len(out) >= policy.max_runs for out in samples)
        if spent < next_check and not full:
            continue
        # Checks get rarer as the loop goes on (every +25%), so they cost little wall time.
        next_check = max(spent * 1.25, spent + CHECK_EVERY_S * 1e9)
        if min(len(out) for out in samples) < policy.min_runs:
            continue
        for i in range(len(calls)):
            if not met[i] and _precise(samples[i], policy):
                met[i] = True
                report(i, "precision reached")
        if all(met):
            reason = "precision"
        elif full:
            reason = "max_runs"
        elif spent >= budget_ns:
            reason = "budget"
    return reason


def time_call(call: Callable[[], object], policy: TimingPolicy) -> TimingResult:
    """Time one zero-argument call (see :func:`time_calls`)."""
    return time_calls([call], policy)[0]


def _warm_up(call: Callable[[], object], policy: TimingPolicy) -> tuple[int, float]:
    """Run ``call`` untimed; return the number of runs and a typical duration in ns."""
    clock = time.perf_counter_ns
    cap_ns = max(policy.warmup_s, policy.time_budget_s) * 1e9
    want_ns = policy.warmup_s * 1e9
    durations: list[int] = []
    begin = clock()
    while True:
        start = clock()
        call()
        durations.append(clock() - start)
        elapsed = clock() - begin
        if len(durations) >= policy.warmup_runs and elapsed >= want_ns:
            break
        if elapsed >= cap_ns:
            break
    return len(durations), float(np.median(durations[-10:]))


def mean_relative_precision(samples_ns: Sequence[int] | np.ndarray, confidence: float) -> float:
    """Half-width of the mean's normal-approximation confidence interval over the mean."""
    data = np.asarray(samples_ns, dtype=np.float64)
    if len(data) < 2 or data.mean() <= 0:
        return math.inf
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return float(z * data.std(ddof=1) / math.sqrt(len(data)) / data.mean())


def _precise(samples: list[int], policy: TimingPolicy) -> bool:
    """Whether both the median's and the mean's confidence intervals meet the target."""
    target = policy.target_rel_precision
    return (relative_precision(samples, policy.interval_level) <= target
            and mean_relative_precision(samples, policy.interval_level) <= target)
