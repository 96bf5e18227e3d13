"""Quantized (int8/uint8) tensors of QDQ and QOperator graphs, read as float the way the model reads them.

``onnxruntime.quantization.quantize_static`` writes two dialects. QDQ keeps float ops between
``QuantizeLinear -> DequantizeLinear`` pairs (ORT fuses each DQ -> op -> Q into an int8 kernel);
its cut points worth carrying are the int8 tensors between a Q and its DQ. QOperator replaces
ops by ``QLinearConv``, ``com.microsoft`` ``QLinearAdd``, ``QGemm``... that pass uint8/int8
tensors, each with a scale and zero point held by the op that produced it. In both, a stage of
a bundle carries the 8-bit tensor and an exit head reads it through the same
``DequantizeLinear`` (same scale, same zero point) the backbone applies.

Also here: output shapes of the ``com.microsoft`` quantized ops, which onnx's shape inference
does not know. Needs ``onnx`` and numpy only.
"""

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError
from hapi_onnx.graph.tensors import dims_of, elem_type_of, value_infos
from hapi_onnx.graph.topology import producers

QUANT_TYPES = frozenset({TensorProto.INT8, TensorProto.UINT8})
MS_DOMAIN = "com.microsoft"

# Where a quantized op keeps the scale and zero point of its output: (domain, op) -> input indices.
OUTPUT_QPARAMS = {
    ("", "QuantizeLinear"): (1, 2),
    ("", "QLinearConv"): (6, 7),
    ("", "QLinearMatMul"): (6, 7),
    (MS_DOMAIN, "QLinearAdd"): (6, 7),
    (MS_DOMAIN, "QLinearMul"): (6, 7),
    (MS_DOMAIN, "QLinearGlobalAveragePool"): (3, 4),
    (MS_DOMAIN, "QLinearAveragePool"): (3, 4),
    (MS_DOMAIN, "QLinearLeakyRelu"): (3, 4),
    (MS_DOMAIN, "QLinearSigmoid"): (3, 4),
    (MS_DOMAIN, "QLinearSoftmax"): (3, 4),
    (MS_DOMAIN, "QLinearConcat"): (0, 1),
    (MS_DOMAIN, "QGemm"): (7, 8),
}
# Ops that move 8-bit values without rescaling them (quantize_static's Direct8BitOp, QMaxPool, ...).
PASS_THROUGH_OPS = frozenset({
    "MaxPool", "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Pad", "Resize",
    "Split", "Slice", "DepthToSpace", "SpaceToDepth",
})
# Quantized ops that act value by value (a run of cuts joined by them is one block boundary).
QUANT_POINTWISE_OPS = frozenset({"QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid"})
GLOBAL_POOL_OPS = frozenset({"QLinearGlobalAveragePool"})


@dataclass(frozen=True)
class Dequantizer:
    """The ``DequantizeLinear`` a model applies to one of its 8-bit tensors.

    Attributes:
        tensor (str): The quantized tensor (int8 or uint8).
        elem_type (int): Its ``onnx.TensorProto`` element type.
        scale (np.ndarray): float32 scale (a scalar, or per ``axis``).
        zero_point (np.ndarray): Zero point, of the tensor's element type.
        axis (int | None): Axis of a per-axis scale; None when per tensor.
    """

    tensor: str
    elem_type: int
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def nodes(self, prefix: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
        """A ``DequantizeLinear`` of :attr:`tensor` with its own copies of the scale and zero point.

        Args:
            prefix (str): Prefix of the new node, initializer and output names.

        Returns:
            tuple: ``(nodes, initializers, float output name)``.
        """
        scale, zero, out = f"{prefix}dq_scale", f"{prefix}dq_zero_point", f"{prefix}dequantized"
        attrs = {} if self.axis is None else {"axis": self.axis}
        node = helper.make_node("DequantizeLinear", [self.tensor, scale, zero], [out], name=f"{prefix}dequantize",
                                **attrs)
        inits = [numpy_helper.from_array(self.scale, scale), numpy_helper.from_array(self.zero_point, zero)]
        return [node], inits, out


def float_view(model: onnx.ModelProto, tensor: str, prefix: str) -> tuple[list, list, str]:
    """Nodes that read ``tensor`` as float: the model's own dequantization of an 8-bit tensor, else none.

    Returns:
        tuple: ``(nodes, initializers, float tensor name)``; ``([], [], tensor)`` for a float tensor.
    """
    found = dequantizer(model, tensor)
    return ([], [], tensor) if found is None else found.nodes(prefix)


def is_quantized(info: onnx.ValueInfoProto | None) -> bool:
    """Whether a tensor is int8 or uint8."""
    return info is not None and elem_type_of(info) in QUANT_TYPES


def dequantizer(model: onnx.ModelProto, tensor: str) -> Dequantizer | None:
    """How ``model`` reads its 8-bit tensor ``tensor`` as float, or None when it is not one.

    The scale and zero point come from the op that produced the tensor (``QuantizeLinear``,
    ``QLinearConv``, ``QLinearAdd``, ...), looking through ops that only move 8-bit values
    (``MaxPool``, ``Reshape``, ``Transpose``...), else from a ``DequantizeLinear`` reading it.
    Both must be initializers.

    Args:
        model (onnx.ModelProto): A shape-inferred model (see :func:`~hapi_onnx.graph.load_model`).
        tensor (str): A tensor of it.

    Returns:
        Dequantizer | None: The scale and zero point, or None (not 8-bit, or not found).
    """
    graph = model.graph
    if not is_quantized(value_infos(graph).get(tensor)):
        return None
    made_by = producers(graph)
    name, seen = tensor, set()
    while name in made_by and name not in seen:
        seen.add(name)
        node = graph.node[made_by[name]]
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        if key in OUTPUT_QPARAMS:
            found = _params(model, tensor, node, *OUTPUT_QPARAMS[key])
            if found is not None:
                return found
            break
        if key[0] == "" and node.op_type in PASS_THROUGH_OPS and node.input:
            name = node.input[0]
            continue
        break
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] == tensor:
            return _params(model, tensor, node, 1, 2)
    return None


