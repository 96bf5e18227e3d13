"""Atomic outputs and content fingerprints, shared by every step that writes an artifact."""

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from hapi_onnx.errors import HapiError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or an error inside the block leaves no half-written output, and an existing
    ``path`` stays untouched until the new one is complete. A directory output replaces an
    existing directory only if that one is empty or holds ``marker`` (the file that identifies
    an earlier output of the same kind, e.g. ``manifest.json``): a user's folder is never
    deleted. The swap of two directories is two renames, so ``path`` is briefly absent.

    Args:
        path (PathLike): The final file or directory.
        directory (bool): Create the temporary path as an empty directory. Defaults to False.
        marker (str | None): With ``directory``: the file name that marks a replaceable
            directory. Defaults to None (only an empty directory is replaced).

    Yields:
        Path: Where to write.

    Raises:
        HapiError: when ``path`` is of the other kind (file vs directory), is a directory that
            is not ours to replace, or cannot be written.
    """
    path = Path(path)
    what = "folder" if directory else "file"
    if path.exists() and path.is_dir() != directory:
        raise HapiError(f"output {str(path)!r} already exists and is not a {what}; choose another path.")
    if directory and path.is_dir() and any(path.iterdir()) and not (marker and (path / marker).is_file()):
        raise HapiError(
            f"output {str(path)!r} already exists and is not one this step wrote"
            + (f" (no {marker} in it)" if marker else "")
            + "; choose a new path or remove it first."
        )
    prefix = f".{path.name}."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:
        raise HapiError(f"cannot write {what} {str(path)!r}: {err.strerror or err}.") from None
    try:
        yield tmp
        # mkstemp/mkdtemp create owner-only files; give the output the usual umask-based mode.
        mask = _umask()
        tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~mask)
        try:
            if directory and path.is_dir():
                old = path.with_name(prefix + "old.tmp")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except OSError as err:
            raise HapiError(f"cannot write {what} {str(path)!r}: {err.strerror or err}.") from None
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def check_outputs_apart(
    outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]
) -> None:
    """Refuse an output that would overwrite or land among a step's inputs, before any work.

    An output may not resolve to an input (the same file, through links or ``..`` too), lie inside
    an input folder, or be a folder holding an input.

    Args:
        outputs (Mapping[str, PathLike | None]): What each output is called (e.g. ``"-o"``) and
            its path; None entries are skipped.
        inputs (Mapping[str, PathLike | None]): Likewise for the inputs.

    Raises:
        HapiError: naming the output, the input and their paths.
    """
    ins = {name: Path(p).resolve() for name, p in inputs.items() if p is not None}
    for out_name, out_path in outputs.items():
        if out_path is None:
            continue
        out = Path(out_path).resolve()
        for in_name, inp in ins.items():
            if out == inp:
                why = "is the same path as"
            elif inp in out.parents:
                why = "lies inside"
            elif out in inp.parents:
                why = "is a folder holding"
            else:
                continue
            raise HapiError(
                f"output {out_name} {str(out_path)!r} {why} the input {in_name} {str(inputs[in_name])!r}: "
                "writing it would overwrite or mix with that input. Choose another output path."
            )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
