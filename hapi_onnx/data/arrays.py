"""``.npy`` and ``.npz`` image arrays read batch by batch, never whole.

The ``x`` array's header is parsed up front (shape, dtype, order) and its rows are then read
with plain sequential file reads, ``batch_size`` rows at a time: from the ``.npy`` file itself,
or from the ``x.npy`` member of an ``.npz`` (``np.savez`` stores it, ``np.savez_compressed``
deflates it; both stream). Plain reads rather than a memory map keep the process's resident
memory at one batch: pages of a mapped file that have been read count as the process's own.
Labels and class names are small and read whole. An ``x`` saved in Fortran order cannot be read
row by row and is read whole (a note in :class:`ArrayFile`'s docstring, not an error).
"""

import hashlib
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from hapi_onnx.data.checks import check_batch_size, check_finite, check_labels, check_x_header
from hapi_onnx.data.source import DataSource
from hapi_onnx.errors import DataError
from hapi_onnx.runtime.preprocess import Preprocessing


class ArrayFile(DataSource):
    """Model-ready float images in an ``.npy`` (``x`` only) or ``.npz`` (``x``, optional ``y``, ``classes``).

    Args:
        path (PathLike): The file.
        preprocessing (Preprocessing | None): How the arrays were made from pixels, if known;
            recorded, not applied. Defaults to None.

    Raises:
        DataError: when the file is missing, not an ``.npy``/``.npz``, needs pickles, or its
            arrays break the contract (4-D float ``x``, 1-D integer ``y`` of the same length).
    """

    def __init__(self, path: str | os.PathLike, preprocessing: Preprocessing | None = None):
        self.path = Path(path)
        self.preprocessing = preprocessing
        where = self.name
        if not self.path.is_file():
            raise DataError(f"dataset {str(self.path)!r} does not exist (expected an .npz/.npy file or a folder).")
        suffix = self.path.suffix.lower()
        if suffix not in (".npz", ".npy"):
            raise DataError(
                f"{where}: unsupported file type {suffix or '(none)'!r}; expected .npz (x, y), .npy (x) "
                "or a folder of class subfolders with images."
            )
        self._zip = suffix == ".npz"
        with open(self.path, "rb") as f:
            magic = f.read(6)
        if (self._zip and not zipfile.is_zipfile(self.path)) or (not self._zip and magic != b"\x93NUMPY"):
            raise DataError(f"{where}: not a valid {suffix} file; write it with np.savez/np.save.")
        y = classes = None
        if self._zip:
            y, classes = self._read_labels()
        with self._x_stream() as (_, shape, fortran, dtype):
            pass
        check_x_header(shape, dtype, where)
        self._shape, self._dtype = shape, dtype
        self._whole = None
        if fortran:  # rows are not contiguous in the file: read it all (the one case that cannot stream)
            self._whole = self._read_whole()
        self.y, self.classes = check_labels(y, shape[0], classes, where)

    @property
    def name(self) -> str:
        return f"dataset {str(self.path)!r}"

    def __len__(self) -> int:
        return int(self._shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._shape[1:])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        check_batch_size(batch_size)
        n, row = len(self), int(np.prod(self._shape[1:]))
        if self._whole is not None:
            for start in range(0, n, batch_size):
                yield self._whole[start : start + batch_size]
            return
        with self._x_stream() as (stream, _, _, dtype):
            for start in range(0, n, batch_size):
                rows = min(batch_size, n - start)
                try:
                    data = stream.read(rows * row * dtype.itemsize)
                except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
                    raise DataError(f"{self.name}: cannot read samples {start}.. of x ({err}).") from None
                if len(data) != rows * row * dtype.itemsize:
                    raise DataError(f"{self.name}: x ends after {start} of {n} samples; the file is truncated.")
                batch = np.frombuffer(data, dtype).reshape(rows, *self._shape[1:]).astype(np.float32)
                check_finite(batch, self.name, start)
                yield batch

    def digests(self) -> Iterator[bytes]:
        for batch in self.batches(256):
            for row in batch:
                yield hashlib.sha256(row.tobytes()).digest()

    @contextmanager
    def _x_stream(self) -> Iterator[tuple[IO[bytes], tuple[int, ...], bool, np.dtype]]:
        """The open stream positioned at x's first row, with x's shape, Fortran order and dtype."""
        with self._open_x() as stream:
            try:
                version = npy_format.read_magic(stream)
                read_header = {(1, 0): npy_format.read_array_header_1_0,
                               (2, 0): npy_format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, fortran, dtype = read_header(stream)
            except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise DataError(f"{self.name}: not a valid {self.path.suffix} file ({err}).") from None
            if dtype.hasobject:
                raise DataError(f"{self.name}: cannot be read without pickles (x holds Python objects). "
                                "Save plain numeric arrays.")
            yield stream, tuple(shape), bool(fortran), dtype

    @contextmanager
    def _open_x(self) -> Iterator[IO[bytes]]:
        if not self._zip:
            with open(self.path, "rb") as f:
                yield f
            return
        try:
            archive = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{self.name}: not a valid .npz file ({err}).") from None
        with archive:
            names = set(archive.namelist())
            if "x.npy" not in names:
                keys = sorted(n[:-4] if n.endswith(".npy") else n for n in names)
                raise DataError(
                    f"{self.name}: missing key 'x'. Got keys {keys} instead; "
                    "save it with np.savez(path, x=images, y=labels)."
                )
            with archive.open("x.npy") as member:
                yield member

    def _read_whole(self) -> np.ndarray:
        try:
            loaded = np.load(self.path, allow_pickle=False)
            x = loaded["x"] if self._zip else loaded
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
            raise DataError(f"{self.name}: cannot be read ({err}).") from None
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_finite(x, self.name)
        return x

    def _read_labels(self) -> tuple[np.ndarray | None, list | None]:
        """``y`` and ``classes`` of an ``.npz`` (None where absent); x is not read."""
        where = self.name
        try:
            with np.load(self.path, allow_pickle=False) as loaded:
                keys = set(loaded.files)
                y = loaded["y"] if "y" in keys else None
                classes = loaded["classes"].tolist() if "classes" in keys else None
        except ValueError as err:
            if "pickle" not in str(err):
                raise DataError(f"{where}: not a valid .npz file: a member is damaged ({err}).") from None
            raise DataError(f"{where}: cannot be read without pickles ({err}). Save plain numeric arrays.") from None
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as err:  # a damaged member
            raise DataError(f"{where}: not a valid .npz file: a member is damaged ({err}).") from None
        if classes is not None and not isinstance(classes, list):
            raise DataError(f"{where}: 'classes' must be a 1-D array of names. Got a scalar instead.")
        return y, classes
