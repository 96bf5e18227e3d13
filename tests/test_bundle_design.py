"""bundle_from_design and `hapi-onnx bundle`: a Design's exits, thresholds and predictions in the manifest."""

import json

import onnx
import pytest
from test_bundle_models import make_ee_model

from hapi_onnx.bundle import bundle_from_design
from hapi_onnx.choice import choices_from
from hapi_onnx.design import Design
from hapi_onnx.errors import HapiError
from hapi_onnx.graph import load_model, model_fingerprint
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search import Constraints


def make_design(fingerprint: str) -> Design:
    return Design(
        exits=choices_from(["exit0", "exit2"], [0.9, 0.75]),
        predicted={"accuracy": 0.9, "mean_ms": 0.1, "p50_ms": 0.08, "p90_ms": 0.2, "p99_ms": 0.3,
                   "exit_distribution": [0.5, 0.3, 0.2], "speedup_vs_full": 1.5,
                   "accuracy_lower_bound": 0.88, "accuracy_drop_bound_pp": 0.9},
        reference={"accuracy": 0.91, "mean_ms": 0.15, "no_exit_mean_ms": 0.16, "no_exit_p90_ms": 0.17},
        constraints=Constraints(max_accuracy_drop=1.0),
        pareto_front=[], search={"num_samples": 100}, device="cpu-1t",
        trace_fingerprint="t" * 64, latency_fingerprint="l" * 64, model_fingerprint=fingerprint,
    )


@pytest.fixture
def files(tmp_path):
    model = make_ee_model()
    onnx.save(model, tmp_path / "ee.onnx")
    make_design(model_fingerprint(load_model(model))).save(tmp_path / "design.json")
    return tmp_path


def test_bundle_from_design_records_the_design(files):
    out = bundle_from_design(files / "ee.onnx", files / "design.json", files / "m.hapi", labels=list("vwxyz"))
    model = EarlyExitModel.load(out)
    assert model.exits == choices_from(["exit0", "exit2"], [0.9, 0.75])
    assert Design.load(files / "design.json").exits == model.exits  # one value, unchanged on the way
    design = model.manifest.design
    assert design["predicted"]["mean_ms"] == 0.1 and design["trace_fingerprint"] == "t" * 64
    assert design["constraints"]["max_accuracy_drop"] == 1.0 and model.labels == tuple("vwxyz")


def test_design_for_another_model_is_refused(files):
    other = make_design("f" * 64)
    with pytest.raises(HapiError, match="searched on another model"):
        bundle_from_design(files / "ee.onnx", other, files / "m.hapi")
    assert not (files / "m.hapi").exists()


def test_bundle_command(files, run_cli):
    result = run_cli("bundle", files / "ee.onnx", "--design", files / "design.json", "-o", files / "m.hapi",
                     "--zip", "--labels", "a,b,c,d,e", "--preprocess", '{"scale": 0.5}')
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "predicted: accuracy 0.9000" in result.output
    model = EarlyExitModel.load(files / "m.hapi")
    spec = model.manifest.preprocessing  # resolved for the 1-channel NCHW input
    assert (spec.scale, spec.channel_order, spec.layout) == (0.5, "L", "NCHW") and model.labels == tuple("abcde")
    bad = run_cli("bundle", files / "ee.onnx", "--design", files / "design.json", "-o", files / "x.hapi",
                  "--preprocess", "{oops")
    assert bad.exit_code == 2 and "error: The preprocessing JSON is not valid JSON" in bad.output
    assert json.loads((files / "design.json").read_text())["kind"] == "hapi-onnx design"
