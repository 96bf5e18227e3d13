"""The timing loop on real ORT sessions: accounting, stop rules, statistics (no speed assertions)."""

import functools
import gc

import numpy as np
import pytest
from onnx import TensorProto, helper

from hapi_onnx.errors import HapiError
from hapi_onnx.profile.presets import TimingPolicy, load_preset
from hapi_onnx.profile.timing import (
    median_interval,
    relative_precision,
    stats_from_samples,
    time_call,
    time_calls,
)


def _session(op: str = "Relu"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return load_preset("cpu-1t").create_session(model.SerializeToString())


class CountingCall:
    """A real session.run, counting how often the loop calls it."""

    def __init__(self, session):
        self.run = functools.partial(session.run, ["y"], {"x": np.ones((1, 16), np.float32)})
        self.count = 0
        self.gc_enabled_seen = set()

    def __call__(self):
        self.count += 1
        self.gc_enabled_seen.add(gc.isenabled())
        return self.run()


def test_median_interval_brackets_the_median_and_narrows_with_n():
    small = np.arange(1, 101, dtype=float)
    lo, hi = median_interval(small, 0.95)
    assert lo < 50.5 < hi
    assert 38 <= lo and hi <= 63
    big = np.linspace(1, 100, 10_000)
    lo2, hi2 = median_interval(big, 0.95)
    assert lo2 < 50.5 < hi2 and hi2 - lo2 < (hi - lo) / 5
    assert median_interval(small, 0.99)[1] - median_interval(small, 0.99)[0] > hi - lo


def test_relative_precision():
    assert relative_precision([1000] * 50, 0.95) == 0.0
    assert relative_precision([1000], 0.95) == float("inf")
    assert 0 < relative_precision(np.linspace(900, 1100, 200), 0.95) < 0.1


def test_stats_from_samples_converts_ns_to_ms():
    stats = stats_from_samples([1_000_000, 2_000_000, 3_000_000, 4_000_000], warmup=7)
    assert stats.n == 4 and stats.warmup == 7
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.p50_ms == pytest.approx(2.5)
    assert stats.min_ms == pytest.approx(1.0)
    assert stats.p90_ms <= stats.p99_ms <= 4.0
    assert stats.std_ms == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    with pytest.raises(HapiError, match="no runs"):
        stats_from_samples([], warmup=0)


def test_time_calls_accounts_for_every_run_and_keeps_order():
    policy = TimingPolicy(warmup_runs=5, warmup_s=0.0, min_runs=20, max_runs=200,
                          target_rel_precision=0.05, interval_level=0.95, time_budget_s=0.5)
    calls = [CountingCall(_session("Relu")), CountingCall(_session("Sigmoid"))]
    lines = []
    results = time_calls(calls, policy, names=["relu", "sigmoid"], progress=lines.append)
    assert len(results) == 2 and len(lines) == 2
    assert results[0].stats.n == results[1].stats.n  # lockstep: sampled over the same rounds
    assert {line.split("]")[1].split(":")[0].strip() for line in lines} == {"relu", "sigmoid"}
    for call, result in zip(calls, results, strict=True):
        s = result.stats
        assert call.count == s.warmup + s.n
        assert s.warmup >= 5
        assert 20 <= s.n <= 200
        assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
        assert s.min_ms <= s.mean_ms
        assert result.stop in {"precision", "budget", "max_runs"}
        if result.stop == "precision":
            assert max(result.rel_precision, result.mean_rel_precision) <= 0.05
        assert call.gc_enabled_seen == {False}
    assert gc.isenabled()


def test_max_runs_stops_an_unreachable_precision_target():
    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, min_runs=10, max_runs=30,
                          target_rel_precision=1e-12, interval_level=0.95, time_budget_s=60.0)
    result = time_call(CountingCall(_session()), policy)
    assert result.stop == "max_runs"
    assert result.stats.n == 30


def test_time_budget_stops_an_unreachable_precision_target():
    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, min_runs=10, max_runs=10_000_000,
                          target_rel_precision=1e-12, interval_level=0.95, time_budget_s=0.02)
    result = time_call(CountingCall(_session()), policy)
    assert result.stop == "budget"
    assert result.timed_s >= 0.02
    assert result.stats.n >= 10


def test_min_runs_are_made_even_past_the_budget():
    policy = TimingPolicy(warmup_runs=0, warmup_s=0.0, min_runs=40, max_runs=100,
                          target_rel_precision=1e-12, interval_level=0.95, time_budget_s=1e-9)
    result = time_call(CountingCall(_session()), policy)
    assert result.stats.n >= 40


def test_names_must_match_calls():
    with pytest.raises(HapiError, match="one name per call"):
        time_calls([CountingCall(_session())], TimingPolicy(), names=["a", "b"])
