"""The one place hapi-onnx creates ONNX Runtime sessions (as Polygraphy's ``SessionFromOnnx``).

Every step that runs a model (the runtime's stages, the feature pass and calibration, export's
check, the batch-axis rewrite's check, the profiler's device presets) asks :func:`create_session`,
so a model ONNX Runtime cannot load is always one :class:`~hapi_onnx.errors.HapiError` naming it
with ORT's first line, and the options default the same way everywhere.

:class:`BoundCall` is the one way a session is run on buffers bound once (ORT IOBinding): the
runtime's batch-1 path calls its stages so, and the profiler times its pieces the same way.

Imports numpy, onnxruntime and the standard library only: the runtime uses it on the edge device
(an ``onnx.ModelProto`` is taken through its ``SerializeToString``, without importing onnx).
"""

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
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


class BoundCall:
    """A session run on inputs and outputs bound once to numpy buffers: calling it runs in place.

    Args:
        session (ort.InferenceSession): The session.
        feeds (Mapping[str, np.ndarray]): Input values, copied into owned buffers (or bound as
            they are with ``share_inputs``: then they must be C-contiguous and outlive the call).
        outputs (Mapping[str, np.ndarray]): Example outputs: the names, shapes and dtypes of the
            output buffers.
        share_inputs (bool): Bind ``feeds`` themselves, not copies (to chain stages: one stage's
            output buffer is the next one's input). Defaults to False.

    Attributes:
        buffers (dict[str, np.ndarray]): Every bound buffer by tensor name (write inputs there, read
            outputs there).
        run (Callable[[], None]): The zero-argument call (time this one; ``call()`` is the same).
    """

    def __init__(self, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray],
                 outputs: Mapping[str, np.ndarray], share_inputs: bool = False):
        self.binding = session.io_binding()
        self.buffers: dict[str, np.ndarray] = {}  # kept alive as long as the binding points into them
        for name, value in feeds.items():
            self.buffers[name] = value if share_inputs else np.ascontiguousarray(value).copy()
            _bind(self.binding.bind_input, name, self.buffers[name])
        for name, value in outputs.items():
            self.buffers[name] = np.empty_like(value)
            _bind(self.binding.bind_output, name, self.buffers[name])
        self.run = _bound_run(session, self.binding)

    def __call__(self) -> None:
        self.run()


def _bound_run(session: ort.InferenceSession, binding: ort.IOBinding) -> Callable[[], None]:
    """``session.run_with_iobinding(binding)`` as a zero-argument call, as cheap as ORT allows.

    Calls ORT's C++ entry point directly where the Python wrapper exposes it (skipping the
    wrapper's GPU graph-capture bookkeeping, about 0.5 us a call, which a CPU session does not
    use); otherwise the public method. The runtime's batch-1 path and the profiler both call
    stages this way, so the per-call overhead the profiler measures is the one the runtime pays.
    """
    run = getattr(getattr(session, "_sess", None), "run_with_iobinding", None)
    raw = getattr(binding, "_iobinding", None)
    cpu_only = session.get_providers() == ["CPUExecutionProvider"]
    if run is None or raw is None or not cpu_only:
        return functools.partial(session.run_with_iobinding, binding)
    return functools.partial(run, raw, None)


def _bind(bind: Callable, name: str, array: np.ndarray) -> None:
    """Bind a C-contiguous numpy ``array`` on the CPU as input or output ``name`` (it must outlive the binding)."""
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
