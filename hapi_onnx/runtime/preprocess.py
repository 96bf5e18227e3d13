"""How decoded pixels become the model's input: a small, versioned spec and its one numpy transform.

The spec is data, not code: it is validated once, stored in the bundle manifest, and applied by
:func:`preprocess_images`, the same function at build time (image folders in ``attach``,
``calibrate``, ``evaluate``) and in an app (:meth:`EarlyExitModel.preprocess`). The steps, in
order, for each decoded image (``H x W`` or ``H x W x C`` pixels, RGB as Pillow decodes them):

1. channels: drop an alpha channel; convert to the spec's ``channel_order`` (``L`` with
   Pillow's ITU-R 601-2 luma, ``RGB``, or ``BGR``);
2. resize: the shorter side to ``resize`` (the longer one scaled and truncated, as
   torchvision's ``Resize(int)``), or to exactly ``size``; with Pillow, antialiased, only when
   the image is not already that size (so a pre-resized image needs numpy alone);
3. center crop to ``crop`` (offsets rounded as torchvision's ``CenterCrop``);
4. ``(pixels * scale - mean) / std`` per channel, in float32;
5. layout ``NCHW`` or ``NHWC``.

Presets: ``none`` (pixels / 255, no resize or crop), ``imagenet`` (resize 256, crop 224,
ImageNet mean/std, RGB) and ``inception`` (resize 342, crop 299, mean = std = 0.5, RGB). A spec
may leave ``channel_order`` and ``layout`` unset (``None``): :meth:`Preprocessing.for_input`
takes them from the model's input (1 channel: ``L``, 3: ``RGB``; NCHW unless the input is
channels-last), and what is stored in a bundle is always that resolved spec.

Imports numpy and the standard library only; Pillow is imported when an image must be resized.
"""

import importlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from hapi_onnx.checks import finite_number
from hapi_onnx.errors import HapiError

