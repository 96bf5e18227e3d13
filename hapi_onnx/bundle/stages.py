"""Cut an over-provisioned model into the stage graphs of a bundle.

Stage ``j`` = the backbone from the previous kept exit's tensor (the image for ``j = 0``) to kept
exit ``j``'s tensor, plus exit ``j``'s head, plus in-graph decision outputs: top-1 class (ArgMax,
int64[N]), confidence (ReduceMax of the probabilities, float32[N]) and the probabilities. The
tensor at exit ``j`` is also an output: the next stage's input. The last stage runs the rest of
the backbone and the original classifier, with a Softmax added when it ends in logits. Heads
that were not chosen are not in any stage. The decision ops come from
:mod:`hapi_onnx.graph.decision`, shared with the profiler, which times the same ops.
"""

from dataclasses import dataclass

import onnx

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import extract_segment
from hapi_onnx.graph.decision import CLASS_OUTPUT, CONFIDENCE_OUTPUT, PROBS_OUTPUT, with_decision


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
    stages, current = [], layout.input
    for name in exits:
        spec = by_name[name][1]
        segment = extract_segment(ee_model, [current], [spec.tensor, spec.output])
        model = with_decision(segment, spec.output, spec.tensor, apply_softmax=False)
        stages.append(StageGraph(name=name, input=current, carried=spec.tensor, model=model))
        current = spec.tensor
    segment = extract_segment(ee_model, [current], [layout.final_output])
    model = with_decision(segment, layout.final_output, None, apply_softmax=not layout.final_is_probability)
    stages.append(StageGraph(name="final", input=current, carried=None, model=model))
    return stages


__all__ = ["CLASS_OUTPUT", "CONFIDENCE_OUTPUT", "PROBS_OUTPUT", "StageGraph", "stage_graphs"]
