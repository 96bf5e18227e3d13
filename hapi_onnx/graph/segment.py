"""Cut standalone ONNX models out of a model: a segment between tensors, extra outputs, a split chain."""

from collections import deque

import onnx

from hapi_onnx.errors import HapiError
from hapi_onnx.graph.tensors import value_infos
from hapi_onnx.graph.topology import (
    constant_names,
    downstream_of,
    node_inputs,
    producers,
    topological_order,
)


def extract_segment(model: onnx.ModelProto, inputs: list[str], outputs: list[str]) -> onnx.ModelProto:
    """The subgraph of ``model`` computing ``outputs`` from ``inputs``, as a new valid model.

    The segment keeps the opset imports, IR version and local functions of ``model``, holds only
    the nodes and initializers (dense or sparse, including those read inside ``If``/``Loop``
    bodies) it needs, and types its inputs and outputs from the model's shapes, so a dynamic
    batch stays dynamic. Feed it with the values ``model`` computes for ``inputs``.

    Args:
        model (onnx.ModelProto): A shape-inferred model (see :func:`load_model`). Not changed.
        inputs (list[str]): Tensors the segment receives, in the order of its graph inputs.
        outputs (list[str]): Tensors it returns, in the order of its graph outputs.

    Returns:
        onnx.ModelProto: The segment; it passes ``onnx.checker``.

    Raises:
        HapiError: when a name is not a tensor of ``model``, or ``outputs`` need a tensor
            (other than initializers) that is not among ``inputs``.
    """
    graph = model.graph
    made_by = producers(graph)
    inits = constant_names(graph)
    known = set(made_by) | {vi.name for vi in graph.input}
    _check_names("inputs", inputs, known - inits, "a node output or graph input")
    _check_names("outputs", outputs, set(made_by), "a node output")
    infos = _typed_infos(model, list(inputs) + list(outputs))
    if not outputs:
        raise HapiError("extract_segment needs at least one output tensor. Got [] instead.")
    both = sorted(set(inputs) & set(outputs))
    if both:
        raise HapiError(f"tensor {both[0]!r} is both an input and an output of the segment; drop one.")

    given = set(inputs)
    graph_inputs = [vi.name for vi in graph.input if vi.name not in inits]
    dynamic = downstream_of(graph, graph_inputs)
    reachable = downstream_of(graph, given)
    chosen: set[int] = set()
    used_inits: set[str] = set()
    queue = deque(outputs)
    seen: set[str] = set()
    while queue:  # breadth first, so the missing tensor named is the one nearest the outputs
        name = queue.popleft()
        if name in seen or name in given:
            continue
        seen.add(name)
        if name in made_by and (name not in dynamic or name in reachable):
            idx = made_by[name]
            if idx not in chosen:
                chosen.add(idx)
                queue.extend(node_inputs(graph.node[idx]))
        elif name in inits:
            used_inits.add(name)
        elif name in outputs:
            raise HapiError(
                f"output {name!r} is not computed from the inputs {list(inputs)}; "
                "pick inputs upstream of it (see `hapi-onnx exits MODEL`)."
            )
        else:
            raise HapiError(
                f"the segment from {list(inputs)} to {list(outputs)} also needs tensor {name!r}, "
                "which is not among the inputs. Add it to the inputs, or cut at a single-tensor cut point "
                "(see `hapi-onnx exits MODEL`)."
            )

    nodes = [graph.node[idx] for idx in sorted(chosen)]
    order = topological_order(nodes)
    nodes = [nodes[i] for i in order] if order is not None else nodes
    boundary = given | set(outputs)
    inner = [infos[n] for n in _node_outputs(nodes) if n in infos and n not in boundary]

    seg_graph = onnx.helper.make_graph(
        nodes,
        f"{graph.name or 'graph'}_segment",
        inputs=[infos[name] for name in inputs],
        outputs=[infos[name] for name in outputs],
        initializer=[t for t in graph.initializer if t.name in used_inits],
        value_info=inner,
        sparse_initializer=[t for t in graph.sparse_initializer if t.values.name in used_inits],
    )
    return _model_like(model, seg_graph)