def _params(model: onnx.ModelProto, tensor: str, node: onnx.NodeProto, scale_at: int, zero_at: int):
    inits = {t.name: t for t in model.graph.initializer}
    names = list(node.input)
    if len(names) <= scale_at or names[scale_at] not in inits:
        return None
    scale = numpy_helper.to_array(inits[names[scale_at]]).astype(np.float32)
    elem = elem_type_of(value_infos(model.graph)[tensor])
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    if len(names) > zero_at and names[zero_at]:
        if names[zero_at] not in inits:
            return None
        zero = numpy_helper.to_array(inits[names[zero_at]])
    else:
        zero = np.zeros(scale.shape, dtype)
    if zero.dtype != dtype:
        return None
    axis = None
    if scale.ndim:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    return Dequantizer(tensor, elem, scale, zero, axis)


def quantization_format(model: onnx.ModelProto) -> str | None:
    """``"QOperator"``, ``"QDQ"`` or None (a float model), from the ops the graph holds."""
    ops = {node.op_type for node in model.graph.node}
    if any(op.startswith("QLinear") or op in ("QGemm", "ConvInteger", "MatMulInteger") for op in ops):
        return "QOperator"
    if "QuantizeLinear" in ops or ("DequantizeLinear" in ops and _dequantizes_activations(model)):
        return "QDQ"
    return None


def _dequantizes_activations(model: onnx.ModelProto) -> bool:
    inits = {t.name for t in model.graph.initializer}
    return any(n.op_type == "DequantizeLinear" and n.input[0] not in inits for n in model.graph.node)


def ms_output_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Types and shapes of ``com.microsoft`` quantized-op outputs computable from typed inputs.

    onnx's shape inference skips these ops (QLinearAdd, QLinearGlobalAveragePool, QGemm, ...), so
    everything after the first one stays untyped; :func:`~hapi_onnx.graph.load_model` adds what
    this returns and infers again until nothing new is found.

    Returns:
        dict[str, onnx.ValueInfoProto]: New value infos, by tensor name (outputs already typed are
        left out).
    """
    infos = value_infos(model.graph)
    found = {}
    for node in model.graph.node:
        if node.domain != MS_DOMAIN or not node.output or node.output[0] in infos:
            continue
        result = _ms_output(node, infos)
        if result is not None:
            elem, dims = result
            found[node.output[0]] = helper.make_tensor_value_info(node.output[0], elem, dims)
    return found


def _ms_output(node: onnx.NodeProto, infos) -> tuple[int, list] | None:
    """(element type, dims) of a com.microsoft quantized op's output, or None when unknown."""

    def shape(i: int):
        if len(node.input) <= i or node.input[i] not in infos:
            return None
        return dims_of(infos[node.input[i]])

    def elem(i: int) -> int:
        return elem_type_of(infos[node.input[i]]) if len(node.input) > i and node.input[i] in infos else 0

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op in ("QLinearAdd", "QLinearMul"):
        a, b = shape(0), shape(3)
        out = _broadcast(a, b) if a is not None and b is not None else None
        return None if out is None else (elem(7) or elem(0), out)
    if op in ("QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax"):
        a = shape(0)
        return None if a is None else (elem(4) or elem(0), a)
    if op == "QLinearGlobalAveragePool":
        a = shape(0)
        if a is None or len(a) < 3:
            return None
        if attrs.get("channels_last", 0):
            return elem(0), [a[0], *[1] * (len(a) - 2), a[-1]]
        return elem(0), [a[0], a[1], *[1] * (len(a) - 2)]
    if op == "QLinearAveragePool":
        a = shape(0)
        return None if a is None or attrs.get("channels_last", 0) else _pool_shape(a, attrs, elem(4) or elem(0))
    if op == "QLinearConcat":
        parts = [shape(i) for i in range(2, len(node.input), 3)]
        if not parts or any(p is None for p in parts):
            return None
        axis = attrs.get("axis", 1) % len(parts[0])
        if not all(isinstance(p[axis], int) for p in parts):
            return None
        out = list(parts[0])
        out[axis] = sum(p[axis] for p in parts)
        return elem(1) or elem(2), out
    if op == "QGemm":
        a, b = shape(0), shape(3)
        if a is None or b is None or len(a) != 2 or len(b) != 2:
            return None
        m = a[1] if attrs.get("transA", 0) else a[0]
        n = b[0] if attrs.get("transB", 0) else b[1]
        return (elem(8) if len(node.input) > 8 and node.input[8] else TensorProto.FLOAT), [m, n]
    return None


