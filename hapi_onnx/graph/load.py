"""Load an ONNX CNN and normalise it: checked, shape-inferred, dynamic batch, topologically sorted."""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from hapi_onnx.artifact import Kind
from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output
from hapi_onnx.graph.macs import WEIGHTED_OPS
from hapi_onnx.graph.quant import check_quant_params, ms_output_types
from hapi_onnx.graph.tensors import FLOAT_TYPES, Dim, describe, dims_of, elem_type_of, value_infos
from hapi_onnx.graph.topology import (
    constant_names,
    is_topologically_sorted,
    node_inputs,
    producers,
    sort_graph,
    subgraphs,
)

BATCH_DIM = "N"
NOTES_KEY = "hapi_onnx.load_notes"
NOTES = Kind("load notes")  # what load_model changed, in the model's metadata
MIN_IR_VERSION = 4  # the first IR version whose initializers need not be graph inputs
# Ops that hold a network's weights: a control-flow body holding one of them holds layers.
LAYER_OPS = frozenset(op for _, op in WEIGHTED_OPS)


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
    stores its nodes in topological order, treats every initializer as a constant (old graphs,
    IR version 3, also list them as graph inputs: they are dropped from the inputs), carries
    inferred shapes for every tensor in ``value_info`` (``com.microsoft`` quantized ops
    included), and returns classifier scores ``[N, K, 1, 1]`` (old Caffe2 graphs) as ``[N, K]``.

    Its single rank-4 image input (N,C,H,W or channels-last N,H,W,C) gets a dynamic batch
    (``"N"``). Reshapes whose constant target bakes in the batch are rewritten to copy it (0),
    and the result is checked with ONNX Runtime against the original at batch 1 and 2. Where the
    batch cannot be freed that way and the graph fixes it at 1, the model keeps batch 1 and runs
    one sample per call. What was changed is recorded once in the model (see :func:`load_notes`).

    Args:
        source (str | PathLike | onnx.ModelProto): A path to a ``.onnx`` file, or a model.

    Returns:
        onnx.ModelProto: The normalised copy.

    Raises:
        HapiError: when the file is missing, is not ONNX (or is truncated), fails the checker,
            does not have exactly one rank-4 float input, runs its layers inside a control-flow
            node (``If``/``Loop``/``Scan``), or fixes a batch size other than 1 in its graph.
    """
    model, label = _read(source)
    if not is_topologically_sorted(model.graph):
        sort_graph(model.graph)  # a cycle is left for the checker to report
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HapiError(f"{label} is not a valid ONNX model: {first}") from None
    record = _LoadRecord.from_model(model)
    _initializers_as_constants(model, record)
    _refuse_control_flow(model, label)
    image = _image_input(model, label)
    model = _with_free_batch(model, image, label, record)
    if _flatten_score_outputs(model, record):
        del model.graph.value_info[:]
        model = _infer_shapes(model, label)
    check_quant_params(model, label)  # with every tensor's shape inferred
    record.to_model(model)
    return model


def load_notes(model: onnx.ModelProto) -> list[str]:
    """What :func:`load_model` changed in a model, one sentence each (empty for none).

    Read from the model's metadata, so it survives saving and ``attach`` (the EE model keeps the
    backbone's metadata).
    """
    return list(_LoadRecord.from_model(model).notes)


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size a loaded model's graph fixes (1), or None when its batch is dynamic."""
    first = input_spec(model).shape[0]
    return first if isinstance(first, int) else None


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


