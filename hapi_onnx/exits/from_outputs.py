"""Adopt a hand-crafted multi-exit model (SDN/MSDNet style: one classifier output per exit).

Instead of fitting heads, each extra output is taken as an exit: its branch must leave the
backbone at a single-tensor cut. That cut is found with dominators: tensor ``t`` dominates
``o`` when every path from the model input to ``o`` passes through ``t``. A tensor that
dominates both the exit output and the final output is a single-tensor cut of the backbone from
which the whole exit branch can be computed; the deepest such tensor is where the branch leaves.
"""

import onnx
from onnx import helper

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.features import image_input
from hapi_onnx.exits.layout import METADATA_KEY, ExitLayout, ExitSpec
from hapi_onnx.graph import is_probability_output, load_model, model_fingerprint
from hapi_onnx.graph.topology import constant_names, node_inputs


def dominators(graph: onnx.GraphProto) -> tuple[dict[str, frozenset[str]], dict[str, int]]:
    """Dominator set and topological position of every tensor that depends on a graph input.

    The graph must be topologically sorted. Constants (initializers, and nodes that read only
    constants) are on no path from an input, so they have no entry.

    Returns:
        tuple[dict, dict]: ``tensor -> tensors dominating it (itself included)`` and
        ``tensor -> index of its producing node`` (-1 for graph inputs).
    """
    consts = constant_names(graph)
    dom: dict[str, frozenset[str]] = {}
    position: dict[str, int] = {}
    for inp in graph.input:
        if inp.name not in consts:
            dom[inp.name], position[inp.name] = frozenset([inp.name]), -1
    for idx, node in enumerate(graph.node):
        reached = [dom[name] for name in node_inputs(node) if name in dom]
        if not reached:
            continue
        common = frozenset.intersection(*reached)
        for out in node.output:
            if out:
                dom[out], position[out] = common | {out}, idx
    return dom, position


def branch_cut(graph: onnx.GraphProto, exit_output: str, final_output: str) -> str:
    """The deepest single-tensor cut of the backbone from which ``exit_output`` is computed.

    Raises:
        HapiError: when the exit output lies on the backbone or shares no cut with it.
    """
    dom, position = dominators(graph)
    if exit_output not in dom or final_output not in dom:
        missing = exit_output if exit_output not in dom else final_output
        raise HapiError(f"Output {missing!r} does not depend on the model input; it cannot be a classifier.")
    if exit_output in dom[final_output]:
        raise HapiError(
            f"Output {exit_output!r} lies on the path to the final output {final_output!r}; "
            "an exit output must be a branch of its own."
        )
    shared = (dom[exit_output] & dom[final_output]) - {exit_output}
    cut = max(shared, key=lambda t: position[t])
    if position[cut] < 0:
        raise HapiError(
            f"Exit output {exit_output!r} does not branch off the backbone at a single tensor "
            f"(its branch reads several backbone tensors with no common cut after the input)."
        )
    return cut


def _output_dims(info: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in info.type.tensor_type.shape.dim]


def exits_from_outputs(model, final_output: str | None = None) -> onnx.ModelProto:
    """Turn a multi-exit model (one classifier output per exit) into an over-provisioned EE model.

    Every graph output other than the final one is an exit. Each exit's cut tensor is detected
    (:func:`branch_cut`); logits get a Softmax appended (probability outputs, see
    :func:`~hapi_onnx.graph.is_probability_output`, are kept as they are). The EE model's outputs
    are the final output (unchanged, first), then one probability output per exit in graph order,
    and its :class:`ExitLayout` is stored in its metadata.

    Args:
        model (str | PathLike | onnx.ModelProto): The multi-exit model (not modified).
        final_output (str | None): Name of the final classifier output. Defaults to None: the
            last output.

    Returns:
        onnx.ModelProto: The new EE model, normalised by :func:`~hapi_onnx.graph.load_model` (loading
        it again changes nothing, so its fingerprint is stable).

    Raises:
        HapiError: when the model has fewer than two outputs, outputs are not ``[N, classes]``
            with one class count, or an exit does not branch off the backbone at a single tensor.
    """
    model = load_model(model)
    if any(p.key == METADATA_KEY for p in model.metadata_props):
        raise HapiError("This model already carries an exit layout; it needs no --exits-from-outputs.")
    outputs = {o.name: o for o in model.graph.output}
    if len(outputs) < 2:
        raise HapiError(
            f"--exits-from-outputs needs a model with one output per exit plus the final classifier. "
            f"Got {len(outputs)} output(s): {list(outputs)}."
        )
    final = final_output if final_output is not None else model.graph.output[-1].name
    if final not in outputs:
        raise HapiError(f"The model has no output {final!r}. Its outputs are {list(outputs)}.")
    num_classes = None
    for name, info in outputs.items():
        dims = _output_dims(info)
        if len(dims) != 2 or not isinstance(dims[1], int) or dims[1] < 2:
            raise HapiError(f"Output {name!r} must be [N, classes]. Got shape {dims} instead.")
        if num_classes is not None and dims[1] != num_classes:
            raise HapiError(
                f"All exit outputs must have the same class count. {name!r} has {dims[1]}, "
                f"others have {num_classes}."
            )
        num_classes = dims[1]

    exits = [(branch_cut(model.graph, name, final), name) for name in outputs if name != final]
    position = dominators(model.graph)[1]
    exits.sort(key=lambda e: position[e[0]])
    cuts = [cut for cut, _ in exits]
    if len(set(cuts)) != len(cuts):
        raise HapiError(f"Two exits branch off the same backbone tensor {cuts}; keep one exit per cut.")

    taken = {name for node in model.graph.node for name in list(node.output) + [node.name]}
    taken |= {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    specs, new_outputs, new_nodes = [], [outputs[final]], []
    for k, (cut, name) in enumerate(exits):
        if is_probability_output(model, name):
            prob = name
        else:
            prob = f"exit{k}_prob"
            while prob in taken:
                prob += "_"
            taken.add(prob)
            new_nodes.append(helper.make_node("Softmax", [name], [prob], axis=1, name=f"hapi_{prob}_softmax"))
        specs.append(ExitSpec(name=f"exit{k}", tensor=cut, output=prob))
        dims = _output_dims(outputs[name])
        new_outputs.append(helper.make_tensor_value_info(prob, onnx.TensorProto.FLOAT, dims))

    ee = onnx.ModelProto()
    ee.CopyFrom(model)
    ee.graph.node.extend(new_nodes)
    del ee.graph.output[:]
    ee.graph.output.extend(new_outputs)
    layout = ExitLayout(
        input=image_input(model).name,
        final_output=final,
        final_is_probability=is_probability_output(model, final),
        num_classes=num_classes,
        exits=specs,
        source_fingerprint=model_fingerprint(model),
    )
    layout.to_model(ee)
    return load_model(ee)  # normalised, so the saved file's fingerprint is what later steps compute