def _broadcast(a: list, b: list) -> list | None:
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + list(a), [1] * (rank - len(b)) + list(b)
    out = []
    for x, y in zip(a, b, strict=True):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return out


def _pool_shape(a: list, attrs: dict, elem: int) -> tuple[int, list] | None:
    kernel = attrs.get("kernel_shape")
    if not kernel or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    k = len(kernel)
    strides = attrs.get("strides", [1] * k)
    pads = attrs.get("pads", [0] * 2 * k)
    rounding = math.ceil if attrs.get("ceil_mode", 0) else math.floor
    spatial = []
    for i, size in enumerate(a[2:]):
        if not isinstance(size, int):
            return None
        spatial.append(rounding((size + pads[i] + pads[i + k] - kernel[i]) / strides[i]) + 1)
    return elem, [a[0], a[1], *spatial]


FLOAT_SCALE_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16})


def check_quant_params(model: onnx.ModelProto, label: str) -> None:
    """Refuse quantization parameters ONNX Runtime cannot run, or runs to garbage, before any work.

    Each ``QuantizeLinear``/``DequantizeLinear`` scale held as a constant must be a float type,
    finite (and > 0 for ``QuantizeLinear``, which divides by it), a scalar or one value per
    channel of its axis (when that size is known), with as many zero points; the constant float
    scales of the ``QLinear*`` ops must be finite.

    Raises:
        HapiError: naming the node, the parameter and what is wrong with it.
    """
    graph = model.graph
    consts = {init.name: init for init in graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    infos = value_infos(graph)

    def refuse(node: onnx.NodeProto, what: str, problem: str) -> HapiError:
        return HapiError(
            f"{label}: {node.op_type} node {node.name or node.output[0]!r} has {what} {problem}; ONNX Runtime "
            "cannot run it correctly. Quantize the model again (e.g. onnxruntime.quantization.quantize_static)."
        )

    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale_names = node.input[1:2]
        elif node.op_type.startswith("QLinear") or node.op_type == "QGemm":
            scale_names = [n for n in node.input if n in consts and consts[n].data_type in FLOAT_SCALE_TYPES]
        else:
            continue
        for name in scale_names:
            if name not in consts:
                continue  # computed at run time: nothing to check here
            tensor = consts[name]
            what = f"the scale {name!r}"
            if tensor.data_type not in FLOAT_SCALE_TYPES:
                raise refuse(node, what, f"of type {TensorProto.DataType.Name(tensor.data_type).lower()}, "
                             "not float")
            scale = numpy_helper.to_array(tensor).astype(np.float64)
            if not np.isfinite(scale).all():
                raise refuse(node, what, f"{scale.ravel()[:4].tolist()}: a scale must be finite")
            if node.op_type == "QuantizeLinear" and (scale <= 0).any():  # it divides by the scale
                raise refuse(node, what, f"{scale.ravel()[:4].tolist()}: a quantization scale must be > 0")
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                continue
            if scale.ndim > 1:
                raise refuse(node, what, f"of shape {list(scale.shape)}: expected a scalar or one value per channel")
            if len(node.input) > 2 and node.input[2] in consts:
                zero = numpy_helper.to_array(consts[node.input[2]])
                if zero.size != scale.size:  # [1] and a scalar are both one value (quantize_static writes them)
                    raise refuse(node, what, f"of {scale.size} value(s) but a zero point of {zero.size}")
            if scale.ndim == 1 and scale.size > 1:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                x = node.input[0]
                dims = list(consts[x].dims) if x in consts else dims_of(infos[x]) if x in infos else None
                if dims is not None and -len(dims) <= axis < len(dims) and isinstance(dims[axis], int) \
                        and dims[axis] != scale.size:
                    raise refuse(node, what, f"with {scale.size} values for axis {axis} of size {dims[axis]}")
