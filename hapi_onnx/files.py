"""Atomic outputs and content fingerprints, shared by every step that writes an artifact."""

import contextlib
import glob
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

    An error inside the block, Ctrl-C, or SIGTERM turned into an exit (the CLI does so) leaves no
    half-written output, and an existing ``path`` stays untouched until the new one is complete.
    A directory output replaces an existing directory only if that one is empty or holds
    ``marker`` (the file that identifies an earlier output of the same kind, e.g.
    ``manifest.json``): a user's folder is never deleted. The swap of two directories is two
    renames, so ``path`` is briefly absent.

    Temporary names are ``.<name>.<pid>.<random>.tmp`` beside ``path``; what a killed process
    (SIGKILL, power loss) left there is removed the next time ``path`` is written, once that
    process is gone (:func:`remove_stale_temporaries`).

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
    remove_stale_temporaries(path)
    what = "folder" if directory else "file"
    if path.exists() and path.is_dir() != directory:
        raise HapiError(f"output {str(path)!r} already exists and is not a {what}; choose another path.")
    if directory and path.is_dir() and any(path.iterdir()) and not (marker and (path / marker).is_file()):
        raise HapiError(
            f"output {str(path)!r} already exists and is not one this step wrote"
            + (f" (no {marker} in it)" if marker else "")
            + "; choose a new path or remove it first."
        )
    prefix = f".{path.name}.{os.getpid()}."
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
                old = path.with_name(prefix + "old.tmp")  # restored by the next writer if we die here
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


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders a killed process left beside ``path``.

    Only names :func:`atomic_output` makes for ``path`` (``.<name>.<pid>.<random>.tmp``) whose
    process no longer runs are touched, so a concurrent writer's work in progress is kept. A
    directory output swapped out (``.<name>.<pid>.old.tmp``) by a process killed before it put the
    new one in place is renamed back onto ``path`` when ``path`` is missing: nothing is lost.
    On systems without POSIX process checks nothing is removed.

    Returns:
        list[Path]: What was removed or restored.
    """
    path = Path(path)
    if os.name != "posix" or not path.parent.is_dir():
        return []
    prefix = f".{path.name}."
    done = []
    for leftover in sorted(path.parent.glob(glob.escape(prefix) + "*.tmp")):
        pid = leftover.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _running(int(pid)):
            continue
        try:
            if leftover.name.endswith(".old.tmp") and leftover.is_dir() and not path.exists():
                os.replace(leftover, path)
            elif leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
        done.append(leftover)
    return done


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    return True


def check_outputs_apart(
    outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]
) -> None:
    """Refuse an output that would overwrite or land among a step's inputs, before any work.

    An output may not resolve to an input (the same file, through links or ``..`` too), lie inside
    an input folder, or be a folder holding an input. Two outputs may not overlap in these ways
    either.

    Args:
        outputs (Mapping[str, PathLike | None]): What each output is called (e.g. ``"-o"``) and
            its path; None entries are skipped.
        inputs (Mapping[str, PathLike | None]): Likewise for the inputs.

    Raises:
        HapiError: naming the output, the input (or other output) and their paths.
    """
    ins = {name: Path(p).resolve() for name, p in inputs.items() if p is not None}
    outs = {name: Path(p).resolve() for name, p in outputs.items() if p is not None}
    for k, (out_name, out) in enumerate(outs.items()):
        others = [("input", name, path, inputs[name]) for name, path in ins.items()]
        others += [("output", name, path, outputs[name]) for name, path in list(outs.items())[k + 1:]]
        for what, name, other, given in others:
            if out == other:
                why = "is the same path as"
            elif other in out.parents:
                why = "lies inside"
            elif out in other.parents:
                why = "is a folder holding"
            else:
                continue
            raise HapiError(
                f"output {out_name} {str(outputs[out_name])!r} {why} the {what} {name} {str(given)!r}: "
                f"writing it would overwrite or mix with that {what}. Choose another output path."
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
