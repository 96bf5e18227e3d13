"""evaluate_bundle / predict_file and the `run` and `evaluate` commands, on a real test bundle."""

import json

import numpy as np
import onnx
import pytest
from test_bundle_models import make_ee_model, reference_outputs, sample_images, softmax

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.data import Dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.evaluate import EvaluationReport, evaluate_bundle, full_model_bytes, predict_file


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model, x = make_ee_model(seed=2), sample_images(60, seed=4)
    ref = reference_outputs(model, x)
    final = softmax(ref["fc.logits"]).argmax(axis=1)
    # Labels: the full model is right on 50 of 60 samples.
    y = final.copy()
    y[:10] = (y[:10] + 1) % 5
    threshold = float(np.median(ref["head1.probs"].max(axis=1)))
    onnx.save(model, root / "ee.onnx")
    bundle = write_bundle(model, choices_from(["exit1", "final"], [threshold]), root / "m.hapi",
        design={"predicted": {"accuracy": 0.8, "mean_ms": 0.05}}, labels=list("abcde"),
    )
    np.savez(root / "test.npz", x=x, y=y)
    np.save(root / "x.npy", x[:3])
    return root, bundle, Dataset(x=x, y=y), ref, final


def test_evaluate_bundle_measures_against_the_full_model(case):
    root, bundle, data, ref, final = case
    report = evaluate_bundle(
        bundle, data, device="cpu-1t", full_model=root / "ee.onnx", batch_size=16, warmup=5
    )
    conf1 = ref["head1.probs"].max(axis=1)
    early = conf1 >= np.float32(report.exits[0].threshold)
    expected = np.where(early, ref["head1.probs"].argmax(axis=1), final)
    assert [e.name for e in report.exits] == ["exit1", "final"]
    assert report.exit_counts == [int(early.sum()), int((~early).sum())]
    assert report.accuracy == pytest.approx(float((expected == data.y).mean()))
    assert report.full_accuracy == pytest.approx(50 / 60)
    assert report.latency.n == 55 and report.full_latency.n == 55
    assert report.speedup == pytest.approx(report.full_latency.mean_ms / report.latency.mean_ms)
    assert report.predicted_mean_ms == 0.05
    assert report.throughput["bundle_sps"] > 0 and report.throughput["full_sps"] > 0
    text = "\n".join(report.lines())
    assert "speed-up" in text and "measured/predicted" in text and "throughput" in text
    report.save(root / "report.json")
    assert EvaluationReport.load(root / "report.json") == report


def test_full_model_from_an_ee_model_is_the_original_classifier(case):
    root, _, data, ref, _ = case
    import onnxruntime as ort

    blob = full_model_bytes(root / "ee.onnx")
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["fc.logits"]
    np.testing.assert_allclose(session.run(None, {"input": data.x})[0], ref["fc.logits"], atol=1e-5)


def test_evaluate_needs_labels_and_matching_inputs(case):
    _, bundle, data, _, _ = case
    with pytest.raises(HapiError, match="labelled data"):
        evaluate_bundle(bundle, Dataset(x=data.x))
    with pytest.raises(HapiError, match="1 x 8 x 8 but the model expects 1 x 12 x 12"):
        evaluate_bundle(bundle, Dataset(x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64)))
    with pytest.raises(HapiError, match="Unknown device"):
        evaluate_bundle(bundle, data, device="no-such-device")


def test_predict_file(case):
    root, bundle, data, _, _ = case
    model, pred, names = predict_file(bundle, root / "x.npy")
    assert names is None
    assert len(pred) == 3 and model.labels == tuple("abcde")


