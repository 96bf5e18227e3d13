"""The stage graphs of a bundle: the kept exits' pieces of the one cutter, each segment joined with its head.

Stage ``j`` = the backbone from the previous kept exit's tensor (the image for ``j = 0``) to kept
exit ``j``'s tensor, plus exit ``j``'s head, with the in-graph decision outputs: top-1 class
(int64[N]), confidence (float32[N]) and probabilities; the tensor at exit ``j`` is also an output,
the next stage's input. The last stage runs the rest of the backbone and the original classifier.
Heads that were not chosen are in no stage. The pieces come from
:func:`hapi_onnx.exits.cut.cut_at_exits`, the same cutter the profiler times.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from hapi_onnx.exits.cut import cut_at_exits, join
from hapi_onnx.exits.layout import ExitLayout


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


def stage_graphs(ee_model: onnx.ModelProto, layout: ExitLayout, kept: Sequence[str]) -> list[StageGraph]:
    """The stage graphs for the kept intermediate exits (graph order, ``final`` excluded).

    Raises:
        HapiError: when an exit name is unknown or the exits are not in graph order.
    """
    cut = cut_at_exits(ee_model, layout, kept)
    stages = [
        StageGraph(name, segment.inputs[0], segment.outputs[0], join(segment, head))
        for name, segment, head in zip(cut.kept, cut.segments, cut.heads, strict=False)
    ]
    last = cut.segments[-1]
    stages.append(StageGraph("final", last.inputs[0], None, last.model))
    return stages
