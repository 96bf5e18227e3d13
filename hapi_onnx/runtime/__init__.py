"""The drop-in runtime for staged early-exit bundles: numpy + onnxruntime + the standard library only.

Example::

    from hapi_onnx.runtime import EarlyExitModel, BundleError

    model = EarlyExitModel.load("model.hapi")      # verifies the manifest and every sha256
    pred = model.predict(images)                   # float32[N, C, H, W]
    print(pred.classes, pred.confidences, pred.exit_index)

Every error a caller can cause is a :class:`hapi_onnx.HapiError`: a missing, malformed or
tampered bundle is its subclass :class:`BundleError`, a wrong input to ``predict`` its subclass
:class:`DataError`.
"""

from hapi_onnx.errors import BundleError, DataError, HapiError
from hapi_onnx.runtime.archive import BundleContents, read_bundle
from hapi_onnx.runtime.manifest import FORMAT_VERSION, KIND, CertifiedPath, InputSpec, Manifest, StageSpec
from hapi_onnx.runtime.model import EarlyExitModel, Prediction
from hapi_onnx.runtime.monitor import Monitor, MonitoredModel, MonitorState, PositionChange
from hapi_onnx.runtime.session import BoundCall, create_session

__all__ = [
    "BoundCall",
    "BundleContents",
    "BundleError",
    "CertifiedPath",
    "DataError",
    "EarlyExitModel",
    "FORMAT_VERSION",
    "HapiError",
    "InputSpec",
    "KIND",
    "Manifest",
    "Monitor",
    "MonitorState",
    "MonitoredModel",
    "PositionChange",
    "Prediction",
    "StageSpec",
    "create_session",
    "read_bundle",
]
