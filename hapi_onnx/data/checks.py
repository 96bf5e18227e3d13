"""The checks every data source shares: batch sizes, array headers and values, labels, a model's input, splits.

They depend on nothing else in :mod:`hapi_onnx.data`, so every reader can use them.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hapi_onnx.errors import DataError
from hapi_onnx.runtime.preprocess import Preprocessing

if TYPE_CHECKING:
    from hapi_onnx.data.source import DataSource


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


def check_compatible(dataset: "DataSource", input_shape, num_classes: int | None = None) -> None:
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


def check_same_classes(expected: Sequence[str] | None, data: "DataSource", reference: str, role: str) -> None:
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


def check_same_preprocessing(expected: Preprocessing | None, data: "DataSource", reference: str, role: str) -> None:
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


def shared_samples(a: "DataSource", b: "DataSource") -> int:
    """How many samples of ``b`` also appear in ``a``, byte for byte (a leak between splits).

    Streams both: image folders compare file contents, arrays compare sample values, so a sample
    shared between an image folder and an array file is not found.
    """
    seen = set(a.digests())
    return sum(digest in seen for digest in b.digests())
