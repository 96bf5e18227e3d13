"""Lazy imports of optional extras (torch, Pillow, matplotlib), with a clear message when missing."""

import importlib
import importlib.metadata
from collections.abc import Callable
from types import ModuleType
from typing import Any

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
        requirement = extra_requirement(extra)
        how = f"pip install '{requirement}' (hapi-onnx's '{extra}' extra)" if requirement else ""
        raise HapiError(
            f"this step needs {module.split('.')[0]}, which is not installed: "
            f"{how or 'pip install -e .[' + extra + '] in the hapi-onnx checkout'}"
        ) from err


def extra_requirement(extra: str) -> str:
    """What pip installs for one of hapi-onnx's extras, e.g. ``torch==2.13.0``, from the installed
    package's metadata ("" where hapi-onnx is not installed as a distribution). hapi-onnx comes
    from a checkout or a wheel, not an index, so naming hapi-onnx with its extra would fail."""
    try:
        requires = importlib.metadata.requires("hapi-onnx") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    found = [r.split(";")[0].strip() for r in requires
             if ";" in r and r.split(";")[1].replace("'", '"').split() == ["extra", "==", f'"{extra}"']]
    return " ".join(found)


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose names load from submodules on first use.

    Args:
        package (str): The package, e.g. ``"hapi_onnx.search"``.
        exports (dict[str, str]): Each exported name -> the module defining it, relative to ``package``
            (``"score"``; a leading dot climbs one level: ``".design"`` in ``hapi_onnx.search`` is
            ``hapi_onnx.design``).
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f".{exports[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__
