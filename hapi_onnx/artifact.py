"""Versioned JSON artifacts: one way to write, read, bound and check every JSON hapi-onnx reads.

Every JSON hapi-onnx reads back is one :class:`Kind` (the test ``test_artifact_kinds`` lists them
all): a file (design, latency table, evaluation report, split index, a trace's metadata, bundle
manifest, device preset, build config, preprocessing spec, pipeline step record, the output record
of a directory output) or an entry of a
model's metadata (exit layout, input record, load notes). Its text is decoded by
:func:`parse_json` with bounds: a file over :data:`MAX_BYTES`, nesting deeper than
:data:`MAX_DEPTH`, an integer longer than :data:`MAX_INT_DIGITS` digits, a NaN/Infinity constant
or a number too large for a float (``1e999``) is refused as malformed, never turned into a
``RecursionError``, a ``ValueError``, an infinity or a huge number. Then its ``kind`` (where it
carries one) and ``format_version`` are checked, and it is rebuilt inside :func:`malformed`, so a
missing field or one of the wrong type is one :class:`~hapi_onnx.errors.HapiError` too.

Standard library only: the runtime reads bundle manifests with it on the edge device.
"""

import contextlib
import json
import math
import numbers
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output

MAX_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_INT_DIGITS = 40
_PRIVATE = ("kind", "format_version")
T = TypeVar("T")


