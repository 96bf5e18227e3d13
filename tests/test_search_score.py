"""Search evaluator: matches a naive per-sample loop over the cost model, and rejects bad input."""

import math

import numpy as np
import pytest

from hapi_onnx.choice import choices_from
from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import LatencyTable, PieceLatency, TimingStats
from hapi_onnx.search import score_design
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.score import batch_metrics, keys_from_counts, score_problem, sweep_threshold
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace
from hapi_onnx.trace import Trace


def artifacts(num_intermediate=6, n=300, seed=0, decimals=None):
    """A realistic random trace + latency table: deeper exits more accurate, costs grow with depth."""
    trace = synthetic_trace(num_intermediate, n, seed=seed, decimals=decimals)
    return trace, synthetic_table(num_intermediate, seed=seed)


def naive(trace, table, exits, thresholds):
    """The cost model of the brief, one sample at a time in plain Python floats (ms)."""
    seg, head, over = table.segment_costs("mean"), table.head_costs("mean"), table.overhead.mean_ms
    costs, right, where = [], 0, []
    for n in range(len(trace.labels)):
        for j, k in enumerate(exits):
            if trace.conf[k, n] >= np.float32(thresholds[j]):
                costs.append(sum(seg[: k + 1]) + sum(head[exits[i]] for i in range(j + 1)) + (j + 1) * over)
                right += int(trace.pred[k, n] == trace.labels[n])
                where.append(j)
                break
        else:
            costs.append(sum(seg) + sum(head[e] for e in exits) + (len(exits) + 1) * over)
            right += int(trace.pred[-1, n] == trace.labels[n])
            where.append(len(exits))
    return np.array(costs), right, np.array(where)


def pick(exits, thresholds):
    """A design's exits from trace indices or names (synthetic traces name exit i ``exit<i>``)."""
    names = [e if isinstance(e, str) else f"exit{e}" for e in exits]
    return choices_from(names, thresholds)


def naive_losses_gains(trace, exits, where):
    """Samples the design gets wrong that the final classifier gets right, and the reverse."""
    losses = gains = 0
    for n, j in enumerate(where):
        at = exits[j] if j < len(exits) else -1
        mine, final = trace.pred[at, n] == trace.labels[n], trace.pred[-1, n] == trace.labels[n]
        losses += int(final and not mine)
        gains += int(mine and not final)
    return losses, gains


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_evaluate_matches_naive_loop(seed):
    trace, table = artifacts(seed=seed, decimals=2 if seed % 2 else None)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        m = int(rng.integers(0, 7))
        exits = sorted(rng.choice(6, size=m, replace=False).tolist())
        thresholds = rng.uniform(0.2, 1.0, size=m).round(2).tolist()
        ev = score_design(trace, table, pick(exits, thresholds), keep_positions=True)
        costs, right, where = naive(trace, table, exits, thresholds)
        n = len(costs)
        assert ev.correct == right
        assert (ev.losses, ev.gains) == naive_losses_gains(trace, exits, where)
        assert ev.discordant == ev.losses + ev.gains
        assert ev.correct == int(trace.accuracy[-1] * n + 0.5) - ev.losses + ev.gains
        assert ev.accuracy == pytest.approx(right / n)
        np.testing.assert_array_equal(ev.exit_position, where)
        assert ev.exit_counts == tuple(np.bincount(where, minlength=m + 1))
        assert sum(ev.exit_distribution) == pytest.approx(1.0)
        assert ev.mean_ms == pytest.approx(costs.mean(), abs=1e-5)
        for stat, q in (("p50", 50), ("p90", 90), ("p99", 99)):
            nearest_rank = np.sort(costs)[math.ceil(q * n / 100) - 1]
            assert ev.stat_ms(stat) == pytest.approx(nearest_rank, abs=1e-5)
            assert ev.stat_ms(stat) == pytest.approx(np.percentile(costs, q, method="inverted_cdf"), abs=1e-5)


def test_evaluate_accepts_names_and_a_trailing_final():
    trace, table = artifacts()
    by_index = score_design(trace, table, pick([1, 4], [0.7, 0.8]))
    by_name = score_design(trace, table, pick(["exit1", "exit4", "final"], [0.7, 0.8]))
    assert by_index == by_name


def test_no_exit_design_costs_the_whole_backbone_and_one_call():
    trace, table = artifacts()
    ev = score_design(trace, table, pick([], []))
    expected = sum(table.segment_costs("mean")) + table.overhead.mean_ms
    assert ev.mean_ms == pytest.approx(expected, abs=1e-5) and ev.stat_ms("p99") == pytest.approx(
        expected, abs=1e-5
    )
    assert ev.accuracy == pytest.approx(trace.accuracy[-1]) and ev.exit_counts == (len(trace.labels),)


def test_threshold_zero_sends_everything_to_the_first_kept_exit():
    trace, table = artifacts()
    ev = score_design(trace, table, pick([2, 5], [0.0, 0.0]))
    assert ev.exit_counts == (len(trace.labels), 0, 0)
    assert ev.accuracy == pytest.approx(trace.accuracy[2])