SPEC_VERSION = 1
CHANNEL_ORDERS = ("RGB", "BGR", "L")
LAYOUTS = ("NCHW", "NHWC")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
DTYPES = ("float32",)
MAX_SIDE = 8192
"""The largest ``resize``, ``size`` or ``crop`` side a spec may ask for (CNN inputs are far smaller)."""
MAX_IMAGE_PIXELS = 89_478_485
"""The most pixels an image may have (Pillow's decompression-bomb limit): larger ones are refused."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_UNRESOLVED = "This preprocessing spec has no channel order/layout yet; resolve it with for_input(shape)."


@dataclass(frozen=True)
class Preprocessing:
    """Resize, crop, scale, normalise, order and lay out decoded pixels for the model.

    Attributes:
        resize (int | None): Resize the shorter side to this (aspect kept). None: no resize
            (unless ``size``).
        size (tuple[int, int] | None): Resize to exactly ``(H, W)`` instead. At most one of
            ``resize`` and ``size``.
        crop (tuple[int, int] | None): Center crop ``(H, W)`` after the resize; None: no crop.
        interpolation (str): Resampling of the resize: ``nearest``, ``bilinear`` or ``bicubic``.
        scale (float): Pixels are multiplied by this first (1/255 maps 8-bit to [0, 1]).
        mean (tuple[float, ...]): Subtracted after scaling: one value, or one per channel.
        std (tuple[float, ...]): Then divided by: one value, or one per channel; all > 0.
        channel_order (str | None): ``RGB``, ``BGR`` or ``L`` (grayscale); None: from the model.
        layout (str | None): ``NCHW`` or ``NHWC``; None: from the model.
        dtype (str): The model input's element type; ``float32``.
    """

    resize: int | None = None
    size: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_order: str | None = None
    layout: str | None = None
    dtype: str = "float32"

    def __post_init__(self):
        def _set(name: str, value: Any) -> None:  # frozen: normalise the fields in place, once
            object.__setattr__(self, name, value)

        _set("resize", _positive_int(self.resize, "resize", optional=True))
        _set("size", _pair(self.size, "size"))
        _set("crop", _pair(self.crop, "crop"))
        if self.resize is not None and self.size is not None:
            raise _bad(f"gives both 'resize' ({self.resize}) and 'size' ({list(self.size)})",
                       "keep one: resize the shorter side, or resize to an exact size")
        _choice(self.interpolation, "interpolation", INTERPOLATIONS)
        _choice(self.channel_order, "channel_order", CHANNEL_ORDERS, optional=True)
        _choice(self.layout, "layout", LAYOUTS, optional=True)
        _choice(self.dtype, "dtype", DTYPES)
        if not finite_number(self.scale) or not self.scale > 0:
            raise _bad(f"'scale' must be a finite number > 0. Got {self.scale!r} instead",
                       "use 1/255 for 8-bit pixels")
        _set("scale", float(self.scale))
        _set("mean", _floats(self.mean, "mean"))
        _set("std", _floats(self.std, "std"))
        if any(s <= 0 for s in self.std):
            raise _bad(f"'std' must be > 0 for every channel. Got {list(self.std)!r} instead",
                       "a std of 0 would divide by zero; use 1 to leave a channel unscaled")
        wanted = {None: (1, 3), "L": (1,), "RGB": (1, 3), "BGR": (1, 3)}[self.channel_order]
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in wanted:
                raise _bad(
                    f"'{name}' has {len(getattr(self, name))} values; expected "
                    + " or ".join(map(str, wanted)) + f" for channel_order {self.channel_order!r}. "
                    f"Got {list(getattr(self, name))!r} instead",
                    "give one value, or one per channel",
                )
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise _bad(f"'mean' and 'std' have different lengths ({len(self.mean)}, {len(self.std)})",
                       "give both per channel")
        if self.crop is not None:
            limit = (self.resize, self.resize) if self.resize is not None else self.size
            if limit is not None and (self.crop[0] > limit[0] or self.crop[1] > limit[1]):
                what = f"resize {self.resize}" if self.resize is not None else f"size {list(self.size)}"
                raise _bad(
                    f"crops {list(self.crop)}, larger than the {what} it crops from",
                    "use a crop no larger than the resize (e.g. resize 256, crop 224)",
                )

    # -- presets and (de)serialisation ---------------------------------------------------------

    @classmethod
    def preset(cls, name: str) -> "Preprocessing":
        """The named preset: ``none``, ``imagenet`` or ``inception``.

        Raises:
            HapiError: for an unknown name.
        """
        if name not in PRESETS:
            raise HapiError(
                f"Unknown preprocessing preset {name!r}; expected one of {', '.join(PRESETS)}, "
                "or a JSON object with the spec's fields."
            )
        return PRESETS[name]

    @classmethod
    def from_value(cls, value: "Preprocessing | str | dict[str, Any] | None") -> "Preprocessing | None":
        """A spec from a preset name, a dict (:meth:`from_dict`), a spec, or None (None)."""
        if value is None or isinstance(value, Preprocessing):
            return value
        if isinstance(value, str):
            return cls.preset(value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise HapiError(
            f"preprocessing must be a preset name ({', '.join(PRESETS)}), a dict or a Preprocessing. "
            f"Got {type(value).__name__} instead."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with ``version``."""
        data: dict[str, Any] = {"version": SPEC_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "Preprocessing":
        """Validate a decoded spec; ``{"preset": NAME, ...}`` starts from a preset and overrides it.

        Raises:
            HapiError: for a non-object, an unknown field or version, or an invalid value.
        """
        if not isinstance(data, dict):
            raise HapiError(f"A preprocessing spec must be a JSON object. Got {data!r} instead.")
        data = dict(data)
        version = data.pop("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise HapiError(
                f"Preprocessing spec version {version!r} is not supported; this hapi-onnx reads version "
                f"{SPEC_VERSION}. Rebuild with this version."
            )
        base = cls.preset(data.pop("preset")) if "preset" in data else cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HapiError(
                f"Preprocessing spec has unknown fields {unknown}; known: {sorted(known | {'preset', 'version'})}."
            )
        for key in ("mean", "std", "size", "crop"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return replace(base, **data)

    # -- against a model -----------------------------------------------------------------------

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of every output image, or None when it is each image's own size."""
        return self.crop or self.size

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` an image of this size has after the resize step."""
        if self.size is not None:
            return self.size
        if self.resize is None:
            return height, width
        if height <= width:
            return self.resize, int(self.resize * width / height)
        return int(self.resize * height / width), self.resize

    def for_input(self, shape: Sequence[Any], what: str = "the model") -> "Preprocessing":
        """This spec with channel order and layout taken from ``shape``, checked against it.

        Args:
            shape (Sequence): The model input's ``[N, C, H, W]`` or ``[N, H, W, C]``; dimensions
                that are not positive ints (batch, symbolic) are not checked.
            what (str): Names the model in messages. Defaults to "the model".

        Returns:
            Preprocessing: A spec with ``channel_order`` and ``layout`` set.

        Raises:
            HapiError: when the input is not 4-D, its channel count is not 1 or 3 or disagrees with
                the spec (channel order, mean/std), or its static H x W is not the spec's output.
        """
        dims = [d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None for d in shape]
        if len(dims) != 4:
            raise HapiError(f"{what}'s input must be 4-D (NCHW or NHWC) to take images. Got {list(shape)} instead.")
        layout = self.layout
        if layout is None:
            layout = "NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW"
        channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
        spec_channels = self.channels
        if channels is None:
            channels = spec_channels
        if channels not in (1, 3) or (spec_channels is not None and spec_channels != channels):
            raise HapiError(
                f"The preprocessing gives {spec_channels or '1 or 3'} channel(s) (channel_order "
                f"{self.channel_order!r}, {max(len(self.mean), len(self.std))} mean/std value(s)) but {what} "
                f"expects {channels or '?'} ({layout} input {list(shape)}). "
                + ("Use channel_order 'L' with one mean/std value" if channels == 1 else
                   "Use channel_order 'RGB' or 'BGR'" if channels == 3 else "Only 1- or 3-channel inputs take images")
                + " (preset 'none' follows the model)."
            )
        order = self.channel_order or ("L" if channels == 1 else "RGB")
        out = self.output_size
        if out is not None and ((height is not None and out[0] != height) or (width is not None and out[1] != width)):
            raise HapiError(
                f"The preprocessing outputs {out[0]}x{out[1]} images but {what} expects "
                f"{height or '?'}x{width or '?'} ({layout} input {list(shape)}). Use a spec whose crop (or size) is "
                "the model's input size, e.g. preset 'imagenet' for 224x224 or 'inception' for 299x299."
            )
        return replace(self, channel_order=order, layout=layout)

    @property
    def channels(self) -> int | None:
        """Channels of the output: from the channel order, else from per-channel mean/std, else None."""
        if self.channel_order is not None:
            return 1 if self.channel_order == "L" else 3
        if max(len(self.mean), len(self.std)) == 3:
            return 3
        return None

    def sample_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape of one output image for an ``(H, W)`` output size, in this spec's layout.

        Raises:
            HapiError: when channel order or layout is not resolved yet (see :meth:`for_input`).
        """
        if self.channel_order is None or self.layout is None:
            raise HapiError(_UNRESOLVED)
        c = self.channels
        return (c, height, width) if self.layout == "NCHW" else (height, width, c)


def preprocess_images(spec: Preprocessing, images: Any) -> np.ndarray:
    """Apply ``spec`` to decoded images: the model's float32 input batch.

    Args:
        spec (Preprocessing): A resolved spec (channel order and layout set).
        images: One image (``H x W`` or ``H x W x C`` array, C in 1, 3, 4; RGB(A) order), a
            4-D ``N x H x W x C`` array, or a sequence of images. 8-bit (uint8) pixels are the
            usual input; 16-bit (uint16) pixels are first brought to the 8-bit range
            (x 255/65535), so both bit depths give the same input; any other real dtype is taken
            as it is. Then pixels are multiplied by ``spec.scale``.

    Returns:
        np.ndarray: float32 ``[N, C, H, W]`` (NCHW) or ``[N, H, W, C]`` (NHWC).

    Raises:
        HapiError: for a malformed image, NaN or infinite pixels, an image smaller than the crop or
            over :data:`MAX_IMAGE_PIXELS`, images whose outputs differ in size (no resize/crop in
            the spec), or a resize without Pillow installed.
    """
    if not isinstance(images, (np.ndarray, list, tuple)):
        raise HapiError(
            "preprocess expects one image (H x W or H x W x C numpy array), a batch N x H x W x C, or a list of "
            f"images. Got {type(images).__name__} instead."
        )
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
        images = [images]
    elif isinstance(images, np.ndarray) and images.ndim != 4:
        raise HapiError(
            f"preprocess expects one image (H x W or H x W x C), a batch N x H x W x C, or a list of images. "
            f"Got an array of shape {images.shape} instead."
        )
    outs = [preprocess_image(spec, image) for image in images]
    if not outs:
        raise HapiError("preprocess got no images; pass at least one.")
    shapes = {o.shape for o in outs}
    if len(shapes) > 1:
        raise HapiError(
            f"The images have different sizes after preprocessing ({sorted(shapes)[:3]}); the spec has no "
            "resize and crop to make them equal. Use a spec with a crop (or size), e.g. preset 'imagenet'."
        )
    return np.stack(outs)


def preprocess_image(spec: Preprocessing, image: Any) -> np.ndarray:
    """:func:`preprocess_images` for one decoded image: float32 ``[C, H, W]`` or ``[H, W, C]``."""
    if spec.channel_order is None or spec.layout is None:
        raise HapiError(_UNRESOLVED)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or min(pixels.shape[:2]) < 1:
        raise HapiError(
            f"An image must be an H x W or H x W x C array with C in 1, 3, 4 (RGB order). Got shape {pixels.shape} "
            "instead."
        )
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise HapiError(f"Image pixels must be numbers. Got dtype {pixels.dtype} instead.")
    if pixels.shape[0] * pixels.shape[1] > MAX_IMAGE_PIXELS:
        raise HapiError(
            f"An image of {pixels.shape[0]}x{pixels.shape[1]} pixels is larger than the {MAX_IMAGE_PIXELS} pixels "
            "preprocessing takes; downscale it first."
        )
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise HapiError("An image holds NaN or infinite pixel values; decoded images hold finite numbers.")
    if pixels.dtype == np.uint16:  # 16-bit images (PNG, TIFF): to the 8-bit range that `scale` is for
        pixels = pixels.astype(np.float32) * np.float32(255 / 65535)
    pixels = _convert_channels(pixels[:, :, :3] if pixels.shape[2] == 4 else pixels, spec.channel_order)
    height, width = spec.resized_size(*pixels.shape[:2])
    if (height, width) != pixels.shape[:2]:
        pixels = _resize(pixels, height, width, spec.interpolation)
    if spec.crop is not None:
        ch, cw = spec.crop
        if ch > height or cw > width:
            raise HapiError(
                f"An image of {height}x{width} (after the resize) is smaller than the crop {ch}x{cw}. "
                "Add a resize to the spec (e.g. resize 256 for crop 224)."
            )
        top, left = int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0))
        pixels = pixels[top : top + ch, left : left + cw]
    x = pixels.astype(np.float32)  # a new array: scaled and normalised in place, no temporaries
    x *= np.float32(spec.scale)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1) if spec.layout == "NCHW" else x)


def _convert_channels(pixels: np.ndarray, order: str) -> np.ndarray:
    """``H x W x C`` (C = 1 or 3, RGB) pixels in ``order``."""
    if order == "L":
        if pixels.shape[2] == 1:
            return pixels
        if pixels.dtype == np.uint8:  # Pillow's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
            wide = pixels.astype(np.uint32)
            luma = (wide[:, :, 0] * 19595 + wide[:, :, 1] * 38470 + wide[:, :, 2] * 7471 + 0x8000) >> 16
            return luma.astype(np.uint8)[:, :, None]
        return (pixels[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels[:, :, ::-1] if order == "BGR" else pixels


def _resize(pixels: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """Pillow's antialiased resize of ``H x W x C`` pixels (uint8 as L/RGB images, other dtypes per channel)."""
    try:
        image_mod = importlib.import_module("PIL.Image")
    except ImportError:
        raise HapiError(
            f"Resizing a {pixels.shape[0]}x{pixels.shape[1]} image to {height}x{width} needs Pillow: "
            "pip install pillow, or pass images already of that size."
        ) from None
    resample = {"nearest": image_mod.Resampling.NEAREST, "bilinear": image_mod.Resampling.BILINEAR,
                "bicubic": image_mod.Resampling.BICUBIC}[interpolation]
    if pixels.dtype == np.uint8:
        image = image_mod.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels))
        out = np.asarray(image.resize((width, height), resample))
        return out[:, :, None] if out.ndim == 2 else out
    planes = [np.asarray(image_mod.fromarray(np.ascontiguousarray(pixels[:, :, c], dtype=np.float32), "F")
                         .resize((width, height), resample)) for c in range(pixels.shape[2])]
    return np.stack(planes, axis=2)


def _bad(problem: str, fix: str) -> HapiError:
    return HapiError(f"The preprocessing spec {problem}; {fix}.")


def _positive_int(value: Any, name: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_SIDE:
        raise _bad(f"field {name!r} must be a positive integer up to {MAX_SIDE}. Got {value!r} instead",
                   f"fix {name!r}")
    return int(value)


def _pair(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _bad(f"field {name!r} must be [H, W] (or one int for a square). Got {value!r} instead",
                   f"fix {name!r}")
    return (_positive_int(value[0], name), _positive_int(value[1], name))


def _floats(value: Any, name: str) -> tuple[float, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(finite_number(v) for v in values):
        raise _bad(f"field {name!r} must be finite numbers. Got {value!r} instead", f"fix {name!r}")
    return tuple(float(v) for v in values)


def _choice(value: Any, name: str, allowed: tuple, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in allowed:
        raise _bad(f"field {name!r} must be one of {', '.join(allowed)}. Got {value!r} instead", f"fix {name!r}")


PRESETS = {
    "none": Preprocessing(),
    "imagenet": Preprocessing(resize=256, crop=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="RGB"),
    "inception": Preprocessing(resize=342, crop=(299, 299), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                               channel_order="RGB"),
}
"""The named presets (see the module docstring)."""