def parse_json(text: str | bytes, source: str) -> Any:
    """Decode JSON text within the bounds of this module.

    Args:
        text (str | bytes): The JSON text (bytes are decoded as UTF-8).
        source (str): What the text is, for messages (e.g. ``"'design.json'"``).

    Raises:
        HapiError: when it is too large, not UTF-8, not JSON, or breaks a bound.
    """
    if len(text) > MAX_BYTES:
        raise HapiError(f"{source} is larger than {MAX_BYTES >> 20} MiB; it is not a hapi-onnx artifact.")
    try:
        data = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise HapiError(f"{source} is not valid: JSON nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise HapiError(f"{source} is not valid JSON ({err}).") from None
    if _depth(data) > MAX_DEPTH:
        raise HapiError(f"{source} is not valid: JSON nested deeper than {MAX_DEPTH} levels.")
    return data


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read and decode a JSON file (bounded, see :func:`parse_json`).

    Args:
        path (PathLike): The file.
        what (str): What it should be, for messages (e.g. ``"design"``).

    Raises:
        HapiError: when the file is missing, unreadable or not bounded JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise HapiError(f"{what} file {str(path)!r} does not exist or is not a file.")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise HapiError(f"{what} file {str(path)!r} is larger than {MAX_BYTES >> 20} MiB; it is not a {what}.")
        text = path.read_bytes()
    except OSError as err:
        raise HapiError(f"cannot read {what} file {str(path)!r}: {err.strerror or err}.") from None
    return parse_json(text, f"{what} file {str(path)!r}")


def check_kind(data: Any, kind: str, format_version: int, source: str) -> dict[str, Any]:
    """Return ``data`` if it is a dict of this ``kind`` and ``format_version``.

    Raises:
        HapiError: naming ``source`` and what it holds instead.
    """
    if not isinstance(data, dict) or data.get("kind") != kind:
        got = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise HapiError(f"{source} is not a {kind} file. Got kind {got!r} instead.")
    if data.get("format_version") != format_version:
        raise HapiError(
            f"{source} has {kind} format_version {data.get('format_version')!r}; "
            f"this hapi-onnx reads version {format_version}. Regenerate it with this version."
        )
    return data


def save_json(data: dict[str, Any], path: str | os.PathLike, kind: str, format_version: int) -> None:
    """Write ``data`` as JSON with its ``kind`` and ``format_version``, atomically (no NaN allowed)."""
    payload = {"kind": kind, "format_version": format_version, **data}
    text = json.dumps(payload, indent=2, allow_nan=False, default=_plain_number) + "\n"
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def _plain_number(value: Any) -> int | float:
    """A numpy scalar (which registers as a ``numbers`` type) as the Python number it holds."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


KINDS: dict[str, "Kind"] = {}
"""Every kind of JSON hapi-onnx reads, by name (filled as the modules defining them are imported)."""


@dataclass(frozen=True)
class Kind:
    """One kind of JSON hapi-onnx reads: a file, or an entry of a model's metadata.

    Attributes:
        name (str): What it is, for messages; its ``kind`` field too when ``tagged``.
        format_version (int | None): The version this hapi-onnx reads; None for what users
            write without one (a build config, a preprocessing spec, whose own fields say more).
        tagged (bool): The JSON carries ``"kind": name``. Defaults to False.
        version_optional (bool): A missing ``format_version`` reads as this one (device presets,
            which users write by hand). Defaults to False.
    """

    name: str
    format_version: int | None = None
    tagged: bool = False
    version_optional: bool = False

    def __post_init__(self):
        KINDS[self.name] = self

    def check(self, data: Any, source: str) -> dict[str, Any]:
        """``data`` if it is an object of this kind and version.

        Raises:
            HapiError: naming ``source`` and what it holds instead.
        """
        if self.tagged:
            return check_kind(data, self.name, self.format_version, source)
        if not isinstance(data, dict):
            raise HapiError(f"{source} is not a {self.name}: expected a JSON object. Got {type(data).__name__}.")
        if self.format_version is not None:
            version = data.get("format_version", self.format_version if self.version_optional else None)
            if version != self.format_version:
                raise HapiError(
                    f"{source} has {self.name} format_version {version!r}; "
                    f"this hapi-onnx reads version {self.format_version}. Regenerate it with this version."
                )
        return data

    def read(self, value: str | bytes | Any, source: str, build: Callable[[dict[str, Any]], T]) -> T:
        """Decode (text, bounded), check and rebuild one value of this kind.

        Args:
            value (str | bytes | object): JSON text, or data already decoded by :func:`parse_json`.
            source (str): Where it comes from, for messages.
            build (Callable): Makes the value from the fields (``kind`` and ``format_version``
                removed); a missing or ill-typed field it meets is reported by :func:`malformed`.

        Raises:
            HapiError: when it is not bounded JSON, another kind or version, or malformed.
        """
        data = parse_json(value, source) if isinstance(value, (str, bytes)) else value
        fields = {key: item for key, item in self.check(data, source).items() if key not in _PRIVATE}
        with malformed(source, self.name):
            return build(fields)

    def load(self, path: str | os.PathLike, build: Callable[[dict[str, Any]], T]) -> T:
        """:meth:`read` a file (missing, unreadable or too large: one HapiError)."""
        return self.read(read_json(path, self.name), repr(str(path)), build)

    def save(self, data: dict[str, Any], path: str | os.PathLike) -> None:
        """Write ``data`` as a file of this (tagged, versioned) kind, atomically."""
        save_json(data, path, self.name, self.format_version)


OUTPUT_RECORD = Kind("output record")
"""``files.OUTPUT_RECORD`` in a directory output: the files it holds; its own ``kind`` says whose."""


@contextlib.contextmanager
def malformed(source: str, kind: str) -> Iterator[None]:
    """Turn a missing or ill-typed field met while rebuilding an artifact into one :class:`HapiError`."""
    try:
        yield
    except HapiError as err:
        raise HapiError(f"{source} is a malformed {kind}: {err}") from None
    except KeyError as err:
        raise HapiError(f"{source} is a malformed {kind}: field {err} is missing.") from None
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
        raise HapiError(f"{source} is a malformed {kind}: {err}.") from None


class JsonArtifact:
    """Save/load for frozen dataclasses stored as versioned JSON (a mixin).

    A subclass sets ``KIND`` and ``FORMAT_VERSION`` and, when its fields hold other dataclasses,
    overrides :meth:`from_dict` to rebuild them (``to_dict`` is :func:`dataclasses.asdict`).
    """

    KIND: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Kind(cls.KIND, cls.FORMAT_VERSION, tagged=True)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Rebuild from :meth:`to_dict`'s form (fields validated by the dataclass)."""
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        """Write as versioned JSON, atomically."""
        KINDS[self.KIND].save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a file written by :meth:`save`.

        Raises:
            HapiError: when the file is missing, malformed, or another kind or version.
        """
        return KINDS[cls.KIND].load(path, cls.from_dict)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 decodes to inf
        raise ValueError(f"{text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _depth(data: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest
