"""Single-tensor cut points of a CNN's graph, and the ones worth offering as early exits.

A cut point is a tensor every path from the image input to the outputs passes through: after
it is computed, nothing else computed from the input is still needed. In a topologically sorted
graph with dead nodes ignored, that is a tensor whose producer leaves exactly one live tensor
(itself). Tensors that do not depend on the input (weights, Constant nodes, shapes of
initializers) are constants and never count as live. One linear pass finds them all.

A feature map that can carry an exit is a rank-4 (N,C,H,W) tensor, float, or int8/uint8 with
the scale and zero point its model dequantizes it with (QDQ and QOperator graphs, see
:mod:`hapi_onnx.graph.quant`). In a QDQ graph the 8-bit tensor between a ``QuantizeLinear`` and
its ``DequantizeLinear`` is offered rather than the float one after it, so the stages of a
bundle carry int8 and stay int8 on both sides of every cut.
"""

from dataclasses import asdict, dataclass

import onnx

from hapi_onnx.errors import HapiError
from hapi_onnx.graph import quant
from hapi_onnx.graph.macs import node_macs
from hapi_onnx.graph.tensors import Dim, describe, dims_of, elem_type_of, is_feature_map, value_infos
from hapi_onnx.graph.topology import (
    constant_names,
    is_topologically_sorted,
    node_inputs,
    producers,
    sort_graph,
)

# Ops that act value by value (or channel by channel with fixed parameters) without changing the
# shape: a cut feeding only such ops is a pre-activation tensor of the next cut.
POINTWISE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Clip", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "BatchNormalization",
    "Identity", "Dropout", "Cast", "Abs", "Neg", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Floor",
    "Ceil", "Round", "Sign", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean",
    "QuantizeLinear", "DequantizeLinear",
})
# Ops after which the feature map has no spatial extent left.
GLOBAL_POOL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}) | quant.GLOBAL_POOL_OPS
CHANNELS_LAST_PERM = [0, 2, 3, 1]

HINT = "List the candidate exits with `hapi-onnx exits MODEL`."


@dataclass(frozen=True)
class Candidate:
    """A tensor offered as an early exit.

    Attributes:
        tensor (str): The cut tensor.
        shape (list): Its dims, ``"N"`` for the batch.
        index (int): Position of its producing node in the model's topological order.
        macs (int): Cumulative multiply-accumulates per sample up to and including that node.
        fraction (float): ``macs`` over the model's total MACs.
        dtype (str): Its element type (``float32``; ``int8``/``uint8`` for a quantized map,
            which heads read through the model's own ``DequantizeLinear``).
    """

    tensor: str
    shape: list[Dim]
    index: int
    macs: int
    fraction: float
    dtype: str = "float32"

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def cut_points(model: onnx.ModelProto) -> list[str]:
    """Every single-tensor cut point produced by a node, in topological order.

    Works on models whose nodes are not stored in topological order (a sorted copy is analysed;
    the caller's model is not changed). The graph input itself is not listed.

    Args:
        model (onnx.ModelProto): The model.

    Returns:
        list[str]: Cut tensors, shallowest first; the model's output is last when it is single.

    Raises:
        HapiError: when the graph has a cycle.
    """
    return [name for _, name in _Analysis(model).cuts]


def candidate_exits(model: onnx.ModelProto, max_candidates: int | None = None) -> list[Candidate]:
    """The cut points worth an early exit, in graph order.

    Only rank-4 feature maps qualify (float, or 8-bit with known dequantization); the model's
    outputs, everything from the global pooling (or flattening) of the backbone on, maps computed
    before any multiply-accumulate (the image itself, transposed or quantized) and channels-last
    maps (after a ``Transpose`` to N,H,W,C) are left out. Of a run of cuts joined only by
    elementwise ops (Conv -> BatchNormalization -> Relu, Add -> Relu, x * Sigmoid(x), Q -> DQ)
    only the last is offered, so no pre-activation tensor is a candidate; in a QDQ graph that is
    the 8-bit tensor the run's last ``DequantizeLinear`` reads.

    Args:
        model (onnx.ModelProto): The model (shape-inferred, e.g. from :func:`load_model`, or it is
            inferred here).
        max_candidates (int): Keep at most this many, spread evenly over the cumulative MACs, the
            deepest always kept. Defaults to None (all).

    Returns:
        list[Candidate]: Candidates, shallowest first.

    Raises:
        HapiError: when ``max_candidates`` is not a positive integer.
    """
    if max_candidates is not None and (isinstance(max_candidates, bool) or not isinstance(max_candidates, int)
                                       or max_candidates < 1):
        raise HapiError(
            f"max_candidates (the most candidate exits to keep) must be a positive integer. "
            f"Got {max_candidates!r} instead."
        )
    analysis = _Analysis(model)
    cuts = analysis.cuts
    end = analysis.spatial_end()
    picked = []
    for k, (pos, name) in enumerate(cuts):
        if pos >= end or name in analysis.outputs or not analysis.is_map(name):
            continue
        next_pos = cuts[k + 1][0] if k + 1 < len(cuts) else None
        if next_pos is not None and analysis.only_pointwise_between(pos, next_pos):
            continue
        pos, name = analysis.quantized_side(pos, name)
        if analysis.cumulative[pos] == 0 or analysis.channels_last(pos):
            continue
        picked.append(analysis.candidate(pos, name))
    if max_candidates is not None and len(picked) > max_candidates:
        picked = _spread(picked, max_candidates)
    return picked


