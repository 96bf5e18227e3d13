"""Pooled features at the cut tensors, collected in one ONNX Runtime pass over a dataset.

The backbone is extended with pooling nodes at each cut (see :mod:`hapi_onnx.exits.pooling`) and
pruned to what those need, so ORT returns only ``[batch, dim]`` vectors: memory is bounded by
N x (sum of pooled dims), never by the size of the feature maps.
"""

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from hapi_onnx.data import Dataset, check_compatible
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.pooling import pooled_features
from hapi_onnx.graph.quant import float_view
from hapi_onnx.graph.topology import node_inputs

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after every batch."""


def image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The model's single non-initializer input.

    Raises:
        HapiError: when the model has no input or more than one.
    """
    inits = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise HapiError(
            f"Expected a model with exactly one input (the image batch). Got {len(inputs)}: "
            f"{[i.name for i in inputs]}."
        )
    return inputs[0]


def input_shape(model: onnx.ModelProto) -> list[int | str | None]:
    """Static dims as ints, symbolic ones as their name (or None), of the model's image input."""
    dims = image_input(model).type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def check_labelled(
    model: onnx.ModelProto, data: Dataset, num_classes: int, role: str, labels_required: bool = True
) -> None:
    """Check a dataset against the model: input dtype and shape, labels, class count.

    Args:
        model (onnx.ModelProto): The model the data will be fed to.
        data (Dataset): The data (already validated for NaNs, rank and dtype by :class:`Dataset`).
        num_classes (int): The model's class count.
        role (str): What the data is for, used in messages (e.g. "training data").
        labels_required (bool): Refuse data without labels. Defaults to True.

    Raises:
        HapiError: when the data cannot be used with this model.
    """
    if not isinstance(data, Dataset):
        raise HapiError(f"{role} must be a hapi_onnx.data.Dataset. Got {type(data).__name__} instead.")
    if data.y is None and labels_required:
        raise HapiError(f"{role} has no labels; save it with np.savez(path, x=images, y=labels).")
    elem = image_input(model).type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise HapiError(
            f"The model's input must be float32 to be fed images. Got "
            f"{onnx.TensorProto.DataType.Name(elem).lower()} instead; re-export it with a float32 input."
        )
    check_compatible(data, input_shape(model), num_classes)
    if data.classes is not None and len(data.classes) != num_classes:
        raise HapiError(
            f"{role} names {len(data.classes)} classes but the model has {num_classes}. "
            "Check that the data belongs to this model."
        )


def run_batch_size(model: onnx.ModelProto, requested: int) -> int:
    """``requested``, unless the model's batch axis is fixed, in which case that fixed size."""
    if requested < 1:
        raise HapiError(f"batch_size must be a positive integer. Got {requested!r} instead.")
    shape = input_shape(model)
    if shape and isinstance(shape[0], int) and shape[0] > 0:
        return shape[0]
    return requested


def session_from_model(model: onnx.ModelProto) -> ort.InferenceSession:
    """A CPU ONNX Runtime session on an in-memory model, warnings silenced."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own Fail/InvalidGraph types
        raise HapiError(f"ONNX Runtime cannot load the model: {err}") from None


def prune_to_outputs(model: onnx.ModelProto, outputs: Sequence[onnx.ValueInfoProto]) -> onnx.ModelProto:
    """A new model with the given outputs, keeping only the nodes and initializers they need.

    Args:
        model (onnx.ModelProto): The model (not modified).
        outputs (Sequence[onnx.ValueInfoProto]): The outputs of the new model.

    Returns:
        onnx.ModelProto: The pruned copy.
    """
    needed = {o.name for o in outputs}
    kept = []
    for node in reversed(model.graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node_inputs(node))
    graph = model.graph
    pruned = helper.make_graph(
        nodes=list(reversed(kept)),
        name=graph.name,
        inputs=list(graph.input),
        outputs=list(outputs),
        initializer=[init for init in graph.initializer if init.name in needed],
        value_info=[vi for vi in graph.value_info if vi.name in needed],
    )
    new = onnx.ModelProto()
    new.CopyFrom(model)
    new.graph.CopyFrom(pruned)
    return new


def feature_model(
    model: onnx.ModelProto, cuts: Sequence[tuple[str, Sequence]], pooling: str = "gap"
) -> tuple[onnx.ModelProto, list[int]]:
    """The backbone up to the cuts, whose outputs are the pooled features at each cut.

    An int8/uint8 cut (QDQ, QOperator) is pooled after the ``DequantizeLinear`` its model reads
    it with (:func:`~hapi_onnx.graph.quant.float_view`), as its head will be.

    Args:
        model (onnx.ModelProto): The backbone (not modified).
        cuts (Sequence[tuple[str, Sequence]]): ``(tensor, shape)`` of each cut.
        pooling (str): See :func:`~hapi_onnx.exits.pooling.pooled_features`. Defaults to "gap".

    Returns:
        tuple[onnx.ModelProto, list[int]]: The feature model (output k = features of cut k) and
        the feature dimension of each cut.
    """
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    outputs, dims = [], []
    for k, (tensor, shape) in enumerate(cuts):
        prefix = f"hapi_features{k}/"
        nodes, inits, source = float_view(model, tensor, prefix)  # an 8-bit cut: the model's own DQ
        pooled = pooled_features(source, shape, pooling, prefix=prefix)
        extended.graph.node.extend(nodes + pooled.nodes)
        extended.graph.initializer.extend(inits)
        outputs.append(helper.make_tensor_value_info(pooled.output, onnx.TensorProto.FLOAT, None))
        dims.append(pooled.dim)
    return prune_to_outputs(extended, outputs), dims


def collect_features(
    model: onnx.ModelProto,
    x: np.ndarray,
    cuts: Sequence[tuple[str, Sequence]],
    pooling: str = "gap",
    batch_size: int = 256,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Pooled features of every sample at every cut, from one batched ORT pass.

    Args:
        model (onnx.ModelProto): The backbone (not modified).
        x (np.ndarray): float32 inputs ``[N, ...]`` matching the model's input.
        cuts (Sequence[tuple[str, Sequence]]): ``(tensor, shape)`` of each cut.
        pooling (str): ``gap`` or ``gap+2x2``. Defaults to "gap".
        batch_size (int): Samples per ORT run. Defaults to 256.
        progress (Progress | None): Called with ``(done, total)`` after each batch. Defaults to None.

    Returns:
        list[np.ndarray]: float32 ``[N, dim_k]`` per cut.
    """
    features_model, dims = feature_model(model, cuts, pooling)
    session = session_from_model(features_model)
    name = image_input(model).name
    out_names = [o.name for o in features_model.graph.output]
    n = len(x)
    batch = run_batch_size(model, batch_size)
    fixed = isinstance(input_shape(model)[0], int)
    features = [np.empty((n, d), dtype=np.float32) for d in dims]
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        chunk = np.ascontiguousarray(x[start:stop], dtype=np.float32)
        if len(chunk) < batch and fixed:  # a fixed batch axis: pad the last batch
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], np.float32)])
        for dst, got in zip(features, session.run(out_names, {name: chunk}), strict=True):
            dst[start:stop] = got.reshape(len(got), -1)[: stop - start]
        if progress is not None:
            progress(stop, n)
    return features
