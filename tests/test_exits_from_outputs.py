"""--exits-from-outputs: adopting a hand-built multi-exit model (one classifier output per exit)."""

import numpy as np
import onnx
import pytest
from graph_models import run_model
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.from_outputs import branch_cut, exits_from_outputs
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import load_model, model_fingerprint

CLASSES = 4


def multi_exit(exit_b_softmax: bool = False, final_softmax: bool = False, seed: int = 0) -> onnx.ModelProto:
    """conv-relu (t1) -> strided conv-relu (t2) -> residual block (t3) -> GAP -> Gemm (logits), plus
    exit A off t1 (GAP-Gemm) and exit B off t2, whose branch also reads a3 (computed from t2)."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        scale = (2.0 / np.prod(shape[1:])) ** 0.5
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    inits = [w("c1", 4, 1, 3, 3), w("c2", 8, 4, 3, 3), w("c3", 8, 8, 3, 3), w("fc", CLASSES, 8),
             w("e0w", CLASSES, 4), w("e1w", CLASSES, 8), w("e1c", 8, 8, 1, 1)]
    nodes = [
        helper.make_node("Conv", ["input", "c1"], ["a1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["t1"]),
        helper.make_node("Conv", ["t1", "c2"], ["a2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["a2"], ["t2"]),
        helper.make_node("Conv", ["t2", "c3"], ["a3"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a3", "t2"], ["s3"]),
        helper.make_node("Relu", ["s3"], ["t3"]),
        helper.make_node("GlobalAveragePool", ["t3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["final_logits"], transB=1),
        helper.make_node("GlobalAveragePool", ["t1"], ["e0g"]),
        helper.make_node("Flatten", ["e0g"], ["e0f"]),
        helper.make_node("Gemm", ["e0f", "e0w"], ["exit_a"], transB=1),
        helper.make_node("Conv", ["t2", "e1c"], ["e1a"]),
        helper.make_node("Add", ["e1a", "a3"], ["e1s"]),
        helper.make_node("GlobalAveragePool", ["e1s"], ["e1g"]),
        helper.make_node("Flatten", ["e1g"], ["e1f"]),
        helper.make_node("Gemm", ["e1f", "e1w"], ["exit_b_logits"], transB=1),
    ]
    exit_b, final = "exit_b_logits", "final_logits"
    if exit_b_softmax:
        nodes.append(helper.make_node("Softmax", ["exit_b_logits"], ["exit_b"], axis=1))
        exit_b = "exit_b"
    if final_softmax:
        nodes.append(helper.make_node("Softmax", ["final_logits"], ["final_prob"], axis=1))
        final = "final_prob"
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", CLASSES])
               for name in (exit_b, "exit_a", final)]  # deliberately not in graph order
    graph = helper.make_graph(nodes, "multi_exit", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                   ["N", 1, 8, 8])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = np.random.default_rng(3).normal(size=(6, 1, 8, 8)).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_cuts_are_the_deepest_shared_dominators():
    graph = load_model(multi_exit()).graph
    assert branch_cut(graph, "exit_a", "final_logits") == "t1"
    # exit B reads t2 and a3; a3 is computed from t2 alone, so the branch leaves at t2
    assert branch_cut(graph, "exit_b_logits", "final_logits") == "t2"


def test_logit_exits_get_softmax_and_outputs_are_ordered():
    src = multi_exit()
    before = model_fingerprint(src)
    ee = exits_from_outputs(src)
    assert model_fingerprint(src) == before
    onnx.checker.check_model(ee, full_check=True)
    layout = ExitLayout.from_model(ee)
    assert [(e.name, e.tensor, e.output) for e in layout.exits] == [
        ("exit0", "t1", "exit0_prob"), ("exit1", "t2", "exit1_prob")]
    assert (layout.final_output, layout.final_is_probability, layout.num_classes) == ("final_logits", False, 4)
    assert [o.name for o in ee.graph.output] == ["final_logits", "exit0_prob", "exit1_prob"]
    src_out = dict(zip([o.name for o in src.graph.output], run_model(src, {"input": X}), strict=True))
    final, p0, p1 = run_model(ee, {"input": X})
    np.testing.assert_array_equal(final, src_out["final_logits"])
    np.testing.assert_allclose(p0, softmax(src_out["exit_a"]), atol=1e-6)
    np.testing.assert_allclose(p1, softmax(src_out["exit_b_logits"]), atol=1e-6)
    assert model_fingerprint(load_model(ee)) == model_fingerprint(ee)


def test_probability_outputs_are_kept_and_a_named_final_is_honoured():
    ee = exits_from_outputs(multi_exit(exit_b_softmax=True, final_softmax=True), final_output="final_prob")
    layout = ExitLayout.from_model(ee)
    assert [e.output for e in layout.exits] == ["exit0_prob", "exit_b"]
    assert layout.final_output == "final_prob" and layout.final_is_probability


def test_errors():
    with pytest.raises(HapiError, match="one output per exit"):
        single = multi_exit()
        del single.graph.output[:2]
        exits_from_outputs(single)
    with pytest.raises(HapiError, match="has no output 'nope'"):
        exits_from_outputs(multi_exit(), final_output="nope")
    with pytest.raises(HapiError, match="lies on the path"):
        on_path = multi_exit()
        on_path.graph.node.append(helper.make_node("Identity", ["final_logits"], ["final2"]))
        on_path.graph.output.append(helper.make_tensor_value_info("final2", TensorProto.FLOAT, ["N", CLASSES]))
        exits_from_outputs(on_path)
    with pytest.raises(HapiError, match="must be \\[N, classes\\]"):
        wrong = multi_exit()
        wrong.graph.output.append(helper.make_tensor_value_info("t2", TensorProto.FLOAT, ["N", 8, 4, 4]))
        exits_from_outputs(wrong)
    with pytest.raises(HapiError, match="does not branch off the backbone"):
        from_input = multi_exit()
        from_input.graph.initializer.append(numpy_helper.from_array(np.ones((CLASSES, 1), np.float32), "inw"))
        from_input.graph.node.extend([
            helper.make_node("GlobalAveragePool", ["input"], ["ig"]),
            helper.make_node("Flatten", ["ig"], ["if"]),
            helper.make_node("Gemm", ["if", "inw"], ["exit_in"], transB=1),
        ])
        from_input.graph.output.insert(0, helper.make_tensor_value_info("exit_in", TensorProto.FLOAT, ["N", CLASSES]))
        exits_from_outputs(from_input)
    with pytest.raises(HapiError, match="already carries"):
        exits_from_outputs(exits_from_outputs(multi_exit()))


def test_cli_exits_from_outputs(tmp_path, run_cli):
    onnx.save(multi_exit(), tmp_path / "multi.onnx")
    result = run_cli("attach", tmp_path / "multi.onnx", "--exits-from-outputs", "-o", tmp_path / "ee.onnx")
    assert result.exit_code == 0, result.output
    assert "exit1" in result.output and "t2" in result.output
    assert len(ExitLayout.from_model(onnx.load(tmp_path / "ee.onnx")).exits) == 2
    result = run_cli("attach", tmp_path / "multi.onnx", "--exits-from-outputs", "--data", "x.npz",
                     "-o", tmp_path / "ee2.onnx")
    assert result.exit_code == 2 and "fits nothing" in result.output
