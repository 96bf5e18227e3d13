"""Resolve a model factory spec (``path/to/file.py:name`` or ``package.module:name``) to a callable."""

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from hapi_onnx.errors import HapiError


def resolve_factory(spec: str) -> Callable:
    """The callable named by ``spec``.

    Args:
        spec (str): ``path/to/file.py:build_model`` (a Python file, run as a fresh module with its
            folder importable) or ``package.module:build_model`` (an importable module).

    Returns:
        Callable: The factory, not yet called.

    Raises:
        HapiError: when the spec is malformed, the file or module cannot be imported, or the name
            is missing or not callable.
    """
    where, sep, name = str(spec).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise HapiError(
            f"--factory must look like path/to/model.py:build_model or package.module:build_model. "
            f"Got {spec!r} instead."
        )
    module = _module_from_file(Path(where)) if where.endswith(".py") else _module_from_name(where)
    factory = getattr(module, name, None)
    if factory is None:
        raise HapiError(f"{where!r} has no attribute {name!r}; name a function that returns the model.")
    if not callable(factory):
        raise HapiError(f"{where}:{name} is a {type(factory).__name__}, not a callable factory.")
    return factory


def _module_from_file(path: Path):
    if not path.is_file():
        raise HapiError(f"factory file {str(path)!r} does not exist.")
    path = path.resolve()
    module_name = "_hapi_factory_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent))  # so the file can import its siblings
    try:
        spec.loader.exec_module(module)
    except (ImportError, SyntaxError) as err:
        del sys.modules[module_name]
        raise HapiError(f"cannot import factory file {str(path)!r}: {type(err).__name__}: {err}") from None
    except BaseException:  # a bug in the user's file keeps its traceback, but not a half-made module
        del sys.modules[module_name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


def _module_from_name(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise HapiError(
            f"cannot import factory module {name!r} ({err}). Install it, run from its project folder, "
            "or give a file path instead: path/to/model.py:build_model."
        ) from None
