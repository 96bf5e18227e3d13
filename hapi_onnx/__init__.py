"""hapi-onnx: hardware-aware early-exit CNNs on ONNX and ONNX Runtime.

The package root stays light: importing it (as ``hapi_onnx.runtime`` does on an
edge device) pulls in nothing beyond the standard library.
"""

from hapi_onnx.errors import HapiError

__version__ = "0.2.0"
__all__ = ["HapiError", "__version__"]
