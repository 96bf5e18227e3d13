"""Multiply-accumulate counts per node, from inferred shapes, for one sample (batch dims count as 1)."""

import math

import onnx

from hapi_onnx.graph.tensors import dims_of, value_infos


def count_macs(model: onnx.ModelProto) -> dict[str, int]:
    """MACs of every node of a shape-inferred model, keyed by node name (or first output when unnamed).

    Counts Conv (grouped and depthwise included), ConvTranspose, Gemm and MatMul; every other op
    counts 0. Symbolic dims (the batch) count as 1, so the numbers are per sample.

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


def _macs(node: onnx.NodeProto, shape) -> int:
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    if op == "Conv":
        out, weight = shape(node.output[0]), shape(node.input[1])
        if out is None or weight is None:
            return 0
        return math.prod(out[1:]) * math.prod(weight[1:])  # per output value: Cin/group * kernel
    if op == "ConvTranspose":
        inp, weight = shape(node.input[0]), shape(node.input[1])
        if inp is None or weight is None:
            return 0
        return math.prod(inp[1:]) * math.prod(weight[1:])  # per input value: Cout/group * kernel
    a, out = shape(node.input[0]), shape(node.output[0])
    if a is None or out is None or not a:
        return 0
    if op == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
        return math.prod(out[1:]) * k  # out is (M, N) with M the batch
    return math.prod(out) * a[-1]  # MatMul: symbolic (batch) dims already count as 1