def validate_exit_tensors(model: onnx.ModelProto, names: list[str]) -> list[Candidate]:
    """Check tensors a user named as exits; return them as candidates, in graph order.

    Any rank-4 single-tensor cut point that is float, or 8-bit with known dequantization, is
    accepted, including ones :func:`candidate_exits` leaves out (pre-activation tensors).

    Raises:
        HapiError: naming the first tensor that is unknown, repeated, the model's input or output,
            not a single-tensor cut point, or not a rank-4 float (or dequantizable 8-bit) feature map.
    """
    if isinstance(names, str):
        raise HapiError(f"exit tensors must be a list of names. Got the string {names!r} instead.")
    analysis = _Analysis(model)
    cut_at = analysis.cut_at
    seen: set[str] = set()
    found = []
    for name in names:
        if name in seen:
            raise HapiError(f"exit tensor {name!r} is named twice. Name each exit once.")
        seen.add(name)
        if name in analysis.inputs:
            raise HapiError(f"exit tensor {name!r} is the model's input, not a layer's output. {HINT}")
        if name not in analysis.made_by:
            raise HapiError(f"exit tensor {name!r} is not a tensor of this model. {HINT}")
        if name in analysis.outputs:
            raise HapiError(f"exit tensor {name!r} is an output of the model, not an inner tensor. {HINT}")
        if name not in cut_at:
            other = analysis.other_live_tensor(name)
            also = f" (the layers after it also read {other!r})" if other else ""
            raise HapiError(
                f"exit tensor {name!r} is not a single-tensor cut point{also}, so the network cannot be "
                f"split there. {HINT}"
            )
        info = analysis.infos.get(name)
        if not analysis.is_map(name):
            got = describe(info) if info is not None else f"{name!r} of unknown type"
            raise HapiError(
                f"exit tensor {name!r} must be a rank-4 float (N,C,H,W) feature map, or an int8/uint8 one with "
                f"a known scale and zero point. Got {got}. {HINT}"
            )
        found.append(analysis.candidate(cut_at[name], name))
    return sorted(found, key=lambda c: c.index)


