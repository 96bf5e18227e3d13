"""Acceptance on the demo: heads on the MNIST ResNet (train split), trace on the calib split."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from graph_models import run_model

from hapi_onnx.calibrate import calibrate
from hapi_onnx.data import Dataset, load_dataset, mnist_splits
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.attach import attach_exits
from hapi_onnx.graph import load_model

DEMO = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.onnx"


@pytest.fixture(scope="module")
def demo():
    splits = mnist_splits(seed=0)
    result = attach_exits(DEMO, splits["train"])
    trace = calibrate(result.model, splits["calib"])
    return splits, result, trace


def test_exit_accuracy_rises_with_depth_and_the_deepest_head_matches_the_classifier(demo):
    _, result, trace = demo
    acc = trace.accuracy
    heads, final = acc[:-1], acc[-1]
    assert len(heads) == len(result.heads) >= 8
    assert np.corrcoef(np.arange(len(heads)), heads)[0, 1] > 0.8
    # gap+2x2 heads are strong early (about 95% at the stem), so the rise is a few points
    assert heads[-3:].mean() - heads[:3].mean() > 0.02
    assert final > 0.97
    assert abs(heads[-1] - final) <= 0.01
    # confidences stay informative on the deep heads (not saturated at 1.0)
    assert (trace.conf[-2] == 1.0).mean() < 0.05


def test_original_output_is_preserved(demo):
    splits, result, _ = demo
    x = splits["calib"].x[:256]
    original = run_model(load_model(DEMO), {"input": x})[0]
    ee_out = run_model(result.model, {"input": x})[0]
    assert result.model.graph.output[0].name == "logits"
    np.testing.assert_allclose(ee_out, original, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make, message", [
    (lambda d: Dataset(d.x[:, :, ::2, ::2], d.y), "model expects 1 x 28 x 28"),
    (lambda d: Dataset(np.repeat(d.x, 3, axis=1), d.y), "model expects 1 x 28 x 28"),
    (lambda d: Dataset(d.x, np.where(d.y == 3, 10, d.y)), "label 10"),
    (lambda d: Dataset(d.x, d.y % 5, tuple("abcde")), "names 5 classes"),
    (lambda d: Dataset(d.x), "no labels"),
])
def test_bad_inputs_are_user_errors(demo, make, message):
    splits, result, _ = demo
    bad = make(splits["calib"].subset(np.arange(64)))
    with pytest.raises(HapiError, match=message):
        attach_exits(DEMO, bad)
    if bad.y is None:  # calibration without labels is allowed: a trace for --reference final
        assert not calibrate(result.model, bad).labelled
        return
    with pytest.raises(HapiError, match=message):
        calibrate(result.model, bad)


def test_nan_and_integer_images_are_refused_at_load(tmp_path):
    x = np.zeros((4, 1, 28, 28), np.float32)
    x[1, 0, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(4))
    np.savez(tmp_path / "u8.npz", x=np.zeros((4, 1, 28, 28), np.uint8), y=np.arange(4))
    with pytest.raises(HapiError, match="NaN"):
        load_dataset(tmp_path / "nan.npz")
    with pytest.raises(HapiError, match="float array"):
        load_dataset(tmp_path / "u8.npz")


def test_demo_model_input_is_the_documented_one():
    model = onnx.load(DEMO)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
