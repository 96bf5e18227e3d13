"""Heads on more features than samples are fitted on the span of the samples: the same head."""

import numpy as np
import onnx

from hapi_onnx.exits import heads
from hapi_onnx.exits.features import prune_to_outputs, session_from_model
from hapi_onnx.exits.heads import fit_head, head_probabilities


def wide_problem(n=120, f=400, k=7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    centres = rng.normal(0, 1, size=(k, f))
    x = (centres[y] + rng.normal(0, 2.0, size=(n, f))).astype(np.float32) + 3.0
    return x, y, k


def test_span_fit_gives_the_head_of_the_full_fit(monkeypatch):
    x, y, k = wide_problem()
    assert heads._sample_span((x - x.mean(0))[:100].astype(np.float64)).shape[1] <= 100
    reduced = fit_head(x, y, k)
    monkeypatch.setattr(heads, "_sample_span", lambda z: None)
    full = fit_head(x, y, k)
    assert reduced.l2 == full.l2
    assert abs(reduced.temperature - full.temperature) < 1e-3 * full.temperature
    p, q = head_probabilities(reduced.head, x), head_probabilities(full.head, x)
    assert np.abs(p - q).max() < 2e-3
    assert (p.argmax(1) == q.argmax(1)).mean() == 1.0
    assert reduced.heldout_accuracy == full.heldout_accuracy


def test_narrow_features_are_fitted_as_they_are():
    x, y, k = wide_problem(n=300, f=20)
    z = (x - x.mean(0)) / x.std(0)
    assert heads._sample_span(z.astype(np.float64)) is None


def test_an_ir3_model_listing_its_weights_as_inputs_keeps_only_the_inputs_it_needs():
    """IR < 4 graphs list initializers among the inputs; pruning must drop those it drops."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    unused = numpy_helper.from_array(np.ones(3, np.float32), "unused")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["unused"], ["z"])],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [1, 2]), ("w", [2, 2]),
                                                                             ("unused", [3]))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])],
        initializer=[w, unused],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    pruned = prune_to_outputs(model, [model.graph.output[0]])
    assert [i.name for i in pruned.graph.input] == ["x", "w"]
    onnx.checker.check_model(pruned)
    session = session_from_model(pruned)  # before the fix: "Required inputs (['unused']) are missing"
    assert session.run(None, {"x": np.ones((1, 2), np.float32)})[0].tolist() == [[2.0, 2.0]]