def test_run_command(case, run_cli):
    root, bundle, _, _, _ = case
    result = run_cli("run", bundle, root / "x.npy", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["exits"] == ["exit1", "final"] and len(payload["predictions"]) == 3
    row = payload["predictions"][0]
    assert set(row) == {"index", "class", "label", "confidence", "exit", "exit_index"}
    table = run_cli("run", bundle, root / "test.npz")
    assert table.exit_code == 0 and len(table.output.splitlines()) == 61


def test_evaluate_command(case, run_cli):
    root, bundle, _, _, _ = case
    result = run_cli(
        "evaluate", bundle, "--data", root / "test.npz", "--full-model", root / "ee.onnx", "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["num_samples"] == 60 and payload["full_accuracy"] == pytest.approx(50 / 60)


def test_commands_turn_bad_bundles_into_one_line_errors(case, run_cli, tmp_path):
    root, _, _, _, _ = case
    result = run_cli("run", tmp_path / "missing.hapi", root / "x.npy")
    assert result.exit_code == 2 and "error: Bundle" in result.output and "does not exist" in result.output


def test_evaluate_predicts_on_the_exits_the_data_took(case, run_cli, tmp_path):
    """A design records each exit's latency distribution; evaluate re-computes the prediction for the
    exit counts it measured, next to the calibration split's, and stores it in --json."""
    from hapi_onnx.search.latency import mixture_stats

    root, bundle, _, _, _ = case
    levels = np.linspace(0, 1, 101)
    positions = [{"exit": "exit1", "mean_ms": 0.02, "quantiles_ms": list(0.015 + 0.01 * levels ** 3),
                  "source": "pieces"},
                 {"exit": "final", "mean_ms": 0.09, "quantiles_ms": list(0.07 + 0.05 * levels ** 3),
                  "source": "pieces"}]
    model = onnx.load(root / "ee.onnx")
    from hapi_onnx.runtime import EarlyExitModel

    exits = EarlyExitModel.load(bundle).exits
    with_positions = write_bundle(model, exits, tmp_path / "p.hapi", labels=list("abcde"), design={
        "predicted": {"accuracy": 0.8, "mean_ms": 0.05, "p90_ms": 0.1, "p99_ms": 0.12, "positions": positions}})
    report = evaluate_bundle(with_positions, root / "test.npz", warmup=5)
    want = mixture_stats(positions, report.exit_counts)
    assert report.predicted_on_data == want
    assert want["mean_ms"] == pytest.approx((report.exit_counts[0] * 0.02 + report.exit_counts[1] * 0.09) / 60)
    assert 0.015 <= want["p50_ms"] <= want["p90_ms"] <= want["p99_ms"] <= 0.12
    assert any("on these exits" in line for line in report.lines())
    assert EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    result = run_cli("evaluate", with_positions, "--data", root / "test.npz", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert set(payload["predicted_on_data"]) == {"mean_ms", "p50_ms", "p90_ms", "p99_ms"}
    assert payload["predicted"]["p99_ms"] == 0.12  # the calibration split's prediction, next to it
    old = evaluate_bundle(bundle, root / "test.npz", warmup=5)  # a design without positions: nothing made up
    assert old.predicted_on_data is None and not any("on these exits" in line for line in old.lines())


def test_a_designs_positions_reproduce_its_own_prediction():
    from hapi_onnx.search import Constraints, search
    from hapi_onnx.search.latency import mixture_stats
    from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

    trace, table = synthetic_trace(6, 800, seed=3), synthetic_table(6, seed=3, jitter=0.3)
    design = search(trace, table, Constraints(max_accuracy_drop=1.0, guarantee="per-design"))
    positions = design.predicted["positions"]
    assert [p["exit"] for p in positions] == design.exit_names and {p["source"] for p in positions} == {"pieces"}
    counts = np.round(np.asarray(design.predicted["exit_distribution"]) * 800).astype(int)
    again = mixture_stats(positions, counts)
    assert again["mean_ms"] == pytest.approx(design.predicted["mean_ms"], rel=1e-9)
    for stat in ("p50", "p90", "p99"):
        assert again[f"{stat}_ms"] == pytest.approx(design.predicted[f"{stat}_ms"], rel=0.01)
