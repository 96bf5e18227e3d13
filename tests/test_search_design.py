"""Design artifact: what search() records, save/load round trip, refusal of foreign or broken files."""

import json
from dataclasses import asdict, replace
from statistics import NormalDist

import pytest

from hapi_onnx.errors import HapiError
from hapi_onnx.search import Design, evaluate, search
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace


@pytest.fixture(scope="module")
def searched():
    trace = synthetic_trace(6, 400, seed=21, decimals=3)
    table = synthetic_table(6, seed=21)
    return (
        trace,
        table,
        search(trace, table, max_accuracy_drop=1.0, latency_sla_ms=1.9, thresholds="per-exit"),
    )


def test_design_records_choice_predictions_and_provenance(searched):
    trace, table, design = searched
    assert design.exits[-1] == "final" and design.exit_indices[-1] == len(trace.exit_names) - 1
    assert [trace.exit_names[i] for i in design.exit_indices] == design.exits
    assert len(design.thresholds) == len(design.exits) - 1
    ev = evaluate(trace, table, design.exit_indices, design.thresholds)
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
    assert design.constraints == {
        "latency_sla_ms": 1.9,
        "percentile": "mean",
        "min_accuracy": None,
        "max_accuracy_drop": 1.0,
        "confidence": 0.9,
    }
    assert p["accuracy_drop_bound_pp"] <= 1.0 + 1e-9 and p["accuracy_lower_bound"] < p["accuracy"]
    n = design.search["num_samples"]
    drop_bound = (ev.losses - ev.gains + NormalDist().inv_cdf(0.9) * (ev.discordant + 1) ** 0.5) / n
    assert p["accuracy_drop_bound_pp"] == pytest.approx(100 * drop_bound)
    assert design.search["space"] == "per-exit" and design.search["num_samples"] == 400
    assert design.trace_fingerprint == trace.fingerprint and design.latency_fingerprint == table.fingerprint
    assert design.model_fingerprint == trace.model_fingerprint and design.device == "synthetic"
    lat = [q["latency_ms"] for q in design.pareto_front]
    acc = [q["accuracy"] for q in design.pareto_front]
    assert lat == sorted(lat) and acc == sorted(acc) and len(set(acc)) == len(acc)
    assert p["mean_ms"] <= 1.9 and p["accuracy"] >= design.reference["accuracy"] - 0.01 - 1e-12
    for q in design.pareto_front:
        assert q["feasible"] == (q["accuracy_drop_bound_pp"] <= 1.0 + 1e-9 and q["latency_ms"] <= 1.9)
        assert q["accuracy_lower_bound"] < q["accuracy"]


def test_save_load_round_trip(searched, tmp_path):
    design = searched[2]
    design.save(tmp_path / "design.json")
    loaded = Design.load(tmp_path / "design.json")
    assert loaded == design
    raw = json.loads((tmp_path / "design.json").read_text())
    assert raw["kind"] == "hapi-onnx design" and raw["format_version"] == 1


@pytest.mark.parametrize(
    "change,message",
    [
        ({"kind": "hapi-onnx trace"}, "is not a hapi-onnx design file"),
        ({"format_version": 2}, "format_version 2"),
        ({"thresholds": []}, "one value per kept intermediate exit"),
        ({"thresholds": None}, "one value per kept intermediate exit"),
        ({"policy": "entropy"}, "policy must be one of"),
        ({"exit_indices": [3, 1]}, "exit_indices must"),
        ({"predicted": {"accuracy": 0.9}}, "predicted must hold"),
        ({"objective": "fastest"}, "objective must be"),
        ({"surprise": 1}, "unexpected keyword"),
    ],
)
def test_load_refuses_foreign_or_broken_files(searched, tmp_path, change, message):
    design = searched[2]
    data = {"kind": "hapi-onnx design", "format_version": 1, **asdict(design), **change}
    if "thresholds" in change and change["thresholds"] == []:
        data["exits"] = design.exits if len(design.exits) > 1 else ["exit0", "final"]
        data["exit_indices"] = design.exit_indices if len(design.exits) > 1 else [0, 6]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HapiError, match=message):
        Design.load(path)


def test_load_refuses_missing_and_non_json_files(tmp_path):
    with pytest.raises(HapiError, match="does not exist"):
        Design.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(HapiError, match="not JSON"):
        Design.load(tmp_path / "x.json")


def test_the_front_marks_every_faster_point_infeasible(searched):
    """With bounds the chosen design may be off the raw front, but nothing faster on it is allowed."""
    design = searched[2]
    chosen_ms = design.predicted["mean_ms"]
    assert all(not q["feasible"] for q in design.pareto_front if q["latency_ms"] < chosen_ms - 1e-9)
    assert any(q["feasible"] for q in design.pareto_front)


def test_chosen_design_is_on_the_recorded_front_on_raw_counts():
    trace, table = synthetic_trace(6, 400, seed=21, decimals=3), synthetic_table(6, seed=21)
    for space in ("global", "per-exit"):
        design = search(trace, table, max_accuracy_drop=1.0, latency_sla_ms=1.9, thresholds=space, confidence=0)
        points = [(q["exits"], q["thresholds"]) for q in design.pareto_front]
        assert (design.exits, design.thresholds) in points
        assert design.predicted["accuracy_lower_bound"] == design.predicted["accuracy"]


def test_designs_without_bound_keys_still_load(searched, tmp_path):
    """Designs written before the accuracy bounds (no bound keys, no confidence) stay readable."""
    design = searched[2]
    predicted = {k: v for k, v in design.predicted.items() if not k.startswith("accuracy_") or k == "accuracy"}
    constraints = {k: v for k, v in design.constraints.items() if k != "confidence"}
    old = replace(design, predicted=predicted, constraints=constraints)
    old.save(tmp_path / "old.json")
    assert Design.load(tmp_path / "old.json") == old
    bad = {"kind": "hapi-onnx design", "format_version": 1, **asdict(design)}
    bad["predicted"]["accuracy_drop_bound_pp"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(HapiError, match="predicted metrics must be numbers"):
        Design.load(tmp_path / "bad.json")


def test_front_table_shows_a_chosen_design_off_the_raw_front(searched):
    from hapi_onnx.search.report import front_lines

    design = searched[2]
    front = [q for q in design.pareto_front if (q["exits"], q["thresholds"]) != (design.exits, design.thresholds)]
    off = replace(design, pareto_front=front)
    lines = front_lines(off, max_rows=100)
    assert f"({len(front)} points; * chosen; ok: meets every constraint with 90%-confidence bounds)" in lines[0]
    assert "off the raw front" in lines[1]
    starred = [line for line in lines if line.startswith("*")]
    assert len(starred) == 1 and f"{design.predicted['mean_ms']:.3f}" in starred[0] and " yes " in starred[0]
    thin = front_lines(off, max_rows=3)
    assert f"of {len(front)} points" in thin[0] and sum(line.startswith("*") for line in thin) == 1