@pytest.mark.parametrize("stat", ["mean", "p50", "p90", "p99"])
def test_batch_metrics_and_count_keys_agree_with_single_evaluations(stat):
    trace, table = artifacts(seed=5, decimals=2)
    problem = SearchProblem.from_artifacts(trace, table)
    exits = (0, 2, 3, 5)
    thresholds = np.array(
        [[0.5, 0.6, 0.7, 0.8], [0.9, 0.9, 0.9, 0.9], [0.3, 0.95, 0.4, 1.0]], dtype=np.float32
    )
    correct, discordant, keys = batch_metrics(problem, exits, thresholds, stat)
    for row, c, d, key in zip(thresholds, correct, discordant, keys, strict=True):
        ev = score_problem(problem, exits, row)
        assert c == ev.correct and d == ev.discordant and key == ev.latency_key(stat)
        counts = np.array([ev.exit_counts])
        assert keys_from_counts(counts, problem.position_costs(exits), stat)[0] == key


@pytest.mark.parametrize("stat", ["mean", "p90"])
def test_sweep_threshold_matches_batch_metrics(stat):
    trace, table = artifacts(seed=6, decimals=2)
    problem = SearchProblem.from_artifacts(trace, table)
    rng = np.random.default_rng(6)
    for _ in range(10):
        exits = tuple(sorted(rng.choice(6, size=int(rng.integers(1, 7)), replace=False).tolist()))
        current = rng.uniform(0.3, 1.0, size=len(exits)).astype(np.float32)
        j = int(rng.integers(len(exits)))
        values = np.unique(rng.uniform(0.0, 1.0, size=25).round(2).astype(np.float32))
        got = sweep_threshold(problem, exits, current, j, values, stat)
        table_of_designs = np.repeat(current[None, :], len(values), axis=0)
        table_of_designs[:, j] = values
        want = batch_metrics(problem, exits, table_of_designs, stat)
        for got_part, want_part in zip(got, want, strict=True):  # correct, discordant, latency keys
            np.testing.assert_array_equal(got_part, want_part)


def test_evaluate_rejects_malformed_designs():
    trace, table = artifacts()
    with pytest.raises(HapiError, match="one threshold per kept intermediate exit"):
        score_design(trace, table, pick([1, 2], [0.5]))
    with pytest.raises(HapiError, match="Unknown exit 'exit99'"):
        score_design(trace, table, pick(["exit99"], [0.5]))
    with pytest.raises(HapiError, match="depth order"):
        score_design(trace, table, pick([3, 1], [0.5, 0.5]))
    with pytest.raises(HapiError, match="'final' must be the last"):
        score_design(trace, table, pick(["final", "exit1"], [0.5, 0.5]))
    with pytest.raises(HapiError, match="finite"):
        score_design(trace, table, pick([1], [float("nan")]))


def test_trace_and_table_of_different_models_are_refused():
    trace, _ = artifacts(seed=0)
    other = synthetic_table(6, seed=0, model_fingerprint="f" * 64)
    with pytest.raises(HapiError, match="different models"):
        score_design(trace, other, pick([1], [0.5]))


def test_trace_and_table_with_different_exits_are_refused():
    trace = synthetic_trace(5, 50, seed=0)
    table = synthetic_table(6, seed=0)
    with pytest.raises(HapiError, match="exits .* differ"):
        score_design(trace, table, pick([1], [0.5]))


def test_zero_overhead_table_is_refused():
    trace, table = artifacts()
    zero = TimingStats(n=1, warmup=0, mean_ms=0.0, p50_ms=0.0, p90_ms=0.0, p99_ms=0.0, std_ms=0.0, min_ms=0.0)
    bad = LatencyTable(**{**table.__dict__, "overhead": zero})
    assert isinstance(bad.segments[0], PieceLatency)
    with pytest.raises(HapiError, match="overhead must be positive"):
        score_design(trace, bad, pick([], []))


def test_confidences_outside_0_1_are_refused():
    trace, table = artifacts()
    conf = trace.conf.copy()
    conf[1, 3] = 1.5
    with pytest.raises(HapiError, match=r"probabilities in \[0, 1\]"):
        Trace(**{**trace.__dict__, "conf": conf})


def test_runtime_per_predict_cost_is_paid_once_by_every_sample():
    import dataclasses

    trace, table = artifacts()
    charged = dataclasses.replace(table, extra={**table.extra, "runtime": {"per_predict_ms": 0.021}})
    for exits, thresholds in (([], []), ([1], [0.5]), ([0, 2], [0.7, 0.6])):
        plain = score_design(trace, table, pick(exits, thresholds))
        more = score_design(trace, charged, pick(exits, thresholds))
        assert more.accuracy == plain.accuracy
        assert more.mean_ms == pytest.approx(plain.mean_ms + 0.021, abs=1e-6)
        assert more.percentile_ns["p90"] == plain.percentile_ns["p90"] + 21_000
