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