class _Analysis:
    """Liveness of the input-dependent tensors of a sorted, shape-inferred copy of a model."""

    def __init__(self, model: onnx.ModelProto):
        self.model = _prepared(model)
        graph = self.model.graph
        nodes = graph.node
        n = len(nodes)
        inits = constant_names(graph)
        self.inputs = [vi.name for vi in graph.input if vi.name not in inits]
        self.outputs = {o.name for o in graph.output}
        self.infos = value_infos(graph)
        self.made_by = producers(graph)
        reads = [node_inputs(node) for node in nodes]
        dynamic = set(self.inputs)  # nodes are sorted: one forward pass
        for idx, node in enumerate(nodes):
            if any(name in dynamic for name in reads[idx]):
                dynamic.update(o for o in node.output if o)

        # Nodes that contribute to an output (dead branches ignored).
        needed_nodes = [False] * n
        stack = [name for name in self.outputs if name in self.made_by]
        seen = set(stack)
        while stack:
            idx = self.made_by[stack.pop()]
            if needed_nodes[idx]:
                continue
            needed_nodes[idx] = True
            for name in reads[idx]:
                if name in self.made_by and name not in seen:
                    seen.add(name)
                    stack.append(name)
        self.active = [needed_nodes[i] and any(o in dynamic for o in nodes[i].output) for i in range(n)]

        # Live interval [born, last) of every input-dependent tensor that something needed reads.
        born = {name: -1 for name in self.inputs}
        last: dict[str, int] = {}
        for idx, node in enumerate(nodes):
            if not needed_nodes[idx]:
                continue
            for name in reads[idx]:
                if name in dynamic:
                    last[name] = idx
            for out in node.output:
                if out and out in dynamic:
                    born[out] = idx
        for name in self.outputs:
            if name in dynamic:
                last[name] = n
        self.intervals = {name: (born[name], last[name]) for name in last if name in born}
        delta = [0] * (n + 2)  # delta[p + 1] for position p in -1..n
        for start, stop in self.intervals.values():
            if stop > start:
                delta[start + 1] += 1
                delta[stop + 1] -= 1
        live, running = [], 0
        for p in range(-1, n):
            running += delta[p + 1]
            live.append(running)  # live[p + 1]: tensors alive right after position p
        self.cuts = [
            (idx, out)
            for idx, node in enumerate(nodes)
            if self.active[idx] and live[idx + 1] == 1
            for out in node.output
            if out in self.intervals and self.intervals[out][1] > idx
        ]
        self.cut_at = {name: pos for pos, name in self.cuts}
        self._dequantizers: dict = {}
        macs = node_macs(self.model)
        self.cumulative, total = [], 0
        for idx in range(n):
            total += macs[idx] if needed_nodes[idx] else 0
            self.cumulative.append(total)
        self.total = total

    def candidate(self, pos: int, name: str) -> Candidate:
        info = self.infos[name]
        dims = dims_of(info) or []
        shape = ["N" if k == 0 and not isinstance(d, int) else d for k, d in enumerate(dims)]
        macs = self.cumulative[pos]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type_of(info)).name
        return Candidate(name, shape, pos, macs, macs / self.total if self.total else 0.0, dtype)

    def is_map(self, name: str) -> bool:
        """Whether ``name`` is a rank-4 float feature map, or an 8-bit one the model dequantizes."""
        info = self.infos.get(name)
        if is_feature_map(info):
            return True
        dims = dims_of(info) if info is not None else None
        return quant.is_quantized(info) and dims is not None and len(dims) == 4 and self.dequantizer(name) is not None

    def dequantizer(self, name: str):
        if name not in self._dequantizers:
            self._dequantizers[name] = quant.dequantizer(self.model, name)
        return self._dequantizers[name]

    def quantized_side(self, pos: int, name: str) -> tuple[int, str]:
        """The 8-bit cut a QDQ ``DequantizeLinear`` at ``pos`` reads, else ``(pos, name)`` itself."""
        node = self.model.graph.node[pos]
        if node.op_type == "DequantizeLinear" and node.input[0] in self.cut_at and self.is_map(node.input[0]):
            return self.cut_at[node.input[0]], node.input[0]
        return pos, name

    def channels_last(self, pos: int) -> bool:
        """Whether the map made at ``pos`` comes, through elementwise ops, from a Transpose to N,H,W,C."""
        nodes = self.model.graph.node
        while True:  # each step goes to an earlier node (topological order): it ends
            node = nodes[pos]
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                return perm == CHANNELS_LAST_PERM
            if not self.pointwise(node):
                return False
            sources = [self.made_by[n] for n in node.input if n in self.made_by and self.active[self.made_by[n]]]
            if len(sources) != 1:
                return False
            pos = sources[0]

    @staticmethod
    def pointwise(node: onnx.NodeProto) -> bool:
        if node.domain in ("", "ai.onnx"):
            return node.op_type in POINTWISE_OPS
        return node.domain == quant.MS_DOMAIN and node.op_type in quant.QUANT_POINTWISE_OPS

    def spatial_end(self) -> int:
        """Position of the first cut where the backbone stops being a spatial feature map."""
        for pos, name in self.cuts:
            node = self.model.graph.node[pos]
            if self.cumulative[pos] == 0:
                continue  # the image, quantized or transposed, before any layer
            if node.op_type in GLOBAL_POOL_OPS or not self.is_map(name):
                return pos
            if (dims_of(self.infos[name]) or [])[2:] == [1, 1]:
                return pos  # pooled to 1 x 1 (ReduceMean, an AveragePool over the whole map)
        return len(self.model.graph.node)

    def only_pointwise_between(self, start: int, stop: int) -> bool:
        """Whether every input-dependent node in positions (start, stop] is elementwise."""
        nodes = self.model.graph.node
        return all(self.pointwise(nodes[i]) for i in range(start + 1, stop + 1) if self.active[i])

    def other_live_tensor(self, name: str) -> str | None:
        """Another tensor still needed after ``name`` is produced, if any."""
        pos = self.made_by[name]
        for other, (start, stop) in self.intervals.items():
            if other != name and start <= pos < stop:
                return other
        return None


def _prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` itself if sorted and typed, else a sorted, shape-inferred copy."""
    graph = model.graph
    if not is_topologically_sorted(graph):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        if not sort_graph(copy.graph):
            raise HapiError("the model's graph has a cycle; it is not a valid ONNX model.")
        model = copy
    typed = set(value_infos(model.graph))
    if any(out and out not in typed for node in model.graph.node for out in node.output):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return model


def _spread(candidates: list[Candidate], k: int) -> list[Candidate]:
    """``k`` candidates spread evenly over cumulative MACs, the deepest always included."""
    deepest = candidates[-1].macs
    chosen: set[int] = {len(candidates) - 1}
    for step in range(k - 1, 0, -1):
        target = deepest * step / k
        free = [i for i in range(len(candidates)) if i not in chosen]
        chosen.add(min(free, key=lambda i: (abs(candidates[i].macs - target), i)))
    return [candidates[i] for i in sorted(chosen)]
