"""The one place hapi-onnx creates ONNX Runtime sessions (as Polygraphy's ``SessionFromOnnx``).

Every step that runs a model (the runtime's stages, the feature pass and calibration, export's
check, the batch-axis rewrite's check, the profiler's device presets) asks :func:`create_session`,
so a model ONNX Runtime cannot load is always one :class:`~hapi_onnx.errors.HapiError` naming it
with ORT's first line, and the options default the same way everywhere.

Imports onnxruntime and the standard library only: the runtime uses it on the edge device (an
``onnx.ModelProto`` is taken through its ``SerializeToString``, without importing onnx).
"""

import os
from collections.abc import Sequence
from typing import Any

import onnxruntime as ort

from hapi_onnx.errors import HapiError

CPU = ("CPUExecutionProvider",)


def quiet_options(threads: int | None = None) -> ort.SessionOptions:
    """Fresh ``SessionOptions`` logging errors only (provider fallbacks are checked, not logged).

    Args:
        threads (int | None): Intra-op threads; None leaves ORT's default (all cores).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def first_line(err: BaseException) -> str:
    """The first line of an ONNX Runtime error (its pybind types carry long, multi-line texts)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def create_session(
    model: Any,
    options: ort.SessionOptions | None = None,
    providers: Sequence[str] | None = None,
    provider_options: Sequence[dict[str, Any]] | None = None,
    what: str = "the model",
    error: type[HapiError] = HapiError,
) -> ort.InferenceSession:
    """An ``InferenceSession`` on a model.

    Args:
        model (bytes | PathLike | onnx.ModelProto): Serialized ONNX, a path to a file, or a model.
        options (ort.SessionOptions | None): Session options. Defaults to :func:`quiet_options`.
        providers (Sequence[str] | None): Execution providers in priority order. Defaults to CPU.
        provider_options (Sequence[dict] | None): Options aligned with ``providers``.
        what (str): The model, for the message. Defaults to "the model".
        error (type[HapiError]): The error type raised. Defaults to :class:`HapiError`.

    Raises:
        HapiError: (``error``) when ONNX Runtime cannot load the model.
    """
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = os.fspath(model)
    try:
        return ort.InferenceSession(
            model,
            sess_options=options if options is not None else quiet_options(),
            providers=list(providers) if providers is not None else list(CPU),
            provider_options=provider_options,
        )
    except Exception as err:  # ORT raises several pybind types (Fail, InvalidGraph, NoSuchFile, ...)
        raise error(f"ONNX Runtime cannot load {what}: {first_line(err)}") from None
