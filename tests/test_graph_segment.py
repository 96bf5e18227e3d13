"""extract_segment / add_outputs / split_model: standalone segments that chain back to the model."""

import numpy as np
import onnx
import pytest
from graph_models import BUILDERS, plain_chain, resnet, run_chain, run_model
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError
from hapi_onnx.graph import add_outputs, extract_segment, load_model, split_model


def _images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_split_at_block_boundaries_reproduces_the_model(name):
    net = BUILDERS[name]()
    model = load_model(net.model)
    segments = split_model(model, net.boundaries)
    assert len(segments) == len(net.boundaries) + 1
    x = _images()
    expected = run_model(model, {"image": x})[0]
    for seg in segments:
        onnx.checker.check_model(seg, full_check=True)
        assert seg.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    got = run_chain(segments, x)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_segment_keeps_only_its_initializers_and_the_opset():
    net = resnet()
    model = load_model(net.model)
    seg = extract_segment(model, [net.boundaries[1]], [net.boundaries[2]])
    used = {name for node in seg.graph.node for name in node.input}
    assert {t.name for t in seg.graph.initializer} <= used
    assert len(seg.graph.initializer) < len(model.graph.initializer)
    assert list(seg.opset_import) == list(model.opset_import)
    assert seg.ir_version == model.ir_version
    assert [o.name for o in seg.graph.output] == [net.boundaries[2]]


def test_segment_with_several_inputs_and_outputs():
    net = resnet()
    model = load_model(net.model)
    stem, block1 = net.boundaries[0], net.boundaries[1]
    # inside block 1: its first relu and the shortcut together compute the block output
    relu1 = net.inside[2]
    seg = extract_segment(model, [relu1, stem], [block1])
    assert [i.name for i in seg.graph.input] == [relu1, stem]
    probe = add_outputs(model, [stem, relu1, block1])
    x = _images()
    _, s, r, b = run_model(probe, {"image": x})
    np.testing.assert_allclose(run_model(seg, {relu1: r, stem: s})[0], b, atol=1e-5)


def test_add_outputs_types_tensors_of_a_model_without_value_info():
    """A model straight from the exporter (no shape inference run yet) gets its outputs typed."""
    net = resnet()
    model = load_model(net.model)
    del model.graph.value_info[:]
    probe = add_outputs(model, [net.boundaries[0]])
    assert [o.name for o in probe.graph.output][-1] == net.boundaries[0]
    stem = run_model(probe, {"image": _images()})[-1]
    assert stem.ndim == 4


def test_outputs_not_computable_from_inputs():
    net = resnet()
    model = load_model(net.model)
    relu1 = net.inside[2]
    with pytest.raises(HapiError, match=f"also needs tensor '{net.boundaries[0]}'"):
        extract_segment(model, [relu1], [net.boundaries[1]])


def test_unknown_tensor_names():
    model = load_model(resnet().model)
    with pytest.raises(HapiError, match="'nope' .*not a node output"):
        extract_segment(model, ["image"], ["nope"])
    with pytest.raises(HapiError, match="'nope' .*hapi-onnx exits MODEL"):
        split_model(model, ["nope"])
    with pytest.raises(HapiError, match="'nope'"):
        add_outputs(model, ["nope"])


def test_split_rejects_out_of_order_and_non_cut_points():
    net = resnet()
    model = load_model(net.model)
    with pytest.raises(HapiError, match="graph order"):
        split_model(model, [net.boundaries[2], net.boundaries[1]])
    with pytest.raises(HapiError, match="also needs tensor"):
        split_model(model, [net.inside[2]])


def test_add_outputs_types_new_outputs_and_keeps_the_original():
    net = plain_chain()
    model = load_model(net.model)
    before = model.SerializeToString(deterministic=True)
    probe = add_outputs(model, net.boundaries + [model.graph.output[0].name])
    assert model.SerializeToString(deterministic=True) == before
    names = [o.name for o in probe.graph.output]
    assert names == [model.graph.output[0].name] + net.boundaries
    assert probe.graph.output[1].type.tensor_type.shape.dim[0].dim_param == "N"
    onnx.checker.check_model(probe, full_check=True)
    values = run_model(probe, {"image": _images()})
    assert values[2].shape == (3, 8, 8, 8)  # after the first maxpool


def _model_with_if():
    """x -> Relu -> If(cond; then a*w_then, else a+w_else) -> Relu; weights read only in branches."""
    then_g = helper.make_graph([helper.make_node("Mul", ["a", "w_then"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Add", ["a", "w_else"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("If", ["cond"], ["b"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.full((1, 2, 1, 1), 3.0, np.float32), "w_then"),
        numpy_helper.from_array(np.full((1, 2, 1, 1), -1.0, np.float32), "w_else"),
    ]
    shape = [1, 2, 4, 4]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_segment_keeps_initializers_read_only_inside_if_branches():
    model = load_model(_model_with_if())
    seg = extract_segment(model, ["a"], ["y"])
    assert {t.name for t in seg.graph.initializer} == {"cond", "w_then", "w_else"}
    onnx.checker.check_model(seg, full_check=True)
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(run_chain(split_model(model, ["a"]), x)[0], run_model(model, {"x": x})[0])
    first, _ = split_model(model, ["b"])  # 'a' is read only inside the If branches
    assert [n.op_type for n in first.graph.node] == ["Relu", "If"]
    with pytest.raises(HapiError, match="output 'b' is not computed from the inputs"):
        extract_segment(model, [], ["b"])


def test_split_index_round_trip_and_malformed_files(tmp_path):
    from hapi_onnx.graph import SplitIndex, write_split

    index = write_split(resnet().model, tmp_path / "split")
    assert SplitIndex.load(tmp_path / "split" / "index.json") == index
    bad = tmp_path / "split" / "index.json"
    bad.write_text('{"kind": "hapi-onnx split index", "format_version": 1, "segments": []}')
    with pytest.raises(HapiError, match="malformed"):
        SplitIndex.load(bad)
    bad.write_text('{"kind": "trace", "format_version": 1}')
    with pytest.raises(HapiError, match="is not a hapi-onnx split index file"):
        SplitIndex.load(bad)
