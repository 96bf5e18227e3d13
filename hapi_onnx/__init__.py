"""hapi-onnx: hardware-aware early-exit CNNs on ONNX and ONNX Runtime.

The package root stays light: importing it (as ``hapi_onnx.runtime`` does on an
edge device) pulls in nothing beyond the standard library.

ONNX Runtime (1.29 on) keeps a telemetry store (``~/.cache/Microsoft/DeveloperTools/.onnxruntime``)
and, in onnxruntime-node, a ``/tmp/mat-debug-<pid>.log``; its documented opt-out,
``ORT_DISABLE_TELEMETRY=1``, is set here unless the environment already sets it. It is read when
ONNX Runtime starts, so it applies when ``hapi_onnx`` is imported before ``onnxruntime``.
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from hapi_onnx.errors import BundleError, DataError, HapiError, InfeasibleError  # noqa: E402

__version__ = "0.2.0"
__all__ = ["BundleError", "DataError", "HapiError", "InfeasibleError", "__version__"]
