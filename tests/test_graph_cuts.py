"""cut_points / candidate_exits / validate_exit_tensors / count_macs against brute force and ground truth."""

import numpy as np
import onnx
import pytest
from graph_models import BUILDERS, resnet, run_chain, run_model, shuffled
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError
from hapi_onnx.graph import (
    candidate_exits,
    count_macs,
    cut_points,
    load_model,
    split_model,
    total_macs,
    validate_exit_tensors,
)


def _outputs_reachable_without(model: onnx.ModelProto, removed: str) -> bool:
    """Brute force: can any graph output still be reached from the graph input once ``removed`` is gone?"""
    inits = {t.name for t in model.graph.initializer}
    reached = {vi.name for vi in model.graph.input if vi.name not in inits} - {removed}
    changed = True
    while changed:  # fixpoint, so node storage order does not matter
        changed = False
        for node in model.graph.node:
            if any(i in reached for i in node.input):
                new = {o for o in node.output if o and o != removed} - reached
                if new:
                    reached |= new
                    changed = True
    return any(o.name in reached for o in model.graph.output)


def _input_dependent(model: onnx.ModelProto) -> list[str]:
    return [o for node in model.graph.node for o in node.output
            if o and _depends_on_input(model, o)]


def _depends_on_input(model, name):
    made_by = {o: n for n in model.graph.node for o in n.output}
    stack, seen = [name], set()
    graph_inputs = {vi.name for vi in model.graph.input}
    while stack:
        t = stack.pop()
        if t in graph_inputs:
            return True
        if t in seen or t not in made_by:
            continue
        seen.add(t)
        stack.extend(made_by[t].input)
    return False


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_cut_points_match_brute_force(name):
    model = load_model(BUILDERS[name]().model)
    cuts = set(cut_points(model))
    for tensor in _input_dependent(model):
        assert (tensor in cuts) == (not _outputs_reachable_without(model, tensor)), tensor


