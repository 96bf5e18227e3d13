"""Design-space search: exits x thresholds under latency and accuracy constraints (HAPI).

One calibration trace and one latency table let the search score any subset of exits and any
thresholds offline. Entry point: :func:`search` (``hapi-onnx search``) with the user's
:class:`Constraints`, returning a :class:`Design`; :func:`score_design` scores one design.

Names are exported lazily, so ``hapi_onnx.search.constraints`` (which the CLI and the pipeline
read for their options) loads without numpy or scipy.
"""

import importlib

_EXPORTS = {
    "Constraints": "constraints",
    "Design": "design",
    "search": "design_search",
    "Score": "score",
    "score_design": "score",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hapi_onnx.search.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hapi_onnx.search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
