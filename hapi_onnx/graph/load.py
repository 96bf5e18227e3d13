"""Load an ONNX CNN and normalise it: checked, shape-inferred, dynamic batch, topologically sorted."""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output
from hapi_onnx.graph.tensors import FLOAT_TYPES, Dim, describe, dims_of, elem_type_of, value_infos
from hapi_onnx.graph.topology import constant_names, is_topologically_sorted, node_inputs, sort_graph

BATCH_DIM = "N"


@dataclass(frozen=True)
class InputSpec:
    """The image input of a model.

    Attributes:
        name (str): Graph input name.
        shape (list): Dims, ``"N"`` (or another name) for the dynamic batch.
        dtype (str): numpy dtype name, e.g. ``"float32"``.
    """

    name: str
    shape: list[Dim]
    dtype: str


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load and normalise an ONNX image classifier.

    The result is a new model (the caller's is never changed) that passes ``onnx.checker``,
    stores its nodes in topological order, has a dynamic batch dimension (``"N"``) on its
    single rank-4 float input, and carries inferred shapes for every tensor in ``value_info``.

    Args:
        source (str | PathLike | onnx.ModelProto): A path to a ``.onnx`` file, or a model.

    Returns:
        onnx.ModelProto: The normalised copy.

    Raises:
        HapiError: when the file is missing, is not ONNX (or is truncated), fails the checker,
            or does not have exactly one rank-4 (N,C,H,W) float input.
    """
    model, label = _read(source)
    if not is_topologically_sorted(model.graph):
        sort_graph(model.graph)  # a cycle is left for the checker to report
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HapiError(f"{label} is not a valid ONNX model: {first}") from None
    image = _image_input(model, label)
    batch = _make_batch_dynamic(model, image)
    if batch is None:
        return _infer_shapes(model, label)
    del model.graph.value_info[:]
    inferred = _infer_shapes(model, label)
    if _free_reshape_batch(inferred, batch):
        del inferred.graph.value_info[:]
        for out in inferred.graph.output:
            _set_batch_param(out, batch)
        inferred = _infer_shapes(inferred, label)
    for out in inferred.graph.output:
        dims = dims_of(out)
        if dims and isinstance(dims[0], int):
            raise HapiError(
                f"{label} seems to hard-code the batch size in its graph: output {out.name!r} has batch "
                f"{dims[0]} even with a dynamic input batch. Re-export it with a dynamic batch axis "
                "(e.g. torch.onnx.export(..., dynamic_axes={'input': {0: 'N'}}))."
            )
    return inferred


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (no half-written file on failure)."""
    with atomic_output(path) as tmp:
        onnx.save(model, str(tmp))


def model_fingerprint(model: onnx.ModelProto) -> str:
    """Hex sha256 of the model's deterministic serialisation."""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def input_spec(model: onnx.ModelProto) -> InputSpec:
    """Name, shape and dtype of the model's image input (the one graph input that is not an initializer).

    Raises:
        HapiError: when the model does not have exactly one rank-4 float input.
    """
    info = _image_input(model, "the model")
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type_of(info)).name
    return InputSpec(name=info.name, shape=dims_of(info), dtype=dtype)


def parse_input_shape(value: Any) -> tuple[int, ...]:
    """``N,C,H,W`` as four positive ints, from text (``1,3,224,224`` or ``1x3x224x224``) or a sequence.

    Raises:
        HapiError: when it is not four positive whole numbers.
    """
    parts = value.replace("x", ",").split(",") if isinstance(value, str) else value
    try:
        dims = tuple(_whole(d) for d in parts)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise HapiError(
            f"input shape must be four positive ints N,C,H,W such as 1,3,224,224. Got {value!r} instead."
        )
    return dims


def _whole(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value.strip()) if isinstance(value, str) else int(value)


