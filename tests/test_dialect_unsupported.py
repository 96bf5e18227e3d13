"""Constructs hapi-onnx does not handle end in one clear `error: ...` line and exit status 2, never a traceback.

A backbone inside control flow (``If``/``Loop``), two image inputs, and an output that is not
``[N, classes]`` scores, through the commands a user would run on them.
"""

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.data import Dataset

RNG = np.random.default_rng(0)


def _weights(prefix: str) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(RNG.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), f"{prefix}w"),
        numpy_helper.from_array(RNG.normal(0, 0.3, (10, 8)).astype(np.float32), f"{prefix}fc"),
    ]


def _backbone(x: str, out: str, prefix: str) -> list[onnx.NodeProto]:
    """conv -> relu -> global average pool -> flatten -> gemm: [N, 3, 8, 8] -> [N, 10]."""
    p = prefix
    return [
        helper.make_node("Conv", [x, f"{p}w"], [f"{p}c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", [f"{p}c"], [f"{p}r"]),
        helper.make_node("GlobalAveragePool", [f"{p}r"], [f"{p}g"]),
        helper.make_node("Flatten", [f"{p}g"], [f"{p}f"]),
        helper.make_node("Gemm", [f"{p}f", f"{p}fc"], [out], transB=1),
    ]


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _image(name: str = "x") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, 8, 8])


def _scores(name: str = "y") -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 10])


def backbone_in_if() -> onnx.ModelProto:
    branches = [
        helper.make_graph(_backbone("x", f"{b}_y", f"{b}_"), b, [], [_scores(f"{b}_y")], initializer=_weights(f"{b}_"))
        for b in ("then", "else")
    ]
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branches[0], else_branch=branches[1], name="maybe")
    return _model([node], [_image()], [_scores()], [cond])


def backbone_in_loop() -> onnx.ModelProto:
    body = helper.make_graph(
        _backbone("x", "body_y", "body_") + [helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _scores("body_y")],
        initializer=_weights("body_"),
    )
    trip = numpy_helper.from_array(np.array(1, np.int64), "trip")
    node = helper.make_node("Loop", ["trip", ""], ["ys"], body=body, name="repeat")
    squeeze_axis = numpy_helper.from_array(np.array([0], np.int64), "axis0")
    squeeze = helper.make_node("Squeeze", ["ys", "axis0"], ["y"])
    return _model([node, squeeze], [_image()], [_scores()], [trip, squeeze_axis])


def two_image_inputs() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "x2"], ["sum"])] + _backbone("sum", "y", "")
    return _model(nodes, [_image("x"), _image("x2")], [_scores()], _weights(""))


def segmentation_output() -> onnx.ModelProto:
    """conv -> relu -> conv: per-pixel scores [N, 10, 8, 8], not a classifier."""
    inits = _weights("") + [numpy_helper.from_array(RNG.normal(0, 0.3, (10, 8, 1, 1)).astype(np.float32), "head")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "head"], ["r2"]),
        helper.make_node("Relu", ["r2"], ["y"]),
    ]
    return _model(nodes, [_image()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10, 8, 8])], inits)


CASES = {
    "if": (backbone_in_if, ("exits", "split", "attach", "export"), "its layers run inside a control-flow node"),
    "loop": (backbone_in_loop, ("exits", "split", "attach", "export"), "Got Loop node 'repeat' holding 2 layer"),
    "two_inputs": (two_image_inputs, ("exits", "split", "attach", "export"), "expected one rank-4"),
    "segmentation": (segmentation_output, ("attach",), r"must be \[N, classes\]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unsupported_model_ends_in_one_error_line(case, run_cli, tmp_path):
    build, commands, message = CASES[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(build(), path)
    x = RNG.normal(size=(40, 3, 8, 8)).astype(np.float32)
    Dataset(x, np.arange(40) % 10).save(tmp_path / "train.npz")
    args = {
        "exits": ["exits", path],
        "split": ["split", path, "-o", tmp_path / "segments"],
        "attach": ["attach", path, "--data", tmp_path / "train.npz", "-o", tmp_path / "ee.onnx"],
        "export": ["export", path, "-o", tmp_path / "out.onnx"],
    }
    for command in commands:
        result = run_cli(*args[command])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (command, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: "), (command, result.stderr)
        assert "Traceback" not in result.output
        assert re.search(message, lines[0]), (command, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "train.npz"])  # nothing half-written
