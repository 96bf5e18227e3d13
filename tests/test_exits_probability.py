"""is_probability_output: a final Softmax seen through shape-only ops, and what attach/calibrate make of it."""

import numpy as np
import onnx
import pytest
from graph_models import resnet, run_model
from onnx import TensorProto, helper, numpy_helper
from test_exits_from_outputs import multi_exit

from hapi_onnx.calibrate import calibrate
from hapi_onnx.data import Dataset
from hapi_onnx.exits.attach import attach_exits
from hapi_onnx.exits.from_outputs import exits_from_outputs
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import is_probability_output, load_model

K = 5


def classifier(tail, opset: int = 17) -> onnx.ModelProto:
    """image [N,3,4,4] -> GAP -> Flatten -> Gemm ("logits" [N,K]) -> ``tail`` nodes -> "out" [N,K].

    ``tail`` is a list of ``(op_type, inputs, attrs)``; each node reads the previous tensor
    (named ``"{prev}"`` in inputs) and writes the next; the last one writes "out". Constants:
    "shape_nk" = [-1, K], "shape_nk11" = [0, K, 1, 1], "axes23" = [2, 3].
    """
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(K, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([-1, K], np.int64), "shape_nk"),
        numpy_helper.from_array(np.array([0, K, 1, 1], np.int64), "shape_nk11"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["image"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
    ]
    prev = "logits"
    for i, (op, inputs, attrs) in enumerate(tail):
        out = "out" if i == len(tail) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev if x == "{prev}" else x for x in inputs], [out], **attrs))
        prev = out
    graph = helper.make_graph(
        nodes, "clf", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", K])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


SOFTMAX = ("Softmax", ["{prev}"], {"axis": 1})
TO_NK11 = ("Reshape", ["{prev}", "shape_nk11"], {})
TO_NK = ("Reshape", ["{prev}", "shape_nk"], {})


@pytest.mark.parametrize("tail, opset, expected", [
    ([SOFTMAX], 17, True),
    ([SOFTMAX, TO_NK], 17, True),
    ([SOFTMAX, ("Identity", ["{prev}"], {}), ("Flatten", ["{prev}"], {"axis": 1})], 17, True),
    ([TO_NK11, ("Softmax", ["{prev}"], {"axis": 1}), ("Squeeze", ["{prev}", "axes23"], {})], 17, True),
    ([TO_NK11, ("Softmax", ["{prev}"], {}), ("Flatten", ["{prev}"], {"axis": 1})], 11, True),  # flattens [1:]
    ([TO_NK11, ("Softmax", ["{prev}"], {}), ("Squeeze", ["{prev}", "axes23"], {})], 17, False),  # over size-1 axis
    ([("LogSoftmax", ["{prev}"], {"axis": 1}), TO_NK], 17, False),  # log-probabilities: softmax them
    ([("Softmax", ["{prev}"], {"axis": 0}), TO_NK], 17, False),  # normalised over the batch
    ([SOFTMAX, ("Relu", ["{prev}"], {})], 17, False),  # not shape-only
    ([("Identity", ["{prev}"], {})], 17, False),  # plain logits
])
def test_softmax_is_seen_through_shape_only_ops(tail, opset, expected):
    model = load_model(classifier(tail, opset))
    assert is_probability_output(model, "out") is expected
    # the rule agrees with the numbers: rows of a probability output sum to 1
    x = np.random.default_rng(1).normal(size=(3, 3, 4, 4)).astype(np.float32)
    out = run_model(model, {"image": x})[0]
    if expected:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def with_softmax_reshape(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` whose single logits output goes through Softmax -> Reshape([-1, K]) (tf2onnx style)."""
    new = onnx.ModelProto()
    new.CopyFrom(model)
    logits = new.graph.output[0]
    classes = logits.type.tensor_type.shape.dim[1].dim_value
    new.graph.initializer.append(numpy_helper.from_array(np.array([-1, classes], np.int64), "prob_shape"))
    new.graph.node.extend([
        helper.make_node("Softmax", [logits.name], ["softmax_out"], axis=1),
        helper.make_node("Reshape", ["softmax_out", "prob_shape"], ["probs"]),
    ])
    del new.graph.output[:]
    new.graph.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes]))
    return new


def test_attach_and_calibrate_keep_the_models_own_probabilities():
    net = resnet()
    model = with_softmax_reshape(net.model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3, 16, 16)).astype(np.float32)
    logits = run_model(load_model(net.model), {"image": x})[0]
    train = Dataset(x, (logits - logits.mean(axis=0)).argmax(axis=1))
    result = attach_exits(model, train, max_candidates=1)
    assert result.layout.final_output == "probs" and result.layout.final_is_probability
    calib_x = rng.normal(size=(40, 3, 16, 16)).astype(np.float32)
    own = run_model(result.model, {"image": calib_x})[0]
    trace = calibrate(result.model, Dataset(calib_x, own.argmax(axis=1)))
    # the model's own probabilities, not softmax(probabilities) (which would squash them towards 1/K)
    np.testing.assert_allclose(trace.conf[-1], own.max(axis=1), atol=1e-6)
    np.testing.assert_array_equal(trace.pred[-1], own.argmax(axis=1))
    assert trace.accuracy[-1] == 1.0


def test_exits_from_outputs_sees_through_identity_and_reshape():
    src = multi_exit(exit_b_softmax=True, final_softmax=True)
    src.graph.initializer.append(numpy_helper.from_array(np.array([-1, 4], np.int64), "shape_n4"))
    src.graph.node.extend([
        helper.make_node("Identity", ["exit_b"], ["exit_b_id"]),
        helper.make_node("Reshape", ["final_prob", "shape_n4"], ["final_out"]),
    ])
    src.graph.output[0].name = "exit_b_id"
    src.graph.output[2].name = "final_out"
    ee = exits_from_outputs(src, final_output="final_out")
    layout = ExitLayout.from_model(ee)
    assert layout.final_output == "final_out" and layout.final_is_probability
    assert [e.output for e in layout.exits] == ["exit0_prob", "exit_b_id"]  # no Softmax added on exit B
    x = np.random.default_rng(5).normal(size=(8, 1, 8, 8)).astype(np.float32)
    final = run_model(ee, {"input": x})[0]
    trace = calibrate(ee, Dataset(x, np.arange(8) % 4))
    np.testing.assert_allclose(trace.conf[-1], final.max(axis=1), atol=1e-6)