def _read(source: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        label = "the model"
    else:
        path = Path(source)
        label = repr(str(path))
        if not path.is_file():
            raise HapiError(f"model file {label} does not exist or is not a file.")
        try:
            model = onnx.load(str(path))
        except DecodeError:
            raise HapiError(
                f"{label} is not an ONNX model, or the file is truncated (protobuf could not parse it). "
                "Re-export it, e.g. with `hapi-onnx export`."
            ) from None
        except (OSError, ValueError) as err:
            raise HapiError(f"{label} could not be loaded as ONNX: {err}") from None
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise HapiError(
            f"{label} is not an ONNX model (no graph, no nodes or no IR version; the file may be "
            "empty or truncated). Re-export it, e.g. with `hapi-onnx export`."
        )
    return model, label


def _image_input(model: onnx.ModelProto, label: str) -> onnx.ValueInfoProto:
    inits = constant_names(model.graph)
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) == 1:
        dims = dims_of(inputs[0])
        if elem_type_of(inputs[0]) in FLOAT_TYPES and dims is not None and len(dims) == 4:
            return inputs[0]
    got = ", ".join(describe(vi) for vi in inputs) or "no inputs"
    raise HapiError(
        f"{label}: expected one rank-4 (N,C,H,W) float input, got {len(inputs)} input(s): {got}. "
        "hapi-onnx handles image CNNs; export the model with a single NCHW image input."
    )


def _make_batch_dynamic(model: onnx.ModelProto, image: onnx.ValueInfoProto) -> int | None:
    """Turn a fixed batch size on the image input (and matching outputs) into ``"N"``, in place.

    Returns the fixed batch size it replaced, or None when the batch was already dynamic.
    """
    first = image.type.tensor_type.shape.dim[0]
    if not first.HasField("dim_value"):
        return None
    batch = first.dim_value
    first.dim_param = BATCH_DIM
    for out in model.graph.output:
        _set_batch_param(out, batch)
    return batch


def _set_batch_param(info: onnx.ValueInfoProto, batch: int) -> None:
    if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
        dims = info.type.tensor_type.shape.dim
        if len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = BATCH_DIM


def _free_reshape_batch(model: onnx.ModelProto, batch: int) -> bool:
    """Make Reshapes with a constant target shape that hard-codes the batch copy it instead, in place.

    ``Reshape(x, [1, -1])`` on an ``x`` of batch ``"N"`` becomes ``Reshape(x, [0, -1])`` (0 copies
    the input's dim). Returns whether anything changed.
    """
    graph = model.graph
    infos = value_infos(graph)
    inits = {t.name: t for t in graph.initializer}
    replaced = []
    for node in graph.node:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        data = infos.get(node.input[0])
        dims = dims_of(data) if data is not None else None
        target = inits.get(node.input[1])
        if not dims or dims[0] != BATCH_DIM or target is None:
            continue
        shape = onnx.numpy_helper.to_array(target).copy()
        if shape.ndim != 1 or len(shape) == 0 or shape[0] != batch:
            continue
        shape[0] = 0
        name = f"{node.input[1]}_batch_free"
        while name in inits:
            name += "_"
        new = onnx.numpy_helper.from_array(shape, name)
        graph.initializer.append(new)
        if model.ir_version < 4:  # old IR lists every initializer among the graph inputs
            graph.input.append(onnx.helper.make_tensor_value_info(name, new.data_type, new.dims))
        inits[name] = new
        replaced.append(node.input[1])
        node.input[1] = name
    still_read = {name for node in graph.node for name in node_inputs(node)}
    still_read.update(o.name for o in graph.output)
    unused = {name for name in replaced if name not in still_read}
    if unused:
        keep = [t for t in graph.initializer if t.name not in unused]
        del graph.initializer[:]
        graph.initializer.extend(keep)
        keep_inputs = [vi for vi in graph.input if vi.name not in unused]
        del graph.input[:]
        graph.input.extend(keep_inputs)
    return bool(replaced)


def _infer_shapes(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        pass  # some ops (custom domains) cannot be inferred strictly: fall back to best effort
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as err:
        first = str(err).strip().splitlines()[0]
        raise HapiError(f"{label}: ONNX shape inference failed: {first}") from None
