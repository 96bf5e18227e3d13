"""calibrate: the Trace of an EE model, checked against ORT outputs; summaries; boundary errors."""

import numpy as np
import onnx
import pytest
from graph_models import resnet, run_model
from test_exits_from_outputs import multi_exit

from hapi_onnx.calibrate import calibrate, calibration_report, exit_accuracies
from hapi_onnx.data import Dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.attach import attach_exits
from hapi_onnx.exits.from_outputs import exits_from_outputs
from hapi_onnx.graph import load_model, model_fingerprint
from hapi_onnx.trace import Trace


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def labelled(model, n, seed):
    x = np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)
    logits = run_model(load_model(model), {"image": x})[0]
    return Dataset(x, (logits - logits.mean(axis=0)).argmax(axis=1))


@pytest.fixture(scope="module")
def ee(tmp_path_factory):
    net = resnet()
    result = attach_exits(net.model, labelled(net.model, 200, seed=0))
    path = tmp_path_factory.mktemp("ee") / "ee.onnx"
    result.save(path)
    return result, path, labelled(net.model, 70, seed=1)


def expected(probs):
    top2 = np.sort(probs, axis=1)[:, -2:]
    return probs.argmax(axis=1), top2[:, 1], top2[:, 1] - top2[:, 0]


def test_trace_matches_the_model_outputs(ee):
    result, path, calib = ee
    calls = []
    trace = calibrate(path, calib, batch_size=32, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 70), (32, 70), (64, 70), (70, 70)]  # (0, total) marks the start
    outs = run_model(result.model, {"image": calib.x})
    final, heads = outs[0], outs[1:]
    assert trace.exit_names == ["exit0", "exit1", "exit2", "exit3", "final"]
    assert trace.tensors == [e.tensor for e in result.layout.exits] + [result.layout.final_output]
    np.testing.assert_array_equal(trace.labels, calib.y)
    for k, probs in enumerate(heads + [softmax(final.astype(np.float64))]):
        pred, conf, margin = expected(probs)
        np.testing.assert_array_equal(trace.pred[k], pred)
        np.testing.assert_allclose(trace.conf[k], conf, atol=1e-5)
        np.testing.assert_allclose(trace.margin[k], margin, atol=1e-5)
    assert (trace.margin >= 0).all() and (trace.conf <= 1 + 1e-6).all()


def test_fingerprint_is_the_saved_ee_models(ee):
    result, path, calib = ee
    trace = calibrate(onnx.load(path), calib)
    assert trace.model_fingerprint == model_fingerprint(onnx.load(path)) == model_fingerprint(result.model)
    assert trace.model_fingerprint != result.layout.source_fingerprint


def test_report_rows_and_round_trip(ee, tmp_path):
    result, path, calib = ee
    trace, rows = calibration_report(path, calib)
    assert [r.name for r in rows] == trace.exit_names
    np.testing.assert_allclose([r.accuracy for r in rows], trace.accuracy)
    np.testing.assert_allclose([r.mean_confidence for r in rows], trace.conf.mean(axis=1), rtol=1e-6)
    assert [r.mac_fraction for r in rows] == pytest.approx([h.mac_fraction for h in result.heads] + [1.0])
    assert [r.mac_fraction for r in exit_accuracies(trace)][:-1] == [None] * 4
    trace.save(tmp_path / "trace.npz")
    back = Trace.load(tmp_path / "trace.npz")
    np.testing.assert_array_equal(back.pred, trace.pred)
    np.testing.assert_array_equal(back.margin, trace.margin)
    assert back.model_fingerprint == trace.model_fingerprint


def test_probability_final_is_not_softmaxed_again():
    src = multi_exit(final_softmax=True)
    ee = exits_from_outputs(src, final_output="final_prob")
    x = np.random.default_rng(4).normal(size=(9, 1, 8, 8)).astype(np.float32)
    trace = calibrate(ee, Dataset(x, np.arange(9) % 4))
    final = run_model(ee, {"input": x})[0]
    np.testing.assert_allclose(trace.conf[-1], final.max(axis=1), atol=1e-6)
    assert trace.tensors == ["t1", "t2", "final_prob"]


@pytest.mark.parametrize("make, message", [
    (lambda d: Dataset(d.x[:, :, :8, :8], d.y), "model expects"),
    (lambda d: Dataset(d.x, d.y + 10), "the model has 10 classes"),
    (lambda d: Dataset(d.x, d.y % 5, tuple("abcde")), "names 5 classes"),
])
def test_bad_data_is_a_user_error(ee, make, message):
    _, path, calib = ee
    with pytest.raises(HapiError, match=message):
        calibrate(path, make(calib))


def test_a_model_without_exits_is_refused(ee):
    with pytest.raises(HapiError, match="no early exits recorded"):
        calibrate(resnet().model, ee[2])


def test_cli_calibrate(ee, tmp_path, run_cli):
    _, path, calib = ee
    calib.save(tmp_path / "calib.npz")
    result = run_cli("calibrate", path, "--data", tmp_path / "calib.npz", "-o", tmp_path / "trace.npz")
    assert result.exit_code == 0, result.output
    assert "accuracy %" in result.output and "final" in result.output and "exit3" in result.output
    assert Trace.load(tmp_path / "trace.npz").num_samples == 70
    np.save(tmp_path / "nolabels.npy", calib.x)
    result = run_cli("calibrate", path, "--data", tmp_path / "nolabels.npy", "-o", tmp_path / "t2.npz")
    assert result.exit_code == 0, result.output
    assert "no labels: search it with --reference final" in result.output
    unlabelled = Trace.load(tmp_path / "t2.npz")
    assert unlabelled.labels is None and np.array_equal(unlabelled.pred, Trace.load(tmp_path / "trace.npz").pred)


def test_an_unlabelled_trace_is_searched_against_the_full_model(ee, tmp_path, run_cli):
    from hapi_onnx.search.synthetic import synthetic_table

    _, path, calib = ee
    trace = calibrate(path, Dataset(calib.x))
    assert not trace.labelled and [r.accuracy for r in exit_accuracies(trace)] == [None] * 5
    np.testing.assert_allclose([r.agreement for r in exit_accuracies(trace)], trace.agreement.mean(axis=1))
    trace.save(tmp_path / "trace.npz")
    synthetic_table(4, seed=0, model_fingerprint=trace.model_fingerprint).save(tmp_path / "lat.json")
    args = ["search", "--trace", tmp_path / "trace.npz", "--latency", tmp_path / "lat.json", "-o",
            tmp_path / "design.json", "--max-accuracy-drop", "50", "--bound-level", "0"]
    result = run_cli(*args)
    assert result.exit_code == 2 and "--reference final" in result.output
    result = run_cli(*args, "--reference", "final")
    assert result.exit_code == 0, result.output
    assert "disagreement <= 50 pp" in result.output and "agreement" in result.output
