"""What every step reads: :class:`DataSource` (labels up front, images in batches), and :class:`Dataset` in memory."""

import abc
import copy
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hapi_onnx.data.checks import check_batch_size, check_compatible, check_finite, check_labels, check_x_header
from hapi_onnx.errors import DataError
from hapi_onnx.files import atomic_output
from hapi_onnx.runtime.preprocess import Preprocessing


class DataSource(abc.ABC):
    """Images with optional integer labels, read as batches of model input.

    Attributes:
        y (np.ndarray | None): int64 ``[N]`` labels in ``0..num_classes-1``, or None when unlabelled.
        classes (tuple[str, ...] | None): Human-readable label of each class index, if known.
        preprocessing (Preprocessing | None): How pixels became (folders) or were made into
            (arrays, as declared by the caller) the model input; None when unknown.
    """

    y: np.ndarray | None
    classes: tuple[str, ...] | None
    preprocessing: Preprocessing | None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """What the data is, for messages (e.g. ``dataset 'train.npz'``)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample as fed to the model (``C x H x W`` or ``H x W x C``); None until known."""

    @abc.abstractmethod
    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """float32 ``[<= batch_size, *image_shape]`` batches of every sample, in order."""

    @abc.abstractmethod
    def digests(self) -> Iterator[bytes]:
        """One content digest per sample, in order (to find samples shared between splits)."""

    def fit_to(self, input_shape: Sequence[Any], what: str = "the model") -> "DataSource":
        """This data as input for a model with ``input_shape``: checked, its spec resolved for it.

        Arrays are the model's input already: their shape is checked, and a declared spec gets its
        channel order and layout from the model (what the bundle will record).

        Raises:
            DataError: when the samples cannot be the model's input, or the spec does not fit it.
        """
        check_compatible(self, input_shape)
        if self.preprocessing is None:
            return self
        resolved = self.preprocessing.for_input(input_shape, what)
        if resolved == self.preprocessing:
            return self
        fitted = copy.copy(self)
        object.__setattr__(fitted, "preprocessing", resolved)  # also on a frozen Dataset: same arrays
        return fitted

    def class_counts(self, num_classes: int | None = None) -> np.ndarray:
        """int64 count of samples per class (length ``num_classes``, or enough to cover the labels).

        Raises:
            DataError: when the data has no labels.
        """
        if self.y is None:
            raise DataError(f"{self.name} has no labels (no 'y'); class counts need a labelled set.")
        size = num_classes if num_classes is not None else (len(self.classes) if self.classes else 0)
        return np.bincount(self.y, minlength=size).astype(np.int64)

    def to_memory(self, batch_size: int = 256) -> "Dataset":
        """All samples read into one in-memory :class:`Dataset`."""
        x = np.concatenate(list(self.batches(batch_size)))
        return Dataset(x, self.y, self.classes, self.preprocessing)


@dataclass(frozen=True, eq=False)
class Dataset(DataSource):
    """Images in memory with optional integer labels.

    Attributes:
        x (np.ndarray): float32 images in the model's input layout: ``N x C x H x W``, or
            ``N x H x W x C`` for a channels-last model.
        y (np.ndarray | None): int64 ``[N]`` labels in ``0..num_classes-1``, or None when unlabelled.
        classes (tuple[str, ...] | None): Human-readable label of each class index, if known.
        preprocessing (Preprocessing | None): How the arrays were made from pixels, if declared.
    """

    x: np.ndarray
    y: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    preprocessing: Preprocessing | None = None

    def __post_init__(self):
        x, y, classes = _validated(self.x, self.y, self.classes, "Dataset")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "preprocessing", Preprocessing.from_value(self.preprocessing))

    @property
    def name(self) -> str:
        return "the dataset"

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of every sample (``C x H x W``, or ``H x W x C`` for a channels-last model)."""
        return tuple(int(d) for d in self.x.shape[1:])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.x), check_batch_size(batch_size)):
            yield self.x[start : start + batch_size]

    def digests(self) -> Iterator[bytes]:
        for row in self.x:
            yield hashlib.sha256(np.ascontiguousarray(row).tobytes()).digest()

    def to_memory(self, batch_size: int = 256) -> "Dataset":
        return self

    def subset(self, indices: np.ndarray) -> "Dataset":
        """A new dataset with the samples at ``indices`` (in that order)."""
        indices = np.asarray(indices)
        return Dataset(self.x[indices], None if self.y is None else self.y[indices], self.classes,
                       self.preprocessing)

    def save(self, path: str | os.PathLike) -> None:
        """Write the dataset as an ``.npz`` (keys ``x``, ``y``, ``classes``; no pickles), atomically."""
        arrays = {"x": self.x}
        if self.y is not None:
            arrays["y"] = self.y
        if self.classes is not None:
            arrays["classes"] = np.array(self.classes, dtype=str)
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            # A file object, not a name: np.savez would append ".npz" to the temporary name.
            np.savez_compressed(f, **arrays)


def _validated(x, y, classes, where: str):
    """Check and convert arrays to the Dataset contract; ``where`` names the source in messages."""
    if not isinstance(x, np.ndarray):
        raise DataError(f"{where}: x must be a numpy array. Got {type(x).__name__} instead.")
    check_x_header(x.shape, x.dtype, where)
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_finite(x, where)
    y, classes = check_labels(y, len(x), classes, where)
    return x, y, classes
