"""The nine classic model-zoo graphs shipped in the onnx wheel: load, exits, split, features.

Real third-party graphs (IR 3, opset 9, every weight also a graph input, batch fixed at 1, Reshapes
with the batch baked in, ``[N, 1000, 1, 1]`` outputs; constant weights). Each must load with a
dynamic batch, offer candidate exits, split at all of them into segments that chain back to the
whole model within 1e-5 at every cut, and give pooled features at its cuts (the ORT pass
``attach`` makes, which used to fail on their weight inputs). The whole attach -> calibrate ->
profile flow on every one of them, with time and peak RSS per step, is ``bench/bench_zoo.py``:
their 1000 classes need 1000+ images and 1000-class head fits, too slow for the suite.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hapi_onnx.exits.features import collect_features
from hapi_onnx.graph import add_outputs, candidate_exits, fixed_batch, input_spec, load_model, load_notes, split_model

ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
          "squeezenet", "vgg19", "zfnet512")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", MODELS)
def test_zoo_graph_loads_exits_and_splits_back_exactly(name):
    path = ZOO / f"light_{name}.onnx"
    raw = onnx.load(str(path))
    assert raw.ir_version == 3 and len(raw.graph.input) > 1  # the dialect under test
    model = load_model(path)
    assert fixed_batch(model) is None and input_spec(model).shape == ["N", 3, 224, 224]
    assert [vi.name for vi in model.graph.input] == [input_spec(model).name]
    assert any("treated as constants" in note for note in load_notes(model))
    (out,) = model.graph.output
    assert len(out.type.tensor_type.shape.dim) == 2  # [N, 1000, 1, 1] scores come back as [N, 1000]

    cuts = [c.tensor for c in candidate_exits(model)]
    assert len(cuts) >= 5
    segments = split_model(model, cuts)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    whole = _session(add_outputs(model, cuts))
    want = dict(zip([o.name for o in whole.get_outputs()], whole.run(None, {input_spec(model).name: x}), strict=True))
    current = x
    for segment, produced in zip(segments, [*cuts, out.name], strict=True):
        session = _session(segment)
        current = session.run(None, {session.get_inputs()[0].name: current})[0]
        scale = max(1.0, float(np.abs(want[produced]).max()))
        np.testing.assert_allclose(current, want[produced], rtol=0, atol=1e-5 * scale, err_msg=produced)
    # batch 2 at once is batch 1 twice: the batch really is dynamic
    single = _session(model).run(None, {input_spec(model).name: x[1:]})[0]
    np.testing.assert_allclose(want[out.name][1:], single, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["resnet50", "squeezenet"])
def test_zoo_graph_gives_pooled_features_at_its_cuts(name):
    """The ORT feature pass attach makes: it failed on these graphs' weight inputs before."""
    model = load_model(ZOO / f"light_{name}.onnx")
    chosen = candidate_exits(model, max_candidates=2)
    x = np.random.default_rng(1).standard_normal((3, 3, 224, 224)).astype(np.float32)
    features = collect_features(model, x, [(c.tensor, c.shape) for c in chosen], pooling="gap+2x2", batch_size=2)
    assert [f.shape for f in features] == [(3, c.shape[1] * 5) for c in chosen]
    assert all(np.isfinite(f).all() for f in features)
