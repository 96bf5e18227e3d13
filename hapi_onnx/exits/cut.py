"""Cut an over-provisioned model at its exits: the one cutter behind ``profile`` and ``bundle``.

For kept exits ``e_0 < ... < e_{m-1}`` (every exit, by default):

- ``segments[j]`` runs the backbone from exit ``j-1``'s tensor (the image for ``j = 0``) to exit
  ``j``'s tensor; ``segments[m]`` runs on to the final classifier and ends in the in-graph decision
  ops (:mod:`hapi_onnx.graph.decision`: a Softmax when the classifier ends in logits, ArgMax,
  ReduceMax), outputs class, confidence, probabilities;
- ``heads[j]`` maps exit ``j``'s tensor to its probabilities and on through the decision ops.

The profiler times these pieces one by one (every exit kept); a bundle's stage ``j`` is
``segments[j]`` and ``heads[j]`` joined into one graph (:func:`join`), and its last stage is
``segments[m]``: so the latency table times exactly the ops the bundle runs. The backbone chain
itself is :func:`hapi_onnx.graph.split_model`, which ``hapi-onnx split`` uses on plain models.

Needs only onnx (the profiler runs on the edge device).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import extract_segment, split_model
from hapi_onnx.graph.decision import DECISION_OUTPUTS, with_decision


@dataclass(frozen=True)
class Piece:
    """One standalone part of an over-provisioned model.

    Attributes:
        name (str): ``segment<k>``, ``head<k>`` or ``monolithic`` (k: the exit's index in the layout,
            or the final classifier's for the last segment).
        model (onnx.ModelProto): The piece as its own model.
        inputs (list[str]): Tensors it reads (names as in the full model).
        outputs (list[str]): Tensors it produces.
    """

    name: str
    model: onnx.ModelProto
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class ExitCut:
    """An over-provisioned model cut at some of its exits.

    Attributes:
        layout (ExitLayout): All the model's exits.
        kept (tuple[str, ...]): The exits cut at, in graph order (final classifier excluded).
        segments (tuple[Piece, ...]): ``len(kept) + 1`` backbone pieces (see the module docstring).
        heads (tuple[Piece, ...]): One head per kept exit, with the decision ops.
    """

    layout: ExitLayout
    kept: tuple[str, ...]
    segments: tuple[Piece, ...]
    heads: tuple[Piece, ...]


def cut_at_exits(ee_model: onnx.ModelProto, layout: ExitLayout, kept: Sequence[str] | None = None) -> ExitCut:
    """Cut a (loaded, shape-inferred) over-provisioned model into backbone segments and heads.

    Args:
        ee_model (onnx.ModelProto): The early-exit model from ``attach`` (not modified).
        layout (ExitLayout): Its exits.
        kept (Sequence[str] | None): Intermediate exit names to cut at, in graph order. Defaults to
            None: every exit.

    Returns:
        ExitCut: The pieces; names follow the layout's exit indices.

    Raises:
        HapiError: when an exit is unknown, repeated or out of graph order, or its tensor is not a
            single-tensor cut of the model.
    """
    index = {spec.name: k for k, spec in enumerate(layout.exits)}
    kept = [spec.name for spec in layout.exits] if kept is None else list(kept)
    unknown = [name for name in kept if name not in index]
    if unknown:
        raise HapiError(f"Exits {unknown!r} are not in the model. Its exits are {list(index)!r}.")
    order = [index[name] for name in kept]
    if order != sorted(set(order)):
        raise HapiError(f"Exits must be distinct and in graph order. Got {kept!r}.")
    specs = [layout.exits[k] for k in order]
    chain = split_model(ee_model, [spec.tensor for spec in specs], outputs=[layout.final_output])
    final = with_decision(chain[-1], layout.final_output, apply_softmax=not layout.final_is_probability)
    tensors = [layout.input] + [spec.tensor for spec in specs]
    segments = [Piece(f"segment{k}", chain[j], [tensors[j]], [tensors[j + 1]]) for j, k in enumerate(order)]
    segments.append(Piece(f"segment{len(layout.exits)}", final, [tensors[-1]], list(DECISION_OUTPUTS)))
    heads = [
        Piece(f"head{k}", with_decision(extract_segment(ee_model, [spec.tensor], [spec.output]), spec.output),
              [spec.tensor], list(DECISION_OUTPUTS))
        for k, spec in zip(order, specs, strict=True)
    ]
    return ExitCut(layout, tuple(kept), tuple(segments), tuple(heads))


def full_model(ee_model: onnx.ModelProto, layout: ExitLayout) -> Piece:
    """The original classifier, image to final output, heads dropped (the ``monolithic`` piece)."""
    ins, outs = [layout.input], [layout.final_output]
    return Piece("monolithic", extract_segment(ee_model, ins, outs), ins, outs)


def join(first: Piece, second: Piece, keep: bool = True) -> onnx.ModelProto:
    """One graph running ``first`` then ``second`` on its output.

    With ``keep`` (a bundle's intermediate stage: a segment, then its exit's head) the outputs are
    ``first``'s tensor, carried to the next stage, then ``second``'s; without (two consecutive
    segments fused, see :func:`fused_pairs`) only ``second``'s. Both pieces come from the same
    model, so their names agree; their nodes are disjoint.
    """
    (carried,) = first.outputs
    if second.inputs != [carried]:
        raise HapiError(f"Cannot join a piece ending at {carried!r} with one reading {second.inputs!r}.")
    a, b = first.model.graph, second.model.graph
    initializers = {t.name: t for t in list(a.initializer) + list(b.initializer)}
    graph = onnx.helper.make_graph(
        list(a.node) + list(b.node),
        f"{a.name}_joined",
        inputs=list(a.input),
        outputs=(list(a.output) if keep else []) + list(b.output),
        initializer=list(initializers.values()),
        value_info=[vi for vi in list(a.value_info) + list(b.value_info) if vi.name != carried],
        sparse_initializer=list(a.sparse_initializer) + list(b.sparse_initializer),
    )
    model = onnx.helper.make_model(graph, opset_imports=list(first.model.opset_import),
                                   functions=list(first.model.functions))
    model.ir_version = first.model.ir_version
    model.producer_name = first.model.producer_name
    return model


def fused_pairs(cut: ExitCut) -> list[Piece]:
    """Every two consecutive segments of ``cut`` fused in one graph: ``boundary<k>`` removes the cut at exit ``k``.

    The profiler times them next to the segments: the two segments cost more apart than fused by
    one call and by what cutting at that tensor costs (the layout conversions ONNX Runtime adds at
    a session's inputs and outputs, e.g. to and from NCHWc), which a bundle pays only where it
    keeps an exit (:meth:`~hapi_onnx.profile.table.LatencyTable.cut_costs`).
    """
    index = {spec.name: k for k, spec in enumerate(cut.layout.exits)}
    return [
        Piece(f"boundary{index[name]}", join(first, second, keep=False), list(first.inputs), list(second.outputs))
        for name, first, second in zip(cut.kept, cut.segments, cut.segments[1:], strict=False)
    ]
