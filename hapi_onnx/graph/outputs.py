"""What a classifier output holds: softmax probabilities, or scores that still need a softmax.

Exporters often put shape-only ops after the final Softmax (tf2onnx: Softmax -> Identity or
Reshape; Keras heads: Softmax -> Squeeze/Flatten). Those ops move no value across rows or
classes, so the output is still probabilities and must not get a second Softmax. Needs ``onnx``
only: the profiler and bundle writer may import it next to the runtime dependencies.
"""

import math

import onnx

from hapi_onnx.graph.tensors import dims_of, value_infos

SHAPE_ONLY_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def softmax_source(model: onnx.ModelProto, name: str) -> onnx.NodeProto | None:
    """The node ``name`` comes from once shape-only ops (``SHAPE_ONLY_OPS``) are walked back over.

    Returns:
        onnx.NodeProto | None: That node, or None when ``name`` is a graph input or initializer.
    """
    made_by = {out: node for node in model.graph.node for out in node.output if out}
    node = made_by.get(name)
    seen = set()
    while node is not None and node.op_type in SHAPE_ONLY_OPS and node.input and id(node) not in seen:
        seen.add(id(node))
        node = made_by.get(node.input[0])
    return node


def is_probability_output(model: onnx.ModelProto, name: str) -> bool:
    """Whether the ``[N, K]`` output ``name`` already holds softmax probabilities over its K classes.

    True when it is a Softmax, possibly followed by shape-only ops (Identity, Reshape, Flatten,
    Squeeze, Unsqueeze), whose normalised axes hold exactly the K classes of each sample: the
    batch axis is not normalised and every other axis has size 1. ``LogSoftmax`` counts as
    scores (log-probabilities): ``softmax(log_softmax(x)) == softmax(x)``, so adding a Softmax
    after it gives the right probabilities. Shapes come from the model's ``value_info`` (a model
    from :func:`~hapi_onnx.graph.load_model` has them); when they are unknown the answer is
    False, the safe side for logits.

    Args:
        model (onnx.ModelProto): The model (not modified).
        name (str): A graph output of shape ``[N, K]`` with a static K.

    Returns:
        bool: Whether no Softmax must be added after ``name``.
    """
    node = softmax_source(model, name)
    if node is None or node.op_type != "Softmax":
        return False
    infos = value_infos(model.graph)
    out_info, soft_info = infos.get(name), infos.get(node.output[0])
    out_dims = dims_of(out_info) if out_info is not None else None
    dims = dims_of(soft_info) if soft_info is not None else None
    if out_dims is None or len(out_dims) != 2 or not isinstance(out_dims[1], int) or dims is None or not dims:
        return False
    opset = _opset(model)
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    rank = len(dims)
    if not -rank <= axis < rank:
        return False
    axis %= rank
    normalised = [axis] if opset >= 13 else list(range(axis, rank))  # opset < 13 flattens [axis:]
    if 0 in normalised:
        return False  # the batch axis is normalised: samples are mixed
    others = [d for i, d in enumerate(dims[1:], start=1) if i not in normalised]
    sizes = [dims[i] for i in normalised]
    if any(d != 1 for d in others) or not all(isinstance(d, int) for d in sizes):
        return False
    return math.prod(sizes) == out_dims[1]
