"""ONNX graph surgery: load and normalise a model, find its cut points, cut segments out of it.

Everything imported here needs only ``onnx`` (no onnx-graphsurgeon, no scipy), so the on-device
profiler can split models with the runtime dependencies alone.
"""

from hapi_onnx.graph.cuts import Candidate, candidate_exits, cut_points, validate_exit_tensors
from hapi_onnx.graph.load import InputSpec, fixed_batch, input_spec, load_model, load_notes, model_fingerprint
from hapi_onnx.graph.macs import count_macs, total_macs
from hapi_onnx.graph.outputs import SHAPE_ONLY_OPS, is_probability_output, softmax_source
from hapi_onnx.graph.segment import add_outputs, extract_segment, prune_to, split_model
from hapi_onnx.graph.split_files import SegmentEntry, SplitIndex, write_split

__all__ = [
    "Candidate",
    "InputSpec",
    "SHAPE_ONLY_OPS",
    "SegmentEntry",
    "SplitIndex",
    "add_outputs",
    "candidate_exits",
    "count_macs",
    "cut_points",
    "extract_segment",
    "fixed_batch",
    "input_spec",
    "is_probability_output",
    "load_model",
    "load_notes",
    "model_fingerprint",
    "prune_to",
    "softmax_source",
    "split_model",
    "total_macs",
    "validate_exit_tensors",
    "write_split",
]
