"""Design-space search: exits x thresholds under latency and accuracy constraints (HAPI).

One calibration trace and one latency table let the search score any subset of exits and any
thresholds offline. Entry point: :func:`search` (``hapi-onnx search``) with the user's
:class:`Constraints`, returning a :class:`Design`; :func:`score_design` scores one design.
"""

from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.design import Design
from hapi_onnx.search.design_search import search
from hapi_onnx.search.score import Score, score_design

__all__ = ["Constraints", "Design", "Score", "score_design", "search"]