def prune_to(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """``model`` from all its graph inputs to ``outputs`` only: :func:`extract_segment`, the one pruner.

    Nodes keep their stored order; a tensor of ``outputs`` needs a type (a value_info entry, or
    one shape inference can find).
    """
    return extract_segment(model, graph_inputs(model), outputs)


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """The model's graph inputs that are not initializers (what a caller feeds)."""
    inits = constant_names(model.graph)
    return [vi.name for vi in model.graph.input if vi.name not in inits]


def add_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns ``tensors`` (appended after its outputs, typed from shapes).

    Tensors already among the outputs are not repeated.

    Raises:
        HapiError: when a name is not a tensor produced by a node of ``model``.
    """
    _check_names("tensors", tensors, set(producers(model.graph)), "a node output")
    infos = _typed_infos(model, tensors)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    present = {o.name for o in result.graph.output}
    for name in tensors:
        if name not in present:
            result.graph.output.append(infos[name])
            present.add(name)
    keep = [vi for vi in result.graph.value_info if vi.name not in present]
    del result.graph.value_info[:]
    result.graph.value_info.extend(keep)
    return result


def split_model(model: onnx.ModelProto, at: list[str], outputs: list[str] | None = None) -> list[onnx.ModelProto]:
    """Split ``model`` into a chain of segments at cut tensors.

    Segment 0 maps the graph inputs to ``at[0]``, segment k maps ``at[k-1]`` to ``at[k]``, and the
    last maps ``at[-1]`` to the model's outputs, so feeding each segment's output into the next
    reproduces the model.

    Args:
        model (onnx.ModelProto): A shape-inferred model (see :func:`load_model`). Not changed.
        at (list[str]): Single-tensor cut points, in graph order (see :func:`cut_points`).
        outputs (list[str] | None): What the last segment returns. Defaults to None: the model's
            outputs.

    Returns:
        list[onnx.ModelProto]: ``len(at) + 1`` segments.

    Raises:
        HapiError: when a name is unknown, repeated, out of graph order, or not a cut point.
    """
    at = list(at)
    made_by = producers(model.graph)
    _check_names("at", at, set(made_by), "a node output")
    if len(set(at)) != len(at):
        raise HapiError(f"split points must be distinct. Got {at!r} instead.")
    positions = [made_by[name] for name in at]
    if positions != sorted(positions):
        ordered = [name for _, name in sorted(zip(positions, at, strict=True))]
        raise HapiError(f"split points must be in graph order. Got {at!r}; in graph order: {ordered!r}.")
    last = [o.name for o in model.graph.output] if outputs is None else list(outputs)
    bounds = [graph_inputs(model)] + [[name] for name in at] + [last]
    return [extract_segment(model, bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]


def _check_names(what: str, names: list[str], allowed: set[str], kind: str) -> None:
    if isinstance(names, str):
        raise HapiError(f"{what} must be a list of tensor names. Got the string {names!r} instead.")
    for name in names:
        if name not in allowed:
            raise HapiError(
                f"{name!r} (in {what}) is not {kind} of this model. "
                "List the usable tensors with `hapi-onnx exits MODEL`."
            )


def _typed_infos(model: onnx.ModelProto, names: list[str]) -> dict[str, onnx.ValueInfoProto]:
    """Types of the model's tensors, running shape inference when one of ``names`` has none."""
    infos = value_infos(model.graph)
    if any(name not in infos for name in names):
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        infos = value_infos(inferred.graph)
    missing = [name for name in names if name not in infos]
    if missing:
        raise HapiError(
            f"tensor {missing[0]!r} has no known type (shape inference could not type it); "
            "load the model with hapi_onnx.graph.load_model first."
        )
    return infos


def _node_outputs(nodes: list[onnx.NodeProto]) -> list[str]:
    return [out for node in nodes for out in node.output if out]


def _model_like(model: onnx.ModelProto, graph: onnx.GraphProto) -> onnx.ModelProto:
    result = onnx.helper.make_model(
        graph, opset_imports=list(model.opset_import), functions=list(model.functions)
    )
    result.ir_version = model.ir_version
    result.producer_name = "hapi-onnx"
    result.model_version = model.model_version
    return result
