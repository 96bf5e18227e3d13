"""Design-space search: exits x thresholds under latency and accuracy constraints (HAPI).

One calibration trace and one latency table let the search score any subset of exits and any
thresholds offline. Entry point: :func:`search` (``hapi-onnx search``), returning a
:class:`Design`; :func:`evaluate` scores one design.
"""

from hapi_onnx.search.design import Design
from hapi_onnx.search.design_search import search
from hapi_onnx.search.evaluate import Evaluation, evaluate

__all__ = ["Design", "Evaluation", "evaluate", "search"]
