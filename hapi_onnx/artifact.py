"""Versioned JSON artifacts: one ``kind`` and ``format_version`` check for every file we read back."""

import json
import os
from pathlib import Path
from typing import Any

from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output


def save_json(data: dict[str, Any], path: str | os.PathLike, kind: str, format_version: int) -> None:
    """Write ``data`` as JSON with its ``kind`` and ``format_version``, atomically."""
    payload = {"kind": kind, "format_version": format_version, **data}
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")


def load_json(path: str | os.PathLike, kind: str, format_version: int) -> dict[str, Any]:
    """Read a JSON artifact, checking that it is the ``kind`` and version expected.

    Raises:
        HapiError: when the file is missing, is not JSON, or is another kind or version.
    """
    path = Path(path)
    if not path.is_file():
        raise HapiError(f"{kind} file {str(path)!r} does not exist or is not a file.")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HapiError(f"{str(path)!r} is not a valid {kind} file: not JSON ({err}).") from None
    return check_kind(data, kind, format_version, str(path))


def check_kind(data: Any, kind: str, format_version: int, source: str) -> dict[str, Any]:
    """Return ``data`` if it is a dict of this ``kind`` and ``format_version``.

    Raises:
        HapiError: naming ``source`` and what it holds instead.
    """
    if not isinstance(data, dict) or data.get("kind") != kind:
        got = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise HapiError(f"{source!r} is not a {kind} file. Got kind {got!r} instead.")
    if data.get("format_version") != format_version:
        raise HapiError(
            f"{source!r} has {kind} format_version {data.get('format_version')!r}; "
            f"this hapi-onnx reads version {format_version}. Regenerate it with this version."
        )
    return data