@dataclass
class _LoadRecord:
    """Notes on what load_model changed, kept in the model's metadata (``NOTES_KEY``)."""

    notes: list[str]
    batch_fixed: bool = False

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> "_LoadRecord":
        for prop in model.metadata_props:
            if prop.key == NOTES_KEY:
                try:
                    return NOTES.read(prop.value, f"the model's {NOTES_KEY!r} metadata",
                                      lambda data: cls([str(n) for n in data["notes"]], bool(data["batch_fixed"])))
                except HapiError:
                    break  # not ours to trust: load afresh
        return cls([])

    def add(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def to_model(self, model: onnx.ModelProto) -> None:
        value = json.dumps({"notes": self.notes, "batch_fixed": self.batch_fixed}) if self.notes else None
        set_metadata(model, NOTES_KEY, value)


def set_metadata(model: onnx.ModelProto, key: str, value: str | None) -> None:
    """Set (or with ``None`` remove) one ``metadata_props`` entry of ``model``, in place."""
    keep = [p for p in model.metadata_props if p.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    if value is not None:
        model.metadata_props.add(key=key, value=value)


def _initializers_as_constants(model: onnx.ModelProto, record: _LoadRecord) -> None:
    """Drop initializers from the graph inputs (IR < 4 lists every weight there), in place."""
    graph = model.graph
    inits = constant_names(graph)
    listed = [vi for vi in graph.input if vi.name in inits]
    if listed:
        keep = [vi for vi in graph.input if vi.name not in inits]
        del graph.input[:]
        graph.input.extend(keep)
        record.add(f"{len(listed)} initializer(s) listed as graph inputs (IR version {model.ir_version} style) "
                   "are treated as constants")
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)


def _refuse_control_flow(model: onnx.ModelProto, label: str) -> None:
    """Refuse a model whose layers (Conv, Gemm, ...) run inside an If/Loop/Scan body."""
    for node in model.graph.node:
        layers = sum(_layer_count(sub) for sub in subgraphs(node))
        if layers:
            raise HapiError(
                f"{label}: its layers run inside a control-flow node, which hapi-onnx cannot cut into exits. "
                f"Expected the backbone in the top-level graph. Got {node.op_type} node {node.name!r} holding "
                f"{layers} layer(s) instead. Re-export it without control flow (e.g. trace it rather than "
                "script it: torch.onnx.export of the traced module)."
            )


def _layer_count(graph: onnx.GraphProto) -> int:
    count = 0
    for node in graph.node:
        count += node.op_type in LAYER_OPS
        count += sum(_layer_count(sub) for sub in subgraphs(node))
    return count


def _with_free_batch(
    model: onnx.ModelProto, image: onnx.ValueInfoProto, label: str, record: _LoadRecord
) -> onnx.ModelProto:
    """The shape-inferred model with a dynamic batch, or with its fixed batch of 1 where none can be had."""
    first = image.type.tensor_type.shape.dim[0]
    if not first.HasField("dim_value") or record.batch_fixed:
        return _infer_shapes(model, label)
    batch = first.dim_value
    free = onnx.ModelProto()
    free.CopyFrom(model)
    _set_input_batch(free, image.name)
    for out in free.graph.output:
        _set_batch_param(out, batch)
    del free.graph.value_info[:]
    free = _infer_shapes(free, label)
    rewritten = 0
    for _ in range(len(free.graph.node)):  # a freed Reshape may free the batch of the next one
        count = _free_reshape_batch(free, batch)
        if not count:
            break
        rewritten += count
        del free.graph.value_info[:]
        for out in free.graph.output:
            _set_batch_param(out, batch)
        free = _infer_shapes(free, label)
    fixed = [(o.name, dims_of(o)[0]) for o in free.graph.output if dims_of(o) and isinstance(dims_of(o)[0], int)]
    if fixed:
        problem = f"output {fixed[0][0]!r} keeps batch {fixed[0][1]} even with a dynamic input batch"
    else:
        problem = _batch_mismatch(model, free, image.name, batch) if rewritten else None
    if problem is None:
        if rewritten:
            record.add(
                f"batch made dynamic: {rewritten} Reshape target(s) with the batch {batch} baked in now copy the "
                f"input's batch (0), checked with ONNX Runtime: batch {2 * batch} gives the original's "
                f"batch-{batch} outputs"
            )
        return free
    if batch != 1:
        raise HapiError(
            f"{label} hard-codes the batch size in its graph ({problem}), and only a fixed batch of 1 can run "
            f"sample by sample. Got batch {batch} instead. Re-export it with a dynamic batch axis "
            "(e.g. torch.onnx.export(..., dynamic_axes={'input': {0: 'N'}}))."
        )
    record.batch_fixed = True
    record.add(f"the graph fixes the batch at 1 ({problem}): it runs at batch 1, one sample per call "
               "(batch compaction off)")
    return _infer_shapes(model, label)


def _set_input_batch(model: onnx.ModelProto, name: str) -> None:
    info = next(vi for vi in model.graph.input if vi.name == name)
    info.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM


def _set_batch_param(info: onnx.ValueInfoProto, batch: int) -> None:
    if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
        dims = info.type.tensor_type.shape.dim
        if len(dims) > 0 and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = BATCH_DIM


def _free_reshape_batch(model: onnx.ModelProto, batch: int) -> int:
    """Make Reshapes with a constant target that hard-codes the batch copy it instead, in place.

    ``Reshape(x, [1, -1])`` on an ``x`` of batch ``"N"`` becomes ``Reshape(x, [0, -1])`` (0 copies
    the input's dim); the target may be an initializer or a ``Constant`` node. Targets and
    Constant nodes nothing reads any more are dropped. Returns how many Reshapes changed.
    """
    graph = model.graph
    infos = value_infos(graph)
    inits = {t.name: t for t in graph.initializer}
    made_by = producers(graph)
    names = {vi.name for vi in graph.input} | set(inits) | set(made_by)
    replaced = []
    for node in graph.node:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        data = infos.get(node.input[0])
        dims = dims_of(data) if data is not None else None
        target = _constant_value(graph, node.input[1], inits, made_by)
        if not dims or dims[0] != BATCH_DIM or target is None:
            continue
        if target.ndim != 1 or len(target) == 0 or target[0] != batch:
            continue
        shape = target.astype(np.int64).copy()
        shape[0] = 0
        name = f"{node.input[1]}_batch_free"
        while name in names:
            name += "_"
        names.add(name)
        new = onnx.numpy_helper.from_array(shape, name)
        graph.initializer.append(new)
        inits[name] = new
        replaced.append(node.input[1])
        node.input[1] = name
    _drop_unread(graph, replaced)
    return len(replaced)


def _constant_value(graph: onnx.GraphProto, name: str, inits: dict, made_by: dict) -> np.ndarray | None:
    if name in inits:
        return onnx.numpy_helper.to_array(inits[name])
    if name in made_by:
        node = graph.node[made_by[name]]
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return onnx.numpy_helper.to_array(node.attribute[0].t)
    return None


def _drop_unread(graph: onnx.GraphProto, names: list[str]) -> None:
    """Remove the initializers and Constant nodes among ``names`` that nothing reads any more."""
    still_read = {name for node in graph.node for name in node_inputs(node)}
    still_read.update(o.name for o in graph.output)
    unused = {name for name in names if name not in still_read}
    if not unused:
        return
    keep = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in unused)]
    if len(nodes) != len(graph.node):
        kept = [onnx.NodeProto() for _ in nodes]
        for new, old in zip(kept, nodes, strict=True):
            new.CopyFrom(old)
        del graph.node[:]
        graph.node.extend(kept)


