"""load_model: normalisation (checked, sorted, dynamic batch, typed) and the errors users can cause."""

import numpy as np
import onnx
import pytest
from graph_models import BUILDERS, plain_chain, resnet, run_model, shuffled
from onnx import TensorProto, helper

from hapi_onnx.errors import HapiError
from hapi_onnx.graph import fixed_batch, input_spec, load_model, load_notes, model_fingerprint
from hapi_onnx.graph.topology import is_topologically_sorted


def test_load_makes_batch_dynamic_and_types_every_tensor(tmp_path):
    net = resnet()
    path = tmp_path / "resnet.onnx"
    onnx.save(net.model, path)
    model = load_model(path)
    spec = input_spec(model)
    assert (spec.name, spec.shape, spec.dtype) == ("image", ["N", 3, 16, 16], "float32")
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    typed = {vi.name for vi in model.graph.value_info}
    assert set(net.boundaries) <= typed
    x = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    batched = run_model(model, {"image": x})[0]
    assert batched.shape == (3, 10)
    single = run_model(net.model, {"image": x[1:2]})[0]
    np.testing.assert_allclose(batched[1:2], single, atol=1e-5)


def test_load_never_mutates_the_callers_model():
    net = resnet()
    before = net.model.SerializeToString(deterministic=True)
    load_model(net.model)
    assert net.model.SerializeToString(deterministic=True) == before


def test_load_sorts_shuffled_nodes():
    net = shuffled(resnet(), seed=3)
    assert not is_topologically_sorted(net.model.graph)
    model = load_model(net.model)
    assert is_topologically_sorted(model.graph)
    x = np.random.default_rng(1).normal(size=(2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_model(model, {"image": x})[0],
                               run_model(load_model(resnet().model), {"image": x})[0], atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_test_net_loads(name):
    model = load_model(BUILDERS[name]().model)
    onnx.checker.check_model(model)


def test_fingerprint_is_stable_and_content_sensitive():
    a, b = load_model(plain_chain(0).model), load_model(plain_chain(0).model)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(load_model(plain_chain(1).model))


def test_missing_file(tmp_path):
    with pytest.raises(HapiError, match="does not exist or is not a file"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(HapiError, match="does not exist or is not a file"):
        load_model(tmp_path)


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for\n")
    with pytest.raises(HapiError, match="is not an ONNX model"):
        load_model(path)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(HapiError, match="is not an ONNX model"):
        load_model(empty)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_file(tmp_path, keep):
    data = resnet().model.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(HapiError, match="ONNX model"):
        load_model(path)


def test_checker_failure_is_a_hapi_error():
    model = resnet().model
    model.graph.node[0].input[0] = "no_such_tensor"
    with pytest.raises(HapiError, match="not a valid ONNX model"):
        load_model(model)


def _vector_model(shape, elem=TensorProto.FLOAT, extra_input=False):
    inputs = [helper.make_tensor_value_info("x", elem, shape)]
    nodes = [helper.make_node("Relu" if elem == TensorProto.FLOAT else "Abs", ["x"], ["y"])]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("z", elem, shape))
        nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", elem, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "model",
    [
        _vector_model([1, 784]),
        _vector_model([1, 1, 28, 28], elem=TensorProto.INT64),
        _vector_model([1, 3, 8, 8], extra_input=True),
    ],
    ids=["rank2", "int64", "two_inputs"],
)
def test_needs_one_rank4_float_input(model):
    with pytest.raises(HapiError, match=r"expected one rank-4 \(N,C,H,W\) float input, got"):
        load_model(model)


def _fixed_batch_reshape_model(target_from_constant_node: bool) -> onnx.ModelProto:
    """conv -> GAP -> Reshape(x, [1, -1]) -> Gemm: the batch 1 is baked into the Reshape target."""
    from graph_models import NetBuilder
    from onnx import numpy_helper

    nb = NetBuilder(0)
    pooled = nb.op("GlobalAveragePool", [nb.relu(nb.conv(nb.input, 3, 8))])
    target = np.array([1, -1], np.int64)
    if target_from_constant_node:
        shape = nb.op("Constant", [], value=numpy_helper.from_array(target))
    else:
        shape = nb.const(target, "shape")
    flat = nb.op("Reshape", [pooled, shape])
    out = nb.op("Gemm", [flat, nb.const(np.ones((10, 8), np.float32))], transB=1)
    return nb.build(out)


@pytest.mark.parametrize("constant_node", [False, True], ids=["initializer", "constant_node"])
def test_reshape_with_baked_in_batch_is_freed(constant_node):
    raw = _fixed_batch_reshape_model(target_from_constant_node=constant_node)
    model = load_model(raw)
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert len(model.graph.initializer) == len(raw.graph.initializer) + constant_node  # old target dropped
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    assert fixed_batch(model) is None
    assert any("batch made dynamic: 1 Reshape" in note for note in load_notes(model))
    x = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    batched = run_model(model, {"image": x})[0]
    singles = np.concatenate([run_model(raw, {"image": x[i:i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    assert load_notes(load_model(model)) == load_notes(model)  # recorded once, kept on reload


def _batch_mixing_model(batch: int) -> onnx.ModelProto:
    """conv -> GAP -> Flatten(axis=0) -> Gemm: the whole batch is flattened into one row."""
    from graph_models import NetBuilder

    nb = NetBuilder(0)
    pooled = nb.op("GlobalAveragePool", [nb.relu(nb.conv(nb.input, 3, 8))])
    flat = nb.op("Flatten", [pooled], axis=0)
    out = nb.op("Gemm", [flat, nb.const(np.ones((10, 8 * batch), np.float32))], transB=1)
    model = nb.build(out)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    return model


def test_batch_fixed_at_1_where_it_cannot_be_freed_runs_at_batch_1():
    raw = _batch_mixing_model(1)
    model = load_model(raw)
    assert fixed_batch(model) == 1 and input_spec(model).shape == [1, 3, 16, 16]
    (note,) = load_notes(model)
    assert "fixes the batch at 1 (output 'gemm_" in note and "batch compaction off" in note
    assert load_model(model).SerializeToString() == model.SerializeToString()  # idempotent
    x = np.random.default_rng(0).normal(size=(1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_model(model, {"image": x})[0], run_model(raw, {"image": x})[0], atol=1e-6)


def test_batch_fixed_above_1_is_refused():
    with pytest.raises(HapiError, match=r"hard-codes the batch size in its graph .* Got batch 2 instead"):
        load_model(_batch_mixing_model(2))
