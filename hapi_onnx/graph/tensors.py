"""Types and shapes of the tensors of an ONNX graph, as recorded by shape inference."""

import onnx

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16})

Dim = int | str


def value_infos(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    """Every typed tensor of ``graph``: value_info, then inputs and outputs (which win)."""
    infos = {vi.name: vi for vi in graph.value_info}
    infos.update({vi.name: vi for vi in graph.input})
    infos.update({vi.name: vi for vi in graph.output})
    for init in graph.initializer:
        if init.name not in infos:
            infos[init.name] = onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims)
    return infos


def dims_of(info: onnx.ValueInfoProto) -> list[Dim] | None:
    """The shape of a tensor value: ints, dim_param names, or ``"?"``; ``None`` when the rank is unknown."""
    tensor_type = info.type.tensor_type
    if not info.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append("?")
    return dims


def elem_type_of(info: onnx.ValueInfoProto) -> int:
    """The element type (an ``onnx.TensorProto`` enum value), 0 when unknown or not a tensor."""
    if not info.type.HasField("tensor_type"):
        return 0
    return info.type.tensor_type.elem_type


def describe(info: onnx.ValueInfoProto) -> str:
    """``name: float[N,3,28,28]``-style text for messages."""
    elem = elem_type_of(info)
    type_name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "non-tensor"
    dims = dims_of(info)
    shape = "[?]" if dims is None else "[" + ",".join(str(d) for d in dims) + "]"
    return f"{info.name!r} {type_name}{shape}"


def is_feature_map(info: onnx.ValueInfoProto | None) -> bool:
    """Whether a tensor is a rank-4 floating-point (N,C,H,W) value."""
    if info is None:
        return False
    dims = dims_of(info)
    return elem_type_of(info) in FLOAT_TYPES and dims is not None and len(dims) == 4
