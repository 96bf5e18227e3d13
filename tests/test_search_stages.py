"""Predict what will run: the search times its choice's fused stages, re-scores and chooses again."""

import numpy as np
import onnx
import pytest
from test_bundle_models import make_ee_model, reference_outputs, sample_images, softmax

from hapi_onnx.bundle import bundle_from_design
from hapi_onnx.calibrate import calibrate
from hapi_onnx.data import Dataset
from hapi_onnx.design import Design
from hapi_onnx.errors import HapiError
from hapi_onnx.profile import profile_model
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search import Constraints, search
from hapi_onnx.search.latency import mixture_stats
from hapi_onnx.search.score import score_design
from hapi_onnx.search.stages import MIN_RUNS, ROUNDS, StageTimer, choose_on_stages, measured_positions


def records(mean: float, source: str = "pieces") -> list[dict]:
    return [{"exit": "e", "mean_ms": mean, "quantiles_ms": [mean] * 101, "source": source}]


def choose(pieces_ms, stages_ms, *, accurate=None, sla=None, rivals=3, rounds=ROUNDS):
    """choose_on_stages over designs whose statistic is one number: ``pieces_ms`` before timing,
    ``stages_ms(i, times_timed_so_far)`` once timed; least latency wins (min-latency)."""
    accurate = accurate or [True] * len(pieces_ms)
    timings = []

    def measure(i):
        timings.append(i)
        return records(stages_ms(i, len(timings)), "stages")

    result = choose_on_stages(
        len(pieces_ms), 0,
        pieces=lambda i: records(pieces_ms[i]),
        measure=measure,
        statistic=lambda i, p: p[0]["mean_ms"],
        allowed=lambda i, ms: accurate[i] and (sla is None or ms <= sla),
        better=lambda i, ms: (ms, i),
        rival=lambda i: accurate[i],
        rivals=rivals, rounds=rounds,
    )
    return result, timings


def test_the_choice_moves_to_the_rival_its_stages_make_faster():
    # on pieces design 0 is fastest; timed, design 2 is
    result, timed = choose([1.0, 1.2, 1.1, 3.0], lambda i, _: {0: 1.3, 1: 1.25, 2: 0.9, 3: 2.9}[i], rivals=2)
    assert result.chosen == 2 and result.stable and result.rounds == 2
    assert timed[:3] == [0, 2, 1] and len(timed) == len(set(timed))  # the choice and its two closest rivals first
    assert result.positions[2][0]["mean_ms"] == 0.9 and result.positions[2][0]["source"] == "stages"


def test_a_design_over_the_sla_on_pieces_is_timed_and_can_win():
    # design 1 is over the SLA on pieces; its timed stages bring it under, and it is the faster
    result, _ = choose([0.9, 1.05], lambda i, _: {0: 0.95, 1: 0.8}[i], sla=1.0, rivals=1)
    assert result.chosen == 1 and result.stable


def test_an_inaccurate_design_is_never_timed_nor_chosen():
    result, timed = choose([1.0, 0.5, 1.2], lambda i, _: 0.1 if i == 1 else 1.0, accurate=[True, False, True])
    assert 1 not in timed and result.chosen == 0


def test_unchanged_choice_stops_after_one_round():
    result, timed = choose([1.0, 2.0, 3.0], lambda i, _: [1.0, 2.0, 3.0][i])
    assert (result.chosen, result.rounds, result.stable) == (0, 1, True) and sorted(timed) == [0, 1, 2]


def test_the_rounds_are_bounded_when_the_choice_keeps_moving():
    # every design reads slower than all the untimed ones once timed: the choice never settles
    n = 20
    result, timed = choose([1.0 + 0.01 * i for i in range(n)], lambda i, k: 10.0 + k, rivals=0)
    assert result.rounds == ROUNDS and not result.stable and len(timed) == ROUNDS
    assert result.chosen in result.positions  # the best design timed, not one never measured
    assert result.chosen == min(result.positions, key=lambda i: result.positions[i][0]["mean_ms"])


def test_measured_positions_replace_only_the_timed_ones():
    pieces = [{"exit": "a", "mean_ms": 1.0, "quantiles_ms": [1.0] * 101, "source": "pieces"},
              {"exit": "final", "mean_ms": 2.0, "quantiles_ms": [2.0] * 101, "source": "pieces"}]
    timed = measured_positions(pieces, [{"mean_ms": 0.5, "quantiles_ms": [0.5] * 101, "runs": 40}, None])
    assert timed[0] == {"exit": "a", "mean_ms": 0.5, "quantiles_ms": [0.5] * 101, "runs": 40, "source": "stages"}
    assert timed[1] == pieces[1]


