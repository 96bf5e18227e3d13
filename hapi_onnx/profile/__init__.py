"""On-device profiling: device presets -> ORT sessions, timing loop, latency table.

Names are exported lazily, so ``import hapi_onnx.profile.presets`` (which the edge runtime uses
for session options) does not pull in onnx or the graph code.

Typical use::

    from hapi_onnx.profile import profile_model
    table = profile_model("ee.onnx", device="cpu-1t")
    table.save("latency.json")
"""

from hapi_onnx.lazy import lazy_exports

_EXPORTS = {
    "DevicePreset": "presets",
    "TimingPolicy": "presets",
    "available_presets": "presets",
    "load_preset": "presets",
    "TimingResult": "timing",
    "time_call": "timing",
    "time_calls": "timing",
    "LatencyTable": "table",
    "PieceLatency": "table",
    "TimingStats": "table",
    "profile_model": "profile",
    "table_lines": "report",
    "environment": "environment",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
