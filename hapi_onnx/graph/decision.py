"""In-graph exit decision: top-1 class, confidence and probabilities as outputs of a graph.

Every stage of a bundle ends in these ops, and the profiler times its heads (and the last
segment) with exactly the same ops, so the latency table sees what the bundle runs. Needs only
onnx and numpy (the profiler runs on the edge device).
"""

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError

CLASS_OUTPUT = "hapi_class"
CONFIDENCE_OUTPUT = "hapi_confidence"
PROBS_OUTPUT = "hapi_probs"
DECISION_OUTPUTS = (CLASS_OUTPUT, CONFIDENCE_OUTPUT, PROBS_OUTPUT)


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version.

    Raises:
        HapiError: when the model imports no default-domain opset.
    """
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise HapiError("The model imports no default-domain (ai.onnx) opset; it is not a valid ONNX model.")


def with_decision(
    model: onnx.ModelProto, scores: str, carried: str | None = None, apply_softmax: bool = False
) -> onnx.ModelProto:
    """A copy of ``model`` whose outputs are ``[carried]``, class, confidence, probabilities.

    Adds ``ArgMax`` (int64[N]) and ``ReduceMax`` (float32[N]) over axis 1 of the probabilities,
    and a ``Softmax`` first when ``scores`` holds logits.

    Args:
        model (onnx.ModelProto): A graph producing ``scores`` (float32[N, C]); not modified.
        scores (str): The tensor holding probabilities, or logits when ``apply_softmax``.
        carried (str | None): A graph output kept as the first output (a stage's carried
            tensor). Defaults to none.
        apply_softmax (bool): Turn logits into probabilities first. Defaults to False.

    Returns:
        onnx.ModelProto: The new model, outputs named :data:`DECISION_OUTPUTS` after ``carried``.

    Raises:
        HapiError: when the decision output names are taken, or ``scores`` is not float32 of rank 2.
    """
    opset = default_opset(model)
    model = copy.deepcopy(model)
    graph = model.graph
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    clash = names & set(DECISION_OUTPUTS)
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
        raise HapiError(f"The graph ending at {scores!r} does not type-check: {err}") from None
    for info in inferred.graph.output:
        if info.name == PROBS_OUTPUT:
            t = info.type.tensor_type
            rank = len(t.shape.dim) if t.HasField("shape") else None
            if t.elem_type != TensorProto.FLOAT or rank not in (None, 2):
                raise HapiError(
                    f"Exit output {scores!r} must be float32 scores of shape (N, classes). "
                    f"Got element type {TensorProto.DataType.Name(t.elem_type)} and rank {rank}."
                )


__all__ = [
    "CLASS_OUTPUT",
    "CONFIDENCE_OUTPUT",
    "DECISION_OUTPUTS",
    "PROBS_OUTPUT",
    "default_opset",
    "with_decision",
]
