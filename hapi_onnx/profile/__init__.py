"""On-device profiling: device presets -> ORT sessions, timing loop, latency table.

Names are exported lazily, so ``import hapi_onnx.profile.presets`` (which the edge runtime uses
for session options) does not pull in onnx or the graph code.

Typical use::

    from hapi_onnx.profile import profile_model
    table = profile_model("ee.onnx", device="cpu-1t")
    table.save("latency.json")
"""

import importlib

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


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hapi_onnx.profile.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hapi_onnx.profile' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
