"""The whole flow on the demo CNN written in each dialect real CNN files come in (see dialect_models).

attach -> calibrate -> profile -> search -> bundle -> evaluate runs on every dialect with real ONNX
Runtime sessions and real MNIST digits (heads fitted on train, thresholds searched on calib,
everything measured on test), and the bundle with every threshold above 1 reproduces the source
model: probabilities within 1e-5 for float models, identical classes for int8 ones.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from dialect_models import DIALECTS, dialect

from hapi_onnx.bundle import bundle_from_design, write_bundle
from hapi_onnx.calibrate import calibrate
from hapi_onnx.choice import FINAL, ExitChoice
from hapi_onnx.data import Dataset, mnist_splits
from hapi_onnx.evaluate import evaluate_bundle
from hapi_onnx.exits.attach import attach_exits
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import candidate_exits, load_model, split_model
from hapi_onnx.profile.profile import profile_model
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search import search
from hapi_onnx.search.constraints import Constraints

INT8 = ("qdq", "qoperator")
@pytest.fixture(scope="module")
def splits():
    s = mnist_splits()
    return {"train": s["train"].subset(np.arange(1000)), "calib": s["calib"].subset(np.arange(400)),
            "test": s["test"].subset(np.arange(300))}


def _source_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The source model's first output, one sample per call (some dialects fix the batch at 1)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", DIALECTS)
def test_whole_flow_on_each_dialect(name, splits, fast_preset, tmp_path):
    model, layout_of = dialect(name, splits["train"].x[:100], tmp_path)
    source = tmp_path / "model.onnx"
    onnx.save(model, source)
    data = {k: Dataset(layout_of(d.x), d.y, d.classes) for k, d in splits.items()}

    result = attach_exits(source, data["train"], max_candidates=3, pooling="gap")
    result.save(tmp_path / "ee.onnx")
    layout = result.layout
    assert len(layout.exits) == 3
    assert layout.quantization == {"qdq": "QDQ", "qoperator": "QOperator"}.get(name)
    ee = load_model(tmp_path / "ee.onnx")
    cut_types = {
        vi.name: vi.type.tensor_type.elem_type for vi in [*ee.graph.value_info, *ee.graph.output]
    }
    want_type = {"qdq": onnx.TensorProto.INT8, "qoperator": onnx.TensorProto.UINT8}.get(name, onnx.TensorProto.FLOAT)
    assert all(cut_types[e.tensor] == want_type for e in layout.exits)  # 8-bit cuts: carried as 8-bit
    assert all(h.heldout_accuracy > 0.8 for h in result.heads)

    trace = calibrate(tmp_path / "ee.onnx", data["calib"])
    table = profile_model(tmp_path / "ee.onnx", fast_preset)
    design = search(trace, table, Constraints(max_accuracy_drop=2.0))
    bundle = bundle_from_design(tmp_path / "ee.onnx", design, tmp_path / "model.hapi")
    report = evaluate_bundle(bundle, data["test"], device=fast_preset, full_model=source, warmup=5,
                             batch_size=32)
    assert report.full_accuracy > 0.97 and report.accuracy > report.full_accuracy - 0.05
    assert report.batch_fixed == (name == "batch1")
    assert any("one sample per call" in line for line in report.lines()) == (name == "batch1")

    # Every threshold above 1: every sample runs every stage, and the bundle is the source model.
    choices = [ExitChoice(e.name, 1.5) for e in layout.exits] + [ExitChoice(FINAL)]
    full_path = write_bundle(tmp_path / "ee.onnx", choices, tmp_path / "all.hapi")
    manifest = json.loads((full_path / "manifest.json").read_text())
    assert (manifest["input"]["shape"][0] == 1) == (name == "batch1")
    assert ("precision" in manifest["provenance"]) == (name in INT8)
    bundle_model = EarlyExitModel.load(full_path)
    x = data["test"].x
    pred = bundle_model.predict(x, return_probs=True)
    assert (pred.exit_index == 3).all()
    reference = _source_outputs(model, x)
    if name in INT8:
        np.testing.assert_array_equal(pred.classes, reference.argmax(axis=1))
    else:
        np.testing.assert_allclose(pred.probs, _softmax(reference), atol=1e-5)
    one = bundle_model.predict(x[:1], return_probs=True)  # the bound batch-1 path
    np.testing.assert_array_equal(one.classes, pred.classes[:1])


@pytest.mark.parametrize("name", INT8)
def test_int8_split_chains_back_bit_exact(name, splits, tmp_path):
    model, _ = dialect(name, splits["train"].x[:100], tmp_path)
    loaded = load_model(model)
    cuts = [c.tensor for c in candidate_exits(loaded)]
    segments = split_model(loaded, cuts)
    x = splits["test"].x[:16]
    current = x
    for segment in segments:
        session = ort.InferenceSession(segment.SerializeToString(), providers=["CPUExecutionProvider"])
        current = session.run(None, {session.get_inputs()[0].name: current})[0]
        if segment is not segments[-1]:
            assert current.dtype == (np.int8 if name == "qdq" else np.uint8)
    whole = ort.InferenceSession(loaded.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(current, whole.run(None, {"input": x})[0])


def test_fixed_batch_model_is_profiled_at_batch_1_only(splits, fast_preset, tmp_path):
    model, _ = dialect("batch1", splits["train"].x[:100], tmp_path)
    ee = attach_exits(model, splits["train"], max_candidates=1, pooling="gap").model
    from hapi_onnx.errors import HapiError

    with pytest.raises(HapiError, match="fixes its batch at 1.*Got batch_size 4 instead"):
        profile_model(ee, fast_preset, batch_size=4)
    assert ExitLayout.from_model(ee).exits


@pytest.mark.parametrize("name", ["batch1", "qoperator"])
def test_node_runtime_gives_the_python_answers_on_dialect_bundles(name, splits, tmp_path):
    """runtime-js runs a batch-1-only bundle one sample per call, and carries uint8 tensors, as Python does."""
    from test_runtime_js import CLI, JS, _run_node

    model, layout_of = dialect(name, splits["train"].x[:100], tmp_path)
    result = attach_exits(model, splits["train"], max_candidates=2, pooling="gap")
    result.save(tmp_path / "ee.onnx")
    choices = [ExitChoice(e.name, 0.9) for e in result.layout.exits] + [ExitChoice(FINAL)]
    bundle = write_bundle(tmp_path / "ee.onnx", choices, tmp_path / "model.hapi")
    x = layout_of(splits["test"].x[:64])
    np.save(tmp_path / "x.npy", x)
    python = EarlyExitModel.load(bundle).predict(x)
    assert 0 < (python.exit_index < 2).sum() < len(x)  # some samples leave early, some do not
    for args in ([], ["--batch", "16"]):
        done = _run_node(CLI, bundle, tmp_path / "x.npy", *args)
        assert done.returncode == 0, done.stderr
        answers = json.loads(done.stdout)
        np.testing.assert_array_equal(answers["classes"], python.classes)
        np.testing.assert_array_equal(answers["exits"], python.exit_index)
    done = _run_node(JS / "test" / "api_check.mjs", bundle, tmp_path / "x.npy")  # probs and progressive
    assert done.returncode == 0, done.stderr
    api = json.loads(done.stdout)
    reference = EarlyExitModel.load(bundle)
    probs = reference.predict(x, return_probs=True).probs
    np.testing.assert_allclose(api["predict"]["probs"], probs.ravel(), atol=1e-6)
    for step, want in zip(api["progressive"], reference.progressive(x), strict=True):
        np.testing.assert_array_equal(step["classes"], want.classes)
        np.testing.assert_allclose(step["probs"], want.probs.ravel(), atol=1e-6)
