"""Design-space search: exits x thresholds under latency and accuracy constraints (HAPI).

One calibration trace and one latency table let the search score any subset of exits and any
thresholds offline. Entry point: :func:`search` (``hapi-onnx search``) with the user's
:class:`Constraints`, returning a :class:`Design`; :func:`score_design` scores one design.

Names are exported lazily, so ``hapi_onnx.search.constraints`` (which the CLI and the pipeline
read for their options) loads without numpy or scipy.
"""

from hapi_onnx.lazy import lazy_exports

_EXPORTS = {
    "Constraints": "constraints",
    "Design": ".design",  # hapi_onnx.design: the artifact the bundle step reads too
    "search": "design_search",
    "check_reachable": "design_search",
    "Score": "score",
    "score_design": "score",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
