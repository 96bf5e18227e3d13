"""A folder of images, labelled (one subfolder per class) or not (images only), decoded lazily into model input.

Nothing is decoded when the folder is opened: the class folders and files are listed. Fitting it
to a model (:meth:`ImageFolder.fit_to`) resolves the preprocessing spec against the model's input
and reads every image's header (size and mode, a few hundred bytes each), so an unreadable file,
an image smaller than the crop or a size that does not match the model is refused before any
work. :meth:`ImageFolder.batches` then decodes images with Pillow in background threads, a batch
ahead of the caller, and applies the spec with
:func:`~hapi_onnx.runtime.preprocess.preprocess_image`, the function the runtime uses: memory
holds two batches of images, whatever the folder's size.
"""

import contextlib
import hashlib
import os
import unicodedata
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hapi_onnx.data.checks import check_batch_size, check_compatible
from hapi_onnx.data.source import DataSource
from hapi_onnx.errors import DataError, HapiError
from hapi_onnx.lazy import lazy_import
from hapi_onnx.runtime.preprocess import MAX_IMAGE_PIXELS, Preprocessing, preprocess_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
"""Pillow modes decoded as one channel (``L``); every other mode is decoded as ``RGB``."""
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden names skipped), sorted by path."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def decode_image(path: Path, where: str = "") -> np.ndarray:
    """The pixels of an image file: ``H x W`` (grayscale modes) or ``H x W x 3`` (RGB).

    8-bit images decode to uint8, 16-bit grayscale ones (``I;16`` PNG and TIFF, ``I``) to uint16,
    which preprocessing scales by their own range, never clipped to 8 bits.

    Raises:
        DataError: when the file is not a readable image or is over
            :data:`~hapi_onnx.runtime.preprocess.MAX_IMAGE_PIXELS` (naming it, after ``where``).
    """
    with open_image(path, where) as im:
        try:
            if im.mode.startswith("I;16") or im.mode == "I":
                return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
            return np.asarray(im.convert("L" if im.mode in GRAY_MODES else "RGB"))
        except (OSError, ValueError, SyntaxError) as err:
            raise DataError(f"{where + ': ' if where else ''}cannot read image {str(path)!r} ({err}).") from None


