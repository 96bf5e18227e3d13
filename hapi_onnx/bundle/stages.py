"""Cut an over-provisioned model into the stage graphs of a bundle.

Stage ``j`` = the backbone from the previous kept exit's tensor (the image for ``j = 0``) to kept
exit ``j``'s tensor, plus exit ``j``'s head, plus in-graph decision outputs: top-1 class (ArgMax,
int64[N]), confidence (ReduceMax of the probabilities, float32[N]) and the probabilities. The
tensor at exit ``j`` is also an output: the next stage's input. The last stage runs the rest of
the backbone and the original classifier, with a Softmax added when it ends in logits. Heads
that were not chosen are not in any stage.
"""

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import extract_segment

CLASS_OUTPUT = "hapi_class"
CONFIDENCE_OUTPUT = "hapi_confidence"
PROBS_OUTPUT = "hapi_probs"


@dataclass(frozen=True)
class StageGraph:
    """One stage of a bundle, before it is written.

    Attributes:
        name (str): Exit the stage ends at (``exit<k>`` or ``final``).
        input (str): The stage's one input tensor.
        carried (str | None): Output carried to the next stage (``None`` for the last stage).
        model (onnx.ModelProto): The stage graph with outputs carried (if any), class, confidence, probs.
    """

    name: str
    input: str
    carried: str | None
    model: onnx.ModelProto


def stage_graphs(ee_model: onnx.ModelProto, layout: ExitLayout, exits: list[str]) -> list[StageGraph]:
    """Build the stage graphs for the kept ``exits`` of an over-provisioned model.

    Args:
        ee_model (onnx.ModelProto): The over-provisioned model (not modified).
        layout (ExitLayout): Its exits.
        exits (list[str]): Kept intermediate exit names in graph order, without ``final``.

    Returns:
        list[StageGraph]: One per kept exit, then the final stage.

    Raises:
        HapiError: when an exit name is unknown or the exits are not in graph order.
    """
    by_name = {e.name: (i, e) for i, e in enumerate(layout.exits)}
    unknown = [e for e in exits if e not in by_name]
    if unknown:
        raise HapiError(
            f"Exits {unknown!r} are not in the model. Its exits are {[e.name for e in layout.exits]!r}."
        )
    order = [by_name[e][0] for e in exits]
    if order != sorted(set(order)):
        raise HapiError(f"Exits must be distinct and in graph order. Got {exits!r}.")
    opset = _default_opset(ee_model)
    stages, current = [], layout.input
    for name in exits:
        spec = by_name[name][1]
        segment = extract_segment(ee_model, [current], [spec.tensor, spec.output])
        model = _with_decision(segment, spec.output, spec.tensor, apply_softmax=False, opset=opset)
        stages.append(StageGraph(name=name, input=current, carried=spec.tensor, model=model))
        current = spec.tensor
    segment = extract_segment(ee_model, [current], [layout.final_output])
    model = _with_decision(
        segment, layout.final_output, None, apply_softmax=not layout.final_is_probability, opset=opset
    )
    stages.append(StageGraph(name="final", input=current, carried=None, model=model))
    return stages


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise HapiError("The model imports no default-domain (ai.onnx) opset; it is not a valid ONNX model.")


def _with_decision(
    segment: onnx.ModelProto, scores: str, carried: str | None, apply_softmax: bool, opset: int
) -> onnx.ModelProto:
    """A copy of ``segment`` whose outputs are [carried], class, confidence, probabilities.

    ``scores`` (a segment output) holds probabilities, or logits when ``apply_softmax``.
    """
    model = copy.deepcopy(segment)
    graph = model.graph
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    clash = names & {CLASS_OUTPUT, CONFIDENCE_OUTPUT, PROBS_OUTPUT}
    if clash:
        raise HapiError(
            f"The model already has tensors named {sorted(clash)!r}; rename them before bundling."
        )
    if apply_softmax:
        graph.node.append(helper.make_node("Softmax", [scores], [PROBS_OUTPUT], axis=1, name="hapi_softmax"))
    else:
        _rename_tensor(graph, scores, PROBS_OUTPUT)
    graph.node.append(
        helper.make_node("ArgMax", [PROBS_OUTPUT], [CLASS_OUTPUT], axis=1, keepdims=0, name="hapi_argmax")
    )
    if opset >= 18:
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "hapi_class_axis"))
        reduce = helper.make_node(
            "ReduceMax", [PROBS_OUTPUT, "hapi_class_axis"], [CONFIDENCE_OUTPUT],
            keepdims=0, name="hapi_reducemax",
        )
    else:
        reduce = helper.make_node(
            "ReduceMax", [PROBS_OUTPUT], [CONFIDENCE_OUTPUT], axes=[1], keepdims=0, name="hapi_reducemax"
        )
    graph.node.append(reduce)
    carried_info = [o for o in graph.output if o.name == carried]
    del graph.output[:]
    graph.output.extend(carried_info)
    graph.output.extend([
        helper.make_tensor_value_info(CLASS_OUTPUT, TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info(CONFIDENCE_OUTPUT, TensorProto.FLOAT, ["N"]),
        helper.make_tensor_value_info(PROBS_OUTPUT, TensorProto.FLOAT, ["N", "C"]),
    ])
    _check_scores(model, scores)
    return model


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def _check_scores(model: onnx.ModelProto, scores: str) -> None:
    """The scores must be float32 of rank 2 (N, C): what ArgMax/ReduceMax over axis 1 expect."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError as err:
        raise HapiError(f"The stage graph ending at {scores!r} does not type-check: {err}") from None
    for info in inferred.graph.output:
        if info.name == PROBS_OUTPUT:
            t = info.type.tensor_type
            rank = len(t.shape.dim) if t.HasField("shape") else None
            if t.elem_type != TensorProto.FLOAT or rank not in (None, 2):
                raise HapiError(
                    f"Exit output {scores!r} must be float32 scores of shape (N, classes). "
                    f"Got element type {TensorProto.DataType.Name(t.elem_type)} and rank {rank}."
                )