@pytest.fixture(scope="module")
def case(tmp_path_factory, fast_preset):
    root = tmp_path_factory.mktemp("stages")
    model, x = make_ee_model(seed=2), sample_images(80, seed=4)
    y = softmax(reference_outputs(model, x)["fc.logits"]).argmax(axis=1)
    y[:8] = (y[:8] + 1) % 5
    onnx.save(model, root / "ee.onnx")
    trace = calibrate(root / "ee.onnx", Dataset(x=x, y=y))
    table = profile_model(root / "ee.onnx", fast_preset)
    timer = StageTimer(root / "ee.onnx", x, device=str(fast_preset), runs=300, warmup=20)
    return root, trace, table, timer


@pytest.mark.parametrize("constraints", [
    Constraints(max_accuracy_drop=5.0, guarantee="per-design", bound_level=0),
    Constraints(max_accuracy_drop=5.0, bound_level=0.5),  # the split guarantee: among the certified designs
    Constraints(latency_sla_ms=10.0, percentile="p90", guarantee="per-design"),
])
def test_search_predicts_from_the_timed_stages(case, constraints):
    root, trace, table, timer = case
    design = search(trace, table, constraints, stages=timer)
    positions = design.predicted["positions"]
    stages = design.search["stages"]
    assert 1 <= stages["rounds"] <= ROUNDS and 1 <= stages["timed"] and isinstance(stages["stable"], bool)
    assert {p["source"] for p in positions} <= {"stages", "pieces"} and any(p["source"] == "stages" for p in positions)
    assert all(p["runs"] >= MIN_RUNS for p in positions if p["source"] == "stages")
    assert all("runs" not in p for p in positions if p["source"] == "pieces")
    assert stages["runs"] == sum(p.get("runs", 0) for p in positions)
    # the prediction is the timed records' on the design's own exit counts, not the pieces'
    counts = score_design(trace, table, design.exits).exit_counts
    again = mixture_stats(positions, counts)
    assert {k: design.predicted[k] for k in again} == again
    pieces = search(trace, table, constraints)
    if pieces.exits == design.exits:
        assert all(p["source"] == "pieces" for p in pieces.predicted["positions"])
        assert design.predicted["mean_ms"] != pieces.predicted["mean_ms"]
    chosen = [f for f in design.pareto_front if f.exits == design.exits]
    assert all(f.latency_ms == pytest.approx(design.predicted[f"{design.latency_stat}_ms"]) for f in chosen)
    from hapi_onnx.search.report import summary_lines

    assert any(line.startswith("latency: ") and "timed as the bundle's own stages" in line
               for line in summary_lines(design))
    design.save(root / "design.json")
    assert Design.load(root / "design.json") == design
    bundle = bundle_from_design(root / "ee.onnx", root / "design.json", root / "m.hapi")
    assert EarlyExitModel.load(bundle).exits == design.exits


def test_the_timer_must_time_the_traced_model(case, fast_preset):
    _, trace, table, timer = case
    other = StageTimer(make_ee_model(seed=5), timer.inputs, device=str(fast_preset), runs=MIN_RUNS, warmup=0)
    with pytest.raises(HapiError, match="not the one the trace was taken on"):
        search(trace, table, Constraints(max_accuracy_drop=5.0), stages=other)


def test_timer_records_each_position(case):
    _, _, _, timer = case
    from hapi_onnx.choice import choices_from

    out = timer(choices_from(["exit0", "final"], [0.5]), [0.0, 1.0])  # the uniform share still times exit0
    assert len(out) == 2 and all(r is not None and r["runs"] >= MIN_RUNS for r in out)
    assert sum(r["runs"] for r in out) == timer.runs
    for r in out:
        q = np.asarray(r["quantiles_ms"])
        assert len(q) == 101 and np.all(np.diff(q) >= 0) and q[0] <= r["mean_ms"] <= q[-1]


def test_search_cli_times_stages_with_ee_and_data(case, run_cli, tmp_path):
    root, trace, table, timer = case
    trace.save(tmp_path / "trace.npz")
    table.save(tmp_path / "latency.json")
    np.savez(tmp_path / "calib.npz", x=timer.inputs, y=np.zeros(len(timer.inputs), np.int64))
    base = ["search", "--trace", tmp_path / "trace.npz", "--latency", tmp_path / "latency.json",
            "--max-accuracy-drop", "5", "--guarantee", "per-design"]
    plain = run_cli(*base, "-o", tmp_path / "plain.json")
    assert plain.exit_code == 0, plain.output
    assert "stages" not in Design.load(tmp_path / "plain.json").search
    half = run_cli(*base, "--ee", root / "ee.onnx", "-o", tmp_path / "half.json")
    assert half.exit_code == 2 and "--ee and --data go together" in half.output
    assert not (tmp_path / "half.json").exists()
