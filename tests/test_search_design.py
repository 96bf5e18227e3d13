"""Design artifact: what search() records, save/load round trip, refusal of foreign or broken files."""

import json
from dataclasses import replace
from functools import partial
from statistics import NormalDist

import pytest

from hapi_onnx.choice import ExitChoice
from hapi_onnx.errors import HapiError
from hapi_onnx.search import Design, score_design, search
from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

PerDesign = partial(Constraints, guarantee="per-design")  # the per-design bounds these tests check


@pytest.fixture(scope="module")
def searched():
    trace = synthetic_trace(6, 400, seed=21, decimals=3)
    table = synthetic_table(6, seed=21)
    return (
        trace,
        table,
        search(trace, table, PerDesign(max_accuracy_drop=1.0, latency_sla_ms=1.9, space="per-exit")),
    )


def test_design_records_choice_predictions_and_provenance(searched):
    trace, table, design = searched
    assert design.exits[-1] == ExitChoice("final") and all(e.threshold is not None for e in design.exits[:-1])
    assert all(name in trace.exit_names for name in design.exit_names)
    ev = score_design(trace, table, design.exits)
    p = design.predicted
    assert p["accuracy"] == pytest.approx(ev.accuracy) and p["mean_ms"] == pytest.approx(ev.mean_ms)
    assert p["p90_ms"] == pytest.approx(ev.stat_ms("p90")) and p["p99_ms"] == pytest.approx(ev.stat_ms("p99"))
    assert p["exit_distribution"] == pytest.approx(list(ev.exit_distribution))
    assert p["speedup_vs_full"] == pytest.approx(table.monolithic.mean_ms / ev.mean_ms)
    assert design.reference["accuracy"] == pytest.approx(trace.accuracy[-1])
    assert design.reference["mean_ms"] == table.monolithic.mean_ms
    assert design.reference["no_exit_mean_ms"] == pytest.approx(
        sum(table.segment_costs()) + table.overhead.mean_ms, abs=1e-5
    )
    assert design.objective == "min-latency" and design.latency_stat == "mean"
    assert design.constraints == PerDesign(latency_sla_ms=1.9, max_accuracy_drop=1.0, space="per-exit")
    assert design.constraints.to_dict() == {
        "latency_sla_ms": 1.9, "percentile": "mean", "min_accuracy": None, "max_accuracy_drop": 1.0,
        "bound_level": 0.9, "space": "per-exit", "guarantee": "per-design", "reference": "labels",
    }
    assert p["accuracy_drop_bound_pp"] <= 1.0 + 1e-9 and p["accuracy_lower_bound"] < p["accuracy"]
    n = design.search["num_samples"]
    drop_bound = (ev.losses - ev.gains + NormalDist().inv_cdf(0.9) * (ev.discordant + 1) ** 0.5) / n
    assert p["accuracy_drop_bound_pp"] == pytest.approx(100 * drop_bound)
    assert design.search["num_samples"] == 400
    assert design.trace_fingerprint == trace.fingerprint and design.latency_fingerprint == table.fingerprint
    assert design.model_fingerprint == trace.model_fingerprint and design.device == "synthetic"
    lat = [q.latency_ms for q in design.pareto_front]
    acc = [q.accuracy for q in design.pareto_front]
    assert lat == sorted(lat) and acc == sorted(acc) and len(set(acc)) == len(acc)
    assert p["mean_ms"] <= 1.9 and p["accuracy"] >= design.reference["accuracy"] - 0.01 - 1e-12
    for q in design.pareto_front:
        assert q.feasible == (q.accuracy_drop_bound_pp <= 1.0 + 1e-9 and q.latency_ms <= 1.9)
        assert q.accuracy_lower_bound < q.accuracy


