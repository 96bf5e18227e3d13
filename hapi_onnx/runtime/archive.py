"""Read a bundle's files, from a ``MODEL.hapi/`` directory or a single-file zip, and verify them.

Zip bundles are read in memory, never extracted: a member with an absolute path, a ``..``
component, a backslash, a symlink mode or a name the manifest does not list is refused before
anything is read from it. Every stage file is checked against its sha256 from the same bytes
that are then handed to ONNX Runtime, so what is verified is what runs.

Reads are bounded: a stage whose size differs from the manifest's ``size`` is refused before a
byte of it is read or inflated, and every file is read in chunks that stop past the size expected
(the manifest's, else :data:`MAX_MEMBER_BYTES`; :data:`~hapi_onnx.artifact.MAX_BYTES` for the
manifest), so a small zip declaring a huge member costs nothing before it is refused.
"""

import hashlib
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hapi_onnx.artifact import MAX_BYTES
from hapi_onnx.errors import BundleError, HapiError, as_error
from hapi_onnx.runtime.manifest import MANIFEST_NAME, Manifest, StageSpec

# ONNX protobufs are limited to 2 GiB; a member claiming more is refused before it is read.
MAX_MEMBER_BYTES = 2 << 30
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleContents:
    """A verified bundle: its manifest and each stage's ONNX bytes, in stage order."""

    manifest: Manifest
    stage_bytes: tuple[bytes, ...]


def read_bundle(path: str | os.PathLike) -> BundleContents:
    """Read and verify a bundle directory or zip file.

    Args:
        path (PathLike): ``MODEL.hapi`` directory or ``MODEL.hapi.zip`` file.

    Returns:
        BundleContents: The validated manifest and the stage files' bytes.

    Raises:
        BundleError: when the path is missing, the manifest is malformed, a file is missing,
            unexpected (zip), unsafe (zip) or does not match its sha256.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise HapiError(f"A bundle path must be a str or os.PathLike (MODEL.hapi or MODEL.hapi.zip). "
                        f"Got {type(path).__name__} {path!r} instead.")
    path = Path(path)
    with as_error(BundleError):  # the manifest's own checks (JSON bounds, the threshold rule) too
        if path.is_dir():
            return _read_directory(path)
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise BundleError(
                    f"{str(path)!r} is neither a bundle directory nor a zip bundle. "
                    "Pass the MODEL.hapi directory (or MODEL.hapi.zip) written by `hapi-onnx bundle`."
                )
            return _read_zip(path)
    raise BundleError(f"Bundle {str(path)!r} does not exist. Build one with `hapi-onnx bundle`.")


def _verified(manifest: Manifest, stage_index: int, data: bytes, origin: str) -> bytes:
    stage = manifest.stages[stage_index]
    digest = hashlib.sha256(data).hexdigest()
    if digest != stage.sha256:
        raise BundleError(
            f"Bundle {origin!r}: stage file {stage.file!r} does not match the sha256 in the manifest "
            f"(expected {stage.sha256[:12]}..., got {digest[:12]}...). The bundle was modified or "
            "corrupted; rebuild it with `hapi-onnx bundle`."
        )
    return data


def _check_size(stage: StageSpec, size: int, origin: str) -> int:
    """The most bytes to read for ``stage``; BundleError when its recorded or declared size is wrong."""
    if stage.size is not None and size != stage.size:
        raise BundleError(
            f"Bundle {origin!r}: stage file {stage.file!r} does not match the sha256 in the manifest: it holds "
            f"{size} bytes, not the {stage.size} recorded (not read). The bundle was modified or corrupted; "
            "rebuild it with `hapi-onnx bundle`."
        )
    if size > MAX_MEMBER_BYTES:
        raise BundleError(f"Bundle {origin!r}: stage file {stage.file!r} claims {size} bytes; refusing it.")
    return stage.size if stage.size is not None else MAX_MEMBER_BYTES


def _read_capped(stream, limit: int, what: str, origin: str) -> bytes:
    """Read ``stream`` in chunks; BundleError as soon as it holds more than ``limit`` bytes."""
    chunks, total = [], 0
    while chunk := stream.read(min(_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise BundleError(
                f"Bundle {origin!r}: {what} holds more than the {limit} bytes expected; the bundle was modified "
                "or corrupted. Rebuild it with `hapi-onnx bundle`."
            )
    return b"".join(chunks)


def _read_directory(root: Path) -> BundleContents:
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise BundleError(
            f"Bundle {str(root)!r} has no {MANIFEST_NAME}. Is this a bundle written by `hapi-onnx bundle`?"
        )
    try:
        with open(manifest_path, "rb") as f:
            manifest = Manifest.from_json(_read_capped(f, MAX_BYTES, MANIFEST_NAME, str(root)))
        blobs = []
        for i, stage in enumerate(manifest.stages):
            file = root / stage.file
            rel = PurePosixPath(stage.file)
            linked = [p for p in (rel, *rel.parents) if p != PurePosixPath(".") and (root / p).is_symlink()]
            if linked or not file.is_file():
                what = ("is missing" if not linked else "is a symlink" if linked[0] == rel
                        else f"lies in {linked[-1].as_posix()!r}, a symlink")
                raise BundleError(
                    f"Bundle {str(root)!r}: stage file {stage.file!r} {what}. "
                    "Rebuild the bundle with `hapi-onnx bundle`."
                )
            with open(file, "rb") as f:
                limit = _check_size(stage, os.fstat(f.fileno()).st_size, str(root))
                blobs.append(_verified(manifest, i, _read_capped(f, limit, repr(stage.file), str(root)), str(root)))
    except OSError as err:
        raise BundleError(f"Bundle {str(root)!r} cannot be read: {err.strerror or err}.") from None
    return BundleContents(manifest=manifest, stage_bytes=tuple(blobs))


def _check_member(info: zipfile.ZipInfo, origin: str) -> str:
    """The member's normalised name, or BundleError if it could escape or is not a plain file."""
    name = info.filename
    parts = PurePosixPath(name).parts
    unsafe = (
        name.startswith(("/", "\\"))
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")
        or any(p == ".." for p in parts)
        or stat.S_ISLNK(info.external_attr >> 16)
    )
    if unsafe:
        raise BundleError(
            f"Zip bundle {origin!r} has an unsafe member {name!r} (absolute path, '..' or symlink). "
            "Refusing to load it; rebuild the bundle with `hapi-onnx bundle --zip`."
        )
    if info.file_size > MAX_MEMBER_BYTES:
        raise BundleError(f"Zip bundle {origin!r}: member {name!r} claims {info.file_size} bytes; refusing it.")
    return name


