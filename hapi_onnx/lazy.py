"""Lazy imports of optional extras (torch, Pillow, matplotlib), with a clear message when missing."""

import importlib
from types import ModuleType

from hapi_onnx.errors import HapiError


def lazy_import(module: str, extra: str) -> ModuleType:
    """Import ``module`` now, or fail with the pip command that installs it.

    Args:
        module (str): Module to import, e.g. ``"torch"``.
        extra (str): The hapi-onnx extra that provides it, e.g. ``"torch"``.

    Raises:
        HapiError: when the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise HapiError(
            f"this step needs {module.split('.')[0]}, which is not installed: pip install 'hapi-onnx[{extra}]'"
        ) from err
