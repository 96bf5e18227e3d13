"""Shared pieces of both exporters: output-path checks and opset lookup."""

import os
from pathlib import Path

import onnx

from hapi_onnx.errors import HapiError


def check_output_path(output: str | os.PathLike) -> Path:
    """The output path, refused early when it cannot be a ``.onnx`` file.

    Raises:
        HapiError: when ``output`` is a folder or does not end in ``.onnx``.
    """
    path = Path(output)
    if path.suffix.lower() != ".onnx":
        raise HapiError(f"output must be an .onnx file. Got {str(path)!r} instead.")
    if path.is_dir():
        raise HapiError(f"output {str(path)!r} is a folder; give a file name ending in .onnx.")
    return path


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain (``ai.onnx``) opset of ``model``, 0 when it has none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0