def _read_zip(path: Path) -> BundleContents:
    origin = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [_check_member(info, origin) for info in infos]
            if len(set(names)) != len(names):
                raise BundleError(f"Zip bundle {origin!r} lists a member twice. Rebuild the bundle.")
            by_name = dict(zip(names, infos, strict=True))
            if MANIFEST_NAME not in by_name:
                raise BundleError(f"Zip bundle {origin!r} has no {MANIFEST_NAME} at its root.")
            with archive.open(by_name[MANIFEST_NAME]) as member:
                manifest = Manifest.from_json(_read_capped(member, MAX_BYTES, MANIFEST_NAME, origin))
            expected = {MANIFEST_NAME, "stages/"} | {s.file for s in manifest.stages}
            unexpected = sorted(set(names) - expected)
            if unexpected:
                raise BundleError(
                    f"Zip bundle {origin!r} holds files its manifest does not list: {unexpected!r}. "
                    "Refusing to load it; rebuild the bundle with `hapi-onnx bundle --zip`."
                )
            blobs = []
            for i, stage in enumerate(manifest.stages):
                if stage.file not in by_name:
                    raise BundleError(f"Zip bundle {origin!r}: stage file {stage.file!r} is missing.")
                info = by_name[stage.file]
                limit = _check_size(stage, info.file_size, origin)  # before a byte is inflated
                with archive.open(info) as member:
                    blobs.append(_verified(manifest, i, _read_capped(member, limit, repr(stage.file), origin), origin))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError) as err:
        raise BundleError(f"Zip bundle {origin!r} cannot be read: {err}.") from None
    return BundleContents(manifest=manifest, stage_bytes=tuple(blobs))