@contextlib.contextmanager
def open_image(path: Path, where: str = "") -> Iterator[Any]:
    """A Pillow image with only its header read, refused when it is not a regular file or too large.

    The pixel count is checked from the header, before anything is decoded, and Pillow's own
    decompression-bomb warning is silenced (the check here is the same limit, as an error).
    """
    image_mod = lazy_import("PIL.Image", "images")
    prefix = f"{where + ': ' if where else ''}"
    if not Path(path).is_file():  # a FIFO would block the read forever
        raise DataError(f"{prefix}image {str(path)!r} is not a regular file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_mod.DecompressionBombWarning)
            im = image_mod.open(path)
    except (OSError, ValueError, SyntaxError, image_mod.DecompressionBombError) as err:
        raise DataError(f"{prefix}cannot read image {str(path)!r} ({err}).") from None
    with im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise DataError(
                f"{prefix}image {str(path)!r} is {im.width}x{im.height} pixels, more than the {MAX_IMAGE_PIXELS} "
                "hapi-onnx decodes; downscale it first."
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_mod.DecompressionBombWarning)
            yield im


def _check_class_folders(root: Path, class_dirs: Sequence[Path], where: str) -> None:
    """Refuse class folders that name one class twice (Unicode NFC vs NFD spellings of one name)
    or link back to the split folder itself or a folder holding it (its images would be a class)."""
    seen: dict[str, str] = {}
    for folder in class_dirs:
        key = unicodedata.normalize("NFC", folder.name)
        if key in seen:
            raise DataError(
                f"{where}: class folders {seen[key]!r} and {folder.name!r} look the same but are spelled with "
                "different Unicode code points (NFC and NFD); rename one so that each class has one folder."
            )
        seen[key] = folder.name
        if folder.is_symlink():
            target, split = folder.resolve(), root.resolve()
            if target == split or target in split.parents:
                what = "the split folder itself" if target == split else "a folder holding the split"
                raise DataError(f"{where}: class folder {folder.name!r} is a link to {what} ({str(target)!r}); "
                                "remove the link: every subfolder is a class.")


class ImageFolder(DataSource):
    """Images in ``root/<class>/...``; classes are the sorted subfolder names, labels their indices.

    A folder with no subfolder holds unlabelled images (``root/*.jpg``: ``y`` and ``classes`` None),
    as ``calibrate`` takes for ``--reference final``.

    Args:
        root (PathLike): The folder.
        preprocessing (Preprocessing | None): How pixels become model input. Defaults to None:
            preset ``none`` (pixels / 255 at the image's own size).
        workers (int | None): Decoding threads; 0 decodes in the caller's thread. Defaults to
            None: ``DEFAULT_WORKERS``.

    Raises:
        DataError: when the folder holds no image, or a class folder holds no image
            (its label would still be taken, shifting nothing but naming a class never seen).
    """

    def __init__(self, root: str | os.PathLike, preprocessing: Preprocessing | None = None,
                 workers: int | None = None):
        self.root = Path(root)
        self.preprocessing = preprocessing if preprocessing is not None else Preprocessing.preset("none")
        self.workers = DEFAULT_WORKERS if workers is None else int(workers)
        if not self.root.is_dir():
            raise DataError(f"image folder {str(self.root)!r} does not exist or is not a folder.")
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.files, self.y, self.classes = self._labelled(class_dirs) if class_dirs else self._unlabelled()
        self._sizes: tuple[tuple[int, int], ...] | None = None  # (H, W) per file, from the header scan
        self._output: tuple[int, int] | None = None  # (H, W) of every output image, once known

    def _labelled(self, class_dirs: list[Path]) -> tuple[tuple[Path, ...], np.ndarray, tuple[str, ...]]:
        _check_class_folders(self.root, class_dirs, self.name)
        files: list[Path] = []
        labels: list[int] = []
        for label, folder in enumerate(class_dirs):
            found = image_files(folder)
            if not found:
                raise DataError(
                    f"{self.name}: class folder {folder.name!r} holds no images ({', '.join(IMAGE_SUFFIXES)}). "
                    "Add its images or remove the folder: every class folder is a class of the model."
                )
            files += found
            labels += [label] * len(found)
        return tuple(files), np.array(labels, dtype=np.int64), tuple(d.name for d in class_dirs)

    def _unlabelled(self) -> tuple[tuple[Path, ...], None, None]:
        files = tuple(image_files(self.root))
        if not files:
            raise DataError(
                f"{self.name}: expected images ({', '.join(IMAGE_SUFFIXES)}): unlabelled at its top level, or in "
                f"one subfolder per class (e.g. {self.root}/cat/1.jpg). Found none."
            )
        return files, None, None

    @property
    def name(self) -> str:
        return f"image folder {str(self.root)!r}"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        spec = self.preprocessing
        if spec.channel_order is None or spec.layout is None:
            return None
        size = spec.output_size or self._output
        return None if size is None else spec.sample_shape(*size)

    def fit_to(self, input_shape: Sequence[Any], what: str = "the model") -> "ImageFolder":
        """This folder with its spec resolved for ``input_shape`` and every image's header checked.

        Raises:
            DataError: when the spec does not fit the model (channels, output size), a file is not a
                readable image, an image is smaller than the crop, or the output sizes differ.
        """
        spec = self.preprocessing.for_input(input_shape, what)
        folder = self._with(spec)
        folder._check_sizes()
        check_compatible(folder, input_shape)
        return folder

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        check_batch_size(batch_size)
        folder = self._ready()
        n = len(folder)
        if folder.workers <= 0:
            for start in range(0, n, batch_size):
                yield np.stack([folder._decode(i) for i in range(start, min(start + batch_size, n))])
            return
        pool = ThreadPoolExecutor(folder.workers, thread_name_prefix="hapi-decode")
        pending: deque[Future] = deque()
        submitted = 0
        try:
            for start in range(0, n, batch_size):
                # Keep this batch and the next one in flight: decoding overlaps the caller's work.
                while submitted < min(n, start + 2 * batch_size):
                    pending.append(pool.submit(folder._decode, submitted))
                    submitted += 1
                yield np.stack([pending.popleft().result() for _ in range(min(batch_size, n - start))])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def digests(self) -> Iterator[bytes]:
        for path in self.files:
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        digest.update(block)
            except OSError as err:
                raise DataError(f"{self.name}: cannot read {str(path)!r} ({err.strerror or err}).") from None
            yield digest.digest()

    # -- internals -------------------------------------------------------------------------------

    def _with(self, spec: Preprocessing) -> "ImageFolder":
        folder = object.__new__(ImageFolder)
        folder.__dict__.update(self.__dict__)
        folder.preprocessing = spec
        folder._output = None
        return folder

    def _ready(self) -> "ImageFolder":
        """This folder, or a copy with the spec resolved from the images when no model resolved it.

        Without a model the channel order follows the images (``L`` if all are grayscale, else
        ``RGB``) and the layout is NCHW.
        """
        spec = self.preprocessing
        if spec.channel_order is not None and spec.layout is not None and self._output is not None:
            return self
        if spec.channel_order is None or spec.layout is None:
            modes = self._scan()[1]
            order = spec.channel_order or ("L" if all(m in GRAY_MODES for m in modes) else "RGB")
            if spec.channels == 3 and order == "L":
                order = "RGB"
            spec = replace(spec, channel_order=order, layout=spec.layout or "NCHW")
        folder = self._with(spec) if spec is not self.preprocessing else self
        folder._check_sizes()
        return folder

    def _scan(self) -> tuple[tuple[tuple[int, int], ...], tuple[str, ...]]:
        """``(H, W)`` and Pillow mode of every file, from the headers alone."""
        sizes, modes = [], []
        for path in self.files:
            with open_image(path, self.name) as im:
                sizes.append((im.height, im.width))
                modes.append(im.mode)
        self._sizes = tuple(sizes)
        return self._sizes, tuple(modes)

    def _check_sizes(self) -> None:
        """Every image's output size is the same (and large enough for the crop); sets ``_output``."""
        spec = self.preprocessing
        sizes = self._sizes if self._sizes is not None else self._scan()[0]
        outputs: dict[tuple[int, int], Path] = {}
        for path, (h, w) in zip(self.files, sizes, strict=True):
            rh, rw = spec.resized_size(h, w)
            if spec.crop is not None and (spec.crop[0] > rh or spec.crop[1] > rw):
                raise DataError(
                    f"{self.name}: image {str(path)!r} is {h}x{w}, {rh}x{rw} after the resize: smaller than the "
                    f"crop {spec.crop[0]}x{spec.crop[1]}. Add a resize to the spec (e.g. preset 'imagenet')."
                )
            outputs.setdefault(spec.crop or (rh, rw), path)
        if len(outputs) > 1:
            shown = ", ".join(f"{str(p)!r} {h}x{w}" for (h, w), p in list(outputs.items())[:3])
            raise DataError(
                f"{self.name}: images have different sizes after preprocessing ({shown}, ...; H x W); "
                "use a spec with a crop or an exact size, e.g. --preprocess imagenet."
            )
        self._output = next(iter(outputs))

    def _decode(self, index: int) -> np.ndarray:
        """Image ``index`` decoded and preprocessed."""
        path = self.files[index]
        pixels = decode_image(path, self.name)
        try:
            return preprocess_image(self.preprocessing, pixels)
        except HapiError as err:
            raise DataError(f"{self.name}: image {str(path)!r}: {err}") from None