def _random_dag(seed: int, size: int = 40) -> onnx.ModelProto:
    """Relu/Add/Mul DAG over random earlier tensors, with constant-only side branches and dead ends."""
    rng = np.random.default_rng(seed)
    shape = [1, 2, 3, 3]
    tensors, nodes = ["x"], []
    nodes.append(helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
        np.ones(shape, np.float32))))
    consts = ["k"]
    for i in range(size):
        out = f"t{i}"
        roll = rng.random()
        if roll < 0.15:  # constant side branch: never depends on x
            nodes.append(helper.make_node("Relu", [consts[int(rng.integers(len(consts)))]], [out]))
            consts.append(out)
            continue
        recent = tensors[max(0, len(tensors) - 6):]
        a = recent[int(rng.integers(len(recent)))]
        if roll < 0.5:
            nodes.append(helper.make_node("Relu", [a], [out]))
        else:
            other = (consts + recent)[int(rng.integers(len(consts) + len(recent)))]
            nodes.append(helper.make_node("Add" if roll < 0.8 else "Mul", [a, other], [out]))
        tensors.append(out)
    graph = helper.make_graph(nodes, "dag", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(tensors[-1], TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("seed", range(25))
def test_cut_points_match_brute_force_on_random_dags(seed):
    model = _random_dag(seed)
    order = np.random.default_rng(seed).permutation(len(model.graph.node))
    stored = onnx.ModelProto()
    stored.CopyFrom(model)
    del stored.graph.node[:]
    stored.graph.node.extend(model.graph.node[i] for i in order)
    for variant in (model, stored):
        cuts = cut_points(variant)
        expected = [t for t in _input_dependent(model) if not _outputs_reachable_without(model, t)]
        assert cuts == expected  # same set, and in the topological order of the original


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_candidates_follow_the_ground_truth(name):
    net = BUILDERS[name]()
    model = load_model(net.model)
    cands = candidate_exits(model)
    names = [c.tensor for c in cands]
    assert set(net.boundaries) <= set(names), "every block boundary is offered"
    assert not set(names) & set(net.inside), "nothing inside a residual / multi-branch block"
    assert not set(names) & set(net.preact), "no pre-activation tensor"
    for cand in cands:
        assert not _outputs_reachable_without(model, cand.tensor)
        assert len(cand.shape) == 4 and cand.shape[0] == "N"
    assert [c.index for c in cands] == sorted(c.index for c in cands)
    fractions = [c.fraction for c in cands]
    assert fractions == sorted(fractions) and 0 < fractions[0] and fractions[-1] <= 1
    assert "image" not in names and model.graph.output[0].name not in names


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_chaining_segments_at_all_candidates_reproduces_the_model(name):
    model = load_model(BUILDERS[name]().model)
    cands = [c.tensor for c in candidate_exits(model)]
    x = np.random.default_rng(7).normal(size=(4, 3, 16, 16)).astype(np.float32)
    expected = run_model(model, {"image": x})[0]
    got = run_chain(split_model(model, cands), x)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_unsorted_model_gives_the_same_candidates_without_loading():
    net = resnet()
    raw = shuffled(net, seed=5).model
    before = raw.SerializeToString(deterministic=True)
    expected = [c.tensor for c in candidate_exits(load_model(net.model))]
    assert [c.tensor for c in candidate_exits(raw)] == expected
    assert raw.SerializeToString(deterministic=True) == before


def test_max_candidates_spreads_and_keeps_the_deepest():
    model = load_model(BUILDERS["mobilenetv2"]().model)
    every = candidate_exits(model)
    assert len(every) == 7
    for k in range(1, len(every)):
        some = candidate_exits(model, max_candidates=k)
        assert len(some) == k and some[-1] == every[-1]
        assert [c.tensor for c in some] == [c.tensor for c in every if c in some]
    assert candidate_exits(model, max_candidates=100) == every
    two = candidate_exits(model, max_candidates=2)
    assert abs(two[0].fraction - 0.5) <= min(abs(c.fraction - 0.5) for c in every) + 1e-9
    for bad in (0, -1, 1.5, True):
        with pytest.raises(HapiError, match="max_candidates .* must be a positive integer"):
            candidate_exits(model, max_candidates=bad)


def test_validate_exit_tensors():
    net = resnet()
    model = load_model(net.model)
    picked = validate_exit_tensors(model, [net.boundaries[2], net.boundaries[0]])
    assert [c.tensor for c in picked] == [net.boundaries[0], net.boundaries[2]]
    assert picked == [c for c in candidate_exits(model) if c.tensor in (net.boundaries[0], net.boundaries[2])]
    # a pre-activation cut is accepted when named explicitly
    assert validate_exit_tensors(model, [net.preact[0]])[0].tensor == net.preact[0]
    cases = {
        "nope": "not a tensor of this model",
        "image": "the model's input",
        model.graph.output[0].name: "an output of the model",
        net.inside[2]: "not a single-tensor cut point",
        [n for n in model.graph.node if n.op_type == "Flatten"][0].output[0]: "rank-4 float",
    }
    for name, message in cases.items():
        with pytest.raises(HapiError, match=message) as err:
            validate_exit_tensors(model, [name])
        assert repr(name) in str(err.value) and "hapi-onnx exits MODEL" in str(err.value)
    with pytest.raises(HapiError, match="named twice"):
        validate_exit_tensors(model, [net.boundaries[0]] * 2)


def _single_op_model(node, inputs, output, inits):
    graph = helper.make_graph([node], "g", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _w(name, shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


@pytest.mark.parametrize(
    "node, inputs, inits, expected",
    [
        (helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), [_vi("x", ["N", 3, 16, 16])],
         [_w("w", (8, 3, 3, 3))], 8 * 16 * 16 * 3 * 9),
        (helper.make_node("Conv", ["x", "w"], ["y"], group=4, strides=[2, 2], pads=[1, 1, 1, 1]),
         [_vi("x", ["N", 4, 16, 16])], [_w("w", (4, 1, 3, 3))], 4 * 8 * 8 * 9),
        (helper.make_node("Conv", ["x", "w"], ["y"], group=2), [_vi("x", ["N", 4, 5, 5])],
         [_w("w", (6, 2, 1, 1))], 6 * 25 * 2),
        (helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2]), [_vi("x", ["N", 4, 4, 4])],
         [_w("w", (4, 2, 2, 2))], 4 * 16 * 2 * 4),
        (helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), [_vi("x", ["N", 16])],
         [_w("w", (10, 16))], 160),
        (helper.make_node("MatMul", ["x", "w"], ["y"]), [_vi("x", ["N", 16])], [_w("w", (16, 10))], 160),
        (helper.make_node("Relu", ["x"], ["y"]), [_vi("x", ["N", 16])], [], 0),
    ],
    ids=["conv", "depthwise", "grouped", "conv_transpose", "gemm", "matmul", "relu"],
)
def test_count_macs(node, inputs, inits, expected):
    node.name = "op"
    model = _single_op_model(node, inputs, helper.make_tensor_value_info("y", TensorProto.FLOAT, None), inits)
    assert count_macs(model) == {"op": expected}
    assert total_macs(model) == expected


def test_cumulative_macs_end_at_the_total():
    model = load_model(resnet().model)
    cands = candidate_exits(model)
    total = total_macs(model)
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][0]
    assert cands[-1].macs == total - count_macs(model)[gemm.name]
    assert cands[-1].fraction == pytest.approx(cands[-1].macs / total)
