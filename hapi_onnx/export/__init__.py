"""Framework -> verified ONNX: PyTorch through torch's TorchScript exporter, or an existing ONNX file.

Both paths end in the same normalised form (:func:`hapi_onnx.graph.load.load_model`) and are
written only after ONNX Runtime reproduces the source within a tolerance. torch is optional and
imported only by :func:`export_torch`.
"""

import os
from pathlib import Path

import numpy as np

from hapi_onnx.errors import HapiError
from hapi_onnx.export.onnx_export import MIN_OPSET, export_onnx
from hapi_onnx.export.report import ExportReport
from hapi_onnx.export.torch_export import export_torch

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

__all__ = ["MIN_OPSET", "ExportReport", "export_model", "export_onnx", "export_torch", "source_is_onnx"]


def source_is_onnx(source: str | os.PathLike, factory: str | None, input_shape) -> bool:
    """Whether ``source`` is an ONNX file (else a PyTorch checkpoint), checking that the options fit it.

    Raises:
        HapiError: for a factory with an ONNX file, or a checkpoint without a factory or input shape.
    """
    if Path(source).suffix.lower() == ".onnx":
        if factory is not None:
            raise HapiError("A model factory is for PyTorch checkpoints; an .onnx source needs none.")
        return True
    if factory is None:
        raise HapiError(
            f"source {os.fspath(source)!r} is not an .onnx file; for a PyTorch checkpoint "
            f"({', '.join(TORCH_SUFFIXES)}) give --factory path/to/model.py:build_model."
        )
    if input_shape is None:
        raise HapiError("exporting from PyTorch needs --input-shape N,C,H,W (e.g. 1,1,28,28).")
    return False


def export_model(
    source: str | os.PathLike | None,
    output: str | os.PathLike,
    factory: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    opset: int | None = None,
    tolerance: float = 1e-4,
    samples: "np.ndarray | int | str | os.PathLike | None" = None,
) -> ExportReport:
    """Export ``source`` by its kind: an ``.onnx`` file, or a PyTorch checkpoint with a factory.

    Args:
        source (PathLike | None): ``model.onnx``, or a ``.pt``/``.pth`` state dict (None with a
            factory: export the factory's own weights).
        output (PathLike): The ``.onnx`` file to write.
        factory (str | None): ``file.py:name`` or ``module:name`` building the PyTorch model.
        input_shape (tuple | None): ``(N, C, H, W)``; required for PyTorch.
        opset (int | None): Target opset. Defaults to None: 17 for PyTorch, the model's own
            (at least 13) for ONNX.
        tolerance (float): Largest allowed absolute output difference. Defaults to 1e-4.
        samples: Verification inputs (array, dataset path, count or None).

    Raises:
        HapiError: when the source kind and options do not fit, or the export fails.
    """
    if source_is_onnx(source, factory, input_shape):
        return export_onnx(source, output, tolerance=tolerance, opset=opset, input_shape=input_shape,
                           samples=samples)
    return export_torch(factory, source, input_shape, output, opset=17 if opset is None else opset,
                        tolerance=tolerance, samples=samples)