def _batch_mismatch(original: onnx.ModelProto, free: onnx.ModelProto, name: str, batch: int) -> str | None:
    """Why ``free`` (dynamic batch) does not compute what ``original`` (fixed batch) does, or None.

    Both run with ONNX Runtime on seeded random inputs: ``free`` on ``2 * batch`` samples at once
    must give what the original gives on each ``batch`` of them.
    """
    # a runtime dependency; imported here so `import hapi_onnx.graph` stays light
    from hapi_onnx.runtime.session import create_session, first_line

    info = next(vi for vi in original.graph.input if vi.name == name)
    rest = dims_of(info)[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        return f"the input's other dims {rest} are not fixed, so the rewrite cannot be checked"
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type_of(info))
    x = np.random.default_rng(0).standard_normal((2 * batch, *rest)).astype(dtype)
    try:
        before, after = create_session(original), create_session(free, what="it with a dynamic batch")
        want = [before.run(None, {name: x[i:i + batch]}) for i in (0, batch)]
        got = after.run(None, {name: x})
    except HapiError as err:
        return str(err)
    except Exception as err:  # ORT raises several pybind types
        return f"ONNX Runtime cannot run it with a dynamic batch: {first_line(err)}"
    for k, out in enumerate(original.graph.output):
        if not _close(got[k], np.concatenate([w[k] for w in want])):
            return f"output {out.name!r} changes when the batch is made dynamic"
    return None


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if not np.issubdtype(a.dtype, np.floating):
        return bool(np.array_equal(a, b))
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))


def _flatten_score_outputs(model: onnx.ModelProto, record: _LoadRecord) -> bool:
    """Return ``[N, K, 1, ..., 1]`` outputs as ``[N, K]`` through a Flatten (same name), in place."""
    graph = model.graph
    taken = {vi.name for vi in graph.input} | constant_names(graph) | set(producers(graph))
    changed = False
    for out in graph.output:
        dims = dims_of(out)
        if not dims or len(dims) <= 2 or not isinstance(dims[1], int) or any(d != 1 for d in dims[2:]):
            continue
        inner = f"{out.name}_hapi_unflattened"
        while inner in taken:
            inner += "_"
        taken.add(inner)
        for node in graph.node:
            node.input[:] = [inner if i == out.name else i for i in node.input]
            node.output[:] = [inner if o == out.name else o for o in node.output]
        graph.node.append(onnx.helper.make_node("Flatten", [inner], [out.name], axis=1,
                                                name=f"{out.name}_hapi_flatten"))
        shape = out.type.tensor_type.shape
        del shape.dim[2:]
        record.add(f"classifier output {out.name!r} of shape {dims} is returned as {dims[:2]}")
        changed = True
    return changed


def _infer_shapes(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """onnx's shape inference, completed with the outputs of ``com.microsoft`` quantized ops."""
    inferred = _onnx_infer(model, label)
    for _ in range(len(inferred.graph.node)):
        found = ms_output_types(inferred)
        if not found:
            break
        inferred.graph.value_info.extend(found.values())
        inferred = _onnx_infer(inferred, label)
    return inferred


def _onnx_infer(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        pass  # some ops (custom domains) cannot be inferred strictly: fall back to best effort
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as err:
        first = str(err).strip().splitlines()[0]
        raise HapiError(f"{label}: ONNX shape inference failed: {first}") from None
