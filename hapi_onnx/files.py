"""Atomic outputs and content fingerprints, shared by every step that writes an artifact."""

import contextlib
import ctypes
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from hapi_onnx.errors import HapiError

#: The record a directory output carries: which kind of output it is and every file written into it.
OUTPUT_RECORD = ".hapi-onnx-output.json"
#: Write errors that mean "the disk cannot take it", not a bug: one line, not a traceback.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    An error inside the block, Ctrl-C, or SIGTERM turned into an exit (the CLI does so) leaves no
    half-written output, and an existing ``path`` stays untouched until the new one is complete.
    A disk that fills up (or a file size limit) is a :class:`HapiError`, with the same guarantees.

    A directory output gets :data:`OUTPUT_RECORD` (``kind`` and every file written). It replaces
    an existing directory only if that one is empty or provably an earlier output of the same
    kind: its record names ``kind`` and lists every file in it, so a user's folder, or a file a
    user added to an earlier output, is never deleted; of the old output only the files its
    record lists are removed. On Linux the two directories are exchanged in one step
    (``renameat2(RENAME_EXCHANGE)``), so ``path`` always holds the old or the new output; where
    that is not available, the old one is moved aside first (``.<name>.<pid>.old.tmp``) and put
    back by the next writer if the process dies before the new one is in place.

    Missing parent folders of ``path`` are created, as by every command's ``-o`` (and removed
    again if the output is not written).

    Temporary names are ``.<name>.<pid>.<random>.tmp`` beside ``path``; what a killed process
    (SIGKILL, power loss) left there is removed the next time ``path`` is written, once that
    process is gone (:func:`remove_stale_temporaries`).

    Args:
        path (PathLike): The final file or directory.
        directory (bool): Create the temporary path as an empty directory. Defaults to False.
        kind (str | None): With ``directory``: what the output is (``bundle``, ``split``, ...),
            recorded and checked before an existing directory is replaced. Defaults to None
            (only an empty directory is replaced).

    Yields:
        Path: Where to write.

    Raises:
        HapiError: when ``path`` is of the other kind (file vs directory), is a directory that
            is not ours to replace, or cannot be written (no permission, disk full).
    """
    path = Path(path)
    remove_stale_temporaries(path)
    what = "folder" if directory else "file"
    if (path.exists() or path.is_symlink()) and (path.is_symlink() and directory or path.is_dir() != directory):
        raise HapiError(f"output {str(path)!r} already exists and is not a {what}; choose another path.")
    old = _replaceable(path, kind) if directory and path.is_dir() else None
    prefix = f".{path.name}.{os.getpid()}."
    made = missing_parents(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as err:
        _remove_empty(made)
        raise HapiError(f"cannot write {what} {str(path)!r}: {err.strerror or err}.") from None
    swapped = False  # once True, tmp holds the old output (or nothing)
    try:
        try:
            yield tmp
            if directory:
                _write_record(tmp, kind)
            # mkstemp/mkdtemp create owner-only files; give the output the usual umask-based mode.
            tmp.chmod((0o777 if directory else 0o666) & ~_umask())
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            raise HapiError(f"cannot write {what} {_shown(path)!r}: {err.strerror} (nothing was changed).") from None
        try:
            if directory:
                _swap_directories(tmp, path, prefix)
            else:
                os.replace(tmp, path)
            swapped = True
        except OSError as err:
            raise HapiError(f"cannot write {what} {str(path)!r}: {err.strerror or err}.") from None
    except BaseException:
        if not swapped:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            _remove_empty(made)
        raise
    finally:
        if swapped and tmp.is_dir():  # the old output, exchanged into the temporary name
            _remove_recorded(tmp, old or [])


def _shown(path: Path) -> str:
    """``path`` as the user named it: a folder being written (``.out.<pid>.<random>.tmp``) shown as ``out``."""
    return str(Path(*(m.group(1) if (m := _TEMPORARY.fullmatch(part)) else part for part in path.parts)))


_TEMPORARY = re.compile(r"\.(.+)\.\d+\.[a-z0-9_]+\.tmp")


def _swap_directories(new: Path, path: Path, prefix: str) -> None:
    """Put the directory ``new`` at ``path``; an old directory there ends up at ``new``'s name."""
    if not path.exists():
        os.replace(new, path)
        return
    if _exchange(new, path):
        return
    aside = path.with_name(prefix + "old.tmp")  # restored by the next writer if we die in between
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(path, aside)
    os.replace(new, path)
    os.replace(aside, new)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no libc symbol (old glibc, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replaceable(path: Path, kind: str | None) -> list[str]:
    """The files of ``path``, an existing directory, if it is ours to replace; HapiError if not.

    Ours: empty, or holding a :data:`OUTPUT_RECORD` of ``kind`` that lists every file in it (no
    links, nothing else), in folders we can delete from.
    """
    entries = list(path.iterdir())
    if not entries:
        return []
    listed = _read_record(path / OUTPUT_RECORD, kind) if kind else None
    if listed is None:
        raise HapiError(
            f"output {str(path)!r} already exists and is not one this step wrote"
            + (f" (no {kind} record {OUTPUT_RECORD} in it)" if kind else "")
            + "; choose a new path or remove it first."
        )
    folders = {p.as_posix() for f in listed for p in PurePosixPath(f).parents}
    for root, dirs, files in os.walk(path):
        rel = PurePosixPath(Path(root).relative_to(path).as_posix())
        for name in dirs + files:
            entry = (rel / name).as_posix()
            ours = entry in folders if name in dirs else entry in listed or entry == OUTPUT_RECORD
            if Path(root, name).is_symlink() or not ours:
                raise HapiError(
                    f"output {str(path)!r} holds {entry!r}, which this step did not write; hapi-onnx never deletes "
                    "files it did not write: move it out or choose a new path."
                )
        if not os.access(root, os.W_OK | os.X_OK):
            raise HapiError(f"cannot replace folder {str(path)!r}: {root!r} is read-only; "
                            "make it writable or choose a new path.")
    return sorted(listed)


def read_output_record(record: Path) -> dict | None:
    """An output record's fields (bounded JSON, :data:`hapi_onnx.artifact.OUTPUT_RECORD`), or None when
    it is missing, unreadable or not a JSON object."""
    from hapi_onnx.artifact import OUTPUT_RECORD as KIND  # imported here: artifact writes through this module
    from hapi_onnx.artifact import read_json

    try:
        return KIND.check(read_json(record, KIND.name), repr(str(record)))
    except HapiError:
        return None


def _read_record(record: Path, kind: str) -> set[str] | None:
    """The files an output record lists if it is one of ``kind``, else None."""
    if record.is_symlink() or not record.is_file() or record.stat().st_size > 1 << 20:
        return None
    data = read_output_record(record)
    files = data.get("files") if data is not None and data.get("kind") == kind else None
    if not isinstance(files, list) or not all(isinstance(f, str) and f and not f.startswith("/")
                                              and ".." not in PurePosixPath(f).parts for f in files):
        return None
    return set(files)


def _write_record(folder: Path, kind: str | None) -> None:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    (folder / OUTPUT_RECORD).write_text(json.dumps({"kind": kind, "files": files}, indent=1) + "\n")


def _remove_recorded(folder: Path, files: list[str]) -> None:
    """Delete an old output: the files its record lists, then its emptied folders; nothing else."""
    for name in files:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    if [p.name for p in folder.iterdir()] in ([], [OUTPUT_RECORD]):
        with contextlib.suppress(OSError):
            (folder / OUTPUT_RECORD).unlink(missing_ok=True)
            folder.rmdir()


def missing_parents(path: Path) -> list[Path]:
    """The parent folders of ``path`` that do not exist yet, deepest first (made by a write, removed if it fails)."""
    missing = []
    for parent in path.absolute().parents:
        if parent.exists() or parent.is_symlink():
            break
        missing.append(parent)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders a killed process left beside ``path``.

    Only names :func:`atomic_output` makes for ``path`` (``.<name>.<pid>.<random>.tmp``) whose
    process no longer runs are touched, so a concurrent writer's work in progress is kept. A
    directory output swapped out (``.<name>.<pid>.old.tmp``) by a process killed before it put the
    new one in place is renamed back onto ``path`` when ``path`` is missing: nothing is lost. An
    old output left after a swap is removed only as far as its record lists its files.
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
                record = leftover / OUTPUT_RECORD
                if record.is_file():  # a finished output (an old one swapped out): only its files
                    kind = (read_output_record(record) or {}).get("kind")
                    _remove_recorded(leftover, sorted(_read_record(record, kind) or []))
                else:  # a write in progress, into the private folder mkdtemp made
                    shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except (OSError, ValueError, AttributeError):  # gone meanwhile, or not ours to remove: leave it
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


def file_labels(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Short distinct names for files: the name without suffix, with its folder where two share it
    (``mnist/model``, ``mnist_mbv2/model``), numbered where that is not enough."""
    paths = [Path(p) for p in paths]
    labels = [p.stem for p in paths]
    labels = [f"{p.parent.name}/{p.stem}" if labels.count(label) > 1 else label
              for p, label in zip(paths, labels, strict=True)]
    return [label if labels.count(label) == 1 else f"{label}#{i + 1}" for i, label in enumerate(labels)]
