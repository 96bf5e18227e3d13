"""ONNX graph surgery: load and normalise a model, find its cut points, cut segments out of it.

Everything imported here needs only ``onnx`` (no onnx-graphsurgeon, no scipy), so the on-device
profiler can split models with the runtime dependencies alone.
"""

from hapi_onnx.graph.load import InputSpec, input_spec, load_model, model_fingerprint
from hapi_onnx.graph.segment import add_outputs, extract_segment, split_model

__all__ = [
    "InputSpec",
    "add_outputs",
    "extract_segment",
    "input_spec",
    "load_model",
    "model_fingerprint",
    "split_model",
]
