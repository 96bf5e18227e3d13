"""Multiply-accumulate counts per node, from inferred shapes, for one sample (batch dims count as 1)."""

import math

import onnx

from hapi_onnx.graph.tensors import dims_of, value_infos


def count_macs(model: onnx.ModelProto) -> dict[str, int]:
    """MACs of every node of a shape-inferred model, keyed by node name (or first output when unnamed).

    Counts Conv (grouped and depthwise included), ConvTranspose, Gemm and MatMul, and their
    quantized forms (QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger, QGemm); every other
    op counts 0. Symbolic dims (the batch) count as 1, so the numbers are per sample.

    Args:
        model (onnx.ModelProto): A model with shapes inferred (see :func:`load_model`).

    Returns:
        dict[str, int]: MACs per node, in node order.
    """
    counts: dict[str, int] = {}
    for node, macs in zip(model.graph.node, node_macs(model), strict=True):
        key = node.name or node.output[0]
        counts[key] = counts.get(key, 0) + macs
    return counts


def total_macs(model: onnx.ModelProto) -> int:
    """Sum of :func:`count_macs` over the model."""
    return sum(node_macs(model))


def node_macs(model: onnx.ModelProto) -> list[int]:
    """MACs of each node, aligned with ``model.graph.node``."""
    infos = value_infos(model.graph)

    def shape(name: str) -> list[int] | None:
        info = infos.get(name)
        dims = dims_of(info) if info is not None else None
        return None if dims is None else [d if isinstance(d, int) else 1 for d in dims]

    return [_macs(node, shape) for node in model.graph.node]


# Weight-bearing ops: (domain, op) -> (kind, index of the weight input).
WEIGHTED_OPS = {
    ("", "Conv"): ("conv", 1),
    ("", "ConvTranspose"): ("conv_transpose", 1),
    ("", "Gemm"): ("gemm", 1),
    ("", "MatMul"): ("matmul", 1),
    ("", "QLinearConv"): ("conv", 3),
    ("", "ConvInteger"): ("conv", 1),
    ("", "QLinearMatMul"): ("matmul", 3),
    ("", "MatMulInteger"): ("matmul", 1),
    ("com.microsoft", "QGemm"): ("gemm", 3),
}


def _macs(node: onnx.NodeProto, shape) -> int:
    domain = "" if node.domain == "ai.onnx" else node.domain
    kind, at = WEIGHTED_OPS.get((domain, node.op_type), (None, 0))
    if kind is None or len(node.input) <= at:
        return 0
    if kind == "conv":
        out, weight = shape(node.output[0]), shape(node.input[at])
        if out is None or weight is None:
            return 0
        return math.prod(out[1:]) * math.prod(weight[1:])  # per output value: Cin/group * kernel
    if kind == "conv_transpose":
        inp, weight = shape(node.input[0]), shape(node.input[at])
        if inp is None or weight is None:
            return 0
        return math.prod(inp[1:]) * math.prod(weight[1:])  # per input value: Cout/group * kernel
    a, out = shape(node.input[0]), shape(node.output[0])
    if a is None or out is None or not a:
        return 0
    if kind == "gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return math.prod(out[1:]) * k  # out is (M, N) with M the batch
    return math.prod(out) * a[-1]  # MatMul: symbolic (batch) dims already count as 1
