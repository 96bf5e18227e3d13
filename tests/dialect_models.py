"""The demo MNIST CNN written in the dialects real CNN files come in, each computing what the demo computes.

* ``ir3``: IR version 3, every initializer also listed as a graph input, batch fixed at 1 (as the
  classic model-zoo graphs are written);
* ``reshape_batch``: the flatten before the classifier is a Reshape to the constant ``[1, 64]``;
* ``batch1``: the flatten is ``Flatten(axis=0)``, which folds the whole batch into one row, so
  the graph only runs at batch 1 (no rewrite can free it);
* ``nhwc``: channels-last input ``N x 28 x 28 x 1`` and a Transpose inside (TF/Keras exports);
* ``qdq`` / ``qoperator``: ``onnxruntime.quantization.quantize_static`` models calibrated on 100
  training digits: QDQ with int8 activations, QOperator with uint8 activations (QLinearConv,
  com.microsoft QLinearAdd/QGemm...), the combinations ORT recommends on x86.

Every builder returns ``(model, to_model_layout)``: the model and the function that turns NCHW
MNIST images into what it takes.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

DEMO = Path(__file__).resolve().parent.parent / "examples" / "mnist" / "model.onnx"
DIALECTS = ("ir3", "reshape_batch", "batch1", "nhwc", "qdq", "qoperator")


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def demo() -> onnx.ModelProto:
    return onnx.load(str(DEMO))


def _flatten_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "Flatten")


def _fix_batch(model: onnx.ModelProto) -> None:
    for info in (model.graph.input[0], model.graph.output[0]):
        info.type.tensor_type.shape.dim[0].dim_value = 1


def ir3() -> onnx.ModelProto:
    model = demo()
    _fix_batch(model)
    model.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in model.graph.initializer
    )
    model.ir_version = 3
    return model


def reshape_batch() -> onnx.ModelProto:
    model = demo()
    _fix_batch(model)
    flatten = _flatten_node(model)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 64], np.int64), "hapi_test_shape"))
    reshape = helper.make_node("Reshape", [flatten.input[0], "hapi_test_shape"], list(flatten.output), name="/Reshape")
    flatten.CopyFrom(reshape)
    return model


def batch1() -> onnx.ModelProto:
    model = demo()
    _fix_batch(model)
    next(a for a in _flatten_node(model).attribute if a.name == "axis").i = 0
    return model


def nhwc() -> onnx.ModelProto:
    model = demo()
    image = model.graph.input[0]
    name = image.name
    first = [n for n in model.graph.node if name in n.input]
    for node in first:
        node.input[:] = ["nchw" if i == name else i for i in node.input]
    model.graph.node.insert(0, helper.make_node("Transpose", [name], ["nchw"], perm=[0, 3, 1, 2], name="/to_nchw"))
    dims = image.type.tensor_type.shape.dim
    sizes = [dims[1].dim_value, dims[2].dim_value, dims[3].dim_value]
    for dim, size in zip(dims[1:], sizes[1:] + sizes[:1], strict=True):
        dim.dim_value = size
    return model


def quantized(fmt: str, calibration: np.ndarray, tmp: Path) -> onnx.ModelProto:
    """The demo quantized with ``quantize_static``: int8 weights; int8 (QDQ) or uint8 (QOperator) activations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = demo().graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.batches, None)

    out = tmp / f"demo_{fmt.lower()}.onnx"
    activations = QuantType.QInt8 if fmt == "QDQ" else QuantType.QUInt8
    quantize_static(str(DEMO), str(out), Reader(), quant_format=getattr(QuantFormat, fmt),
                    activation_type=activations, weight_type=QuantType.QInt8)
    return onnx.load(str(out))


def dialect(name: str, calibration: np.ndarray, tmp: Path) -> tuple[onnx.ModelProto, Callable]:
    """``(model, to_model_layout)`` of one of :data:`DIALECTS`."""
    if name == "qdq":
        return quantized("QDQ", calibration, tmp), _same
    if name == "qoperator":
        return quantized("QOperator", calibration, tmp), _same
    builders = {"ir3": ir3, "reshape_batch": reshape_batch, "batch1": batch1, "nhwc": nhwc}
    return builders[name](), _channels_last if name == "nhwc" else _same