def test_save_load_round_trip(searched, tmp_path):
    design = searched[2]
    design.save(tmp_path / "design.json")
    loaded = Design.load(tmp_path / "design.json")
    assert loaded == design
    raw = json.loads((tmp_path / "design.json").read_text())
    assert raw["kind"] == "hapi-onnx design" and raw["format_version"] == 2
    assert raw["exits"][-1] == {"name": "final", "threshold": None}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"kind": "hapi-onnx trace"}, "is not a hapi-onnx design file"),
        ({"format_version": 1}, "format_version 1"),
        ({"exits": []}, "at least the final classifier"),
        ({"exits": None}, "must be a list of exits"),
        ({"exits": [{"name": "exit1", "threshold": None}, {"name": "final", "threshold": None}]}, "needs a threshold"),
        ({"exits": [{"name": "exit1", "threshold": -1}, {"name": "final", "threshold": None}]}, "finite number >= 0"),
        ({"exits": [{"name": "final", "threshold": 0.5}]}, "has no threshold"),
        ({"exits": ["exit1", "final"]}, r"object \{name, threshold\}"),
        ({"policy": "entropy"}, "policy must be one of"),
        ({"predicted": {"accuracy": 0.9}}, "predicted must hold"),
        ({"constraints": {"min_accuracy": 98.5}}, "a fraction"),
        ({"constraints": {"space": "per-layer"}}, "'space' must be one of"),
        ({"objective": "fastest"}, "unexpected keyword"),
        ({"surprise": 1}, "unexpected keyword"),
        ({"pareto_front": [{"accuracy": "high"}]}, "malformed"),
    ],
)
def test_load_refuses_foreign_or_broken_files(searched, tmp_path, change, message):
    design = searched[2]
    data = {"kind": "hapi-onnx design", "format_version": 2, **design.to_dict(), **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HapiError, match=message):
        Design.load(path)


def test_load_refuses_missing_and_non_json_files(tmp_path):
    with pytest.raises(HapiError, match="does not exist"):
        Design.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(HapiError, match="not valid JSON"):
        Design.load(tmp_path / "x.json")


def test_the_front_marks_every_faster_point_infeasible(searched):
    """With bounds the chosen design may be off the raw front, but nothing faster on it is allowed."""
    design = searched[2]
    chosen_ms = design.predicted["mean_ms"]
    assert all(not q.feasible for q in design.pareto_front if q.latency_ms < chosen_ms - 1e-9)
    assert any(q.feasible for q in design.pareto_front)


def test_chosen_design_is_on_the_recorded_front_on_raw_counts():
    trace, table = synthetic_trace(6, 400, seed=21, decimals=3), synthetic_table(6, seed=21)
    for space in ("global", "per-exit"):
        constraints = PerDesign(max_accuracy_drop=1.0, latency_sla_ms=1.9, space=space, bound_level=0)
        design = search(trace, table, constraints)
        assert design.exits in [q.exits for q in design.pareto_front]
        assert design.predicted["accuracy_lower_bound"] == design.predicted["accuracy"]


def test_a_design_with_a_bad_metric_is_refused(searched, tmp_path):
    bad = {"kind": "hapi-onnx design", "format_version": 2, **searched[2].to_dict()}
    bad["predicted"]["accuracy_drop_bound_pp"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(HapiError, match="predicted metrics must be numbers"):
        Design.load(tmp_path / "bad.json")


def test_front_table_shows_a_chosen_design_off_the_raw_front(searched):
    from hapi_onnx.search.report import front_lines

    design = searched[2]
    front = [q for q in design.pareto_front if q.exits != design.exits]
    off = replace(design, pareto_front=front)
    lines = front_lines(off, max_rows=100)
    assert f"({len(front)} points; * chosen; ok: meets every constraint, 90%-level bounds)" in lines[0]
    assert "off the raw front" in lines[1]
    starred = [line for line in lines if line.startswith("*")]
    assert len(starred) == 1 and f"{design.predicted['mean_ms']:.3f}" in starred[0] and " yes " in starred[0]
    thin = front_lines(off, max_rows=3)
    assert f"of {len(front)} points" in thin[0] and sum(line.startswith("*") for line in thin) == 1
