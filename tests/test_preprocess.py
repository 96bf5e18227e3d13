"""The preprocessing spec: presets against hand-written numpy references, validation, parsing."""

import importlib
import json

import numpy as np
import pytest

from hapi_onnx.data import read_preprocessing
from hapi_onnx.errors import HapiError
from hapi_onnx.runtime.preprocess import PRESETS, Preprocessing, preprocess_images

PIL_Image = pytest.importorskip("PIL.Image")


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_imagenet_preset_equals_a_hand_written_reference():
    image = photo(300, 451)  # H x W: the shorter side (300) goes to 256, the longer to int(256 * 451 / 300)
    spec = Preprocessing.preset("imagenet").for_input([None, 3, 224, 224])
    got = preprocess_images(spec, image)

    w = int(256 * 451 / 300)  # 384, as torchvision's Resize(256) truncates
    resized = np.asarray(PIL_Image.fromarray(image).resize((w, 256), PIL_Image.Resampling.BILINEAR))
    top, left = int(round((256 - 224) / 2)), int(round((w - 224) / 2))
    crop = resized[top : top + 224, left : left + 224].astype(np.float32) / np.float32(255)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    want = ((crop - mean) / std).transpose(2, 0, 1)[None]
    assert got.shape == (1, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_inception_preset_and_other_orders_and_layouts():
    image = photo(400, 342, seed=1)  # portrait: W is the shorter side
    spec = Preprocessing.preset("inception")
    assert (spec.resize, spec.crop, spec.mean, spec.std) == (342, (299, 299), (0.5,) * 3, (0.5,) * 3)
    nchw = preprocess_images(spec.for_input(["N", 3, 299, 299]), image)
    resized = np.asarray(PIL_Image.fromarray(image).resize((342, int(342 * 400 / 342)), PIL_Image.Resampling.BILINEAR))
    top, left = int(round((400 - 299) / 2)), int(round((342 - 299) / 2))
    want = (resized[top : top + 299, left : left + 299].astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(nchw[0], want.transpose(2, 0, 1), atol=1e-6)

    nhwc = preprocess_images(spec.for_input(["N", 299, 299, 3]), image)  # the layout follows the model
    np.testing.assert_array_equal(nhwc[0], nchw[0].transpose(1, 2, 0))
    bgr = preprocess_images(Preprocessing.from_dict({"preset": "inception", "channel_order": "BGR"})
                            .for_input(["N", 3, 299, 299]), image)
    np.testing.assert_array_equal(bgr[0], nchw[0][::-1])


def test_none_preset_follows_the_model_and_gray_matches_pillow():
    rgb = photo(28, 28, seed=2)
    gray = preprocess_images(Preprocessing.preset("none").for_input([1, 1, 28, 28]), rgb)
    luma = np.asarray(PIL_Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(np.rint(gray[0, 0] * 255), luma)  # Pillow's own luma, to the bit
    np.testing.assert_allclose(gray[0, 0], luma / np.float32(255), atol=1e-7)  # x * (1/255) vs x / 255: 1 ulp
    color = preprocess_images(Preprocessing.preset("none").for_input([1, 3, 28, 28]), [rgb, rgb])
    np.testing.assert_allclose(color, np.stack([rgb.transpose(2, 0, 1)] * 2) / np.float32(255), atol=1e-7)
    # A grayscale image for an RGB model is repeated over the channels; RGBA drops alpha.
    one = preprocess_images(Preprocessing.preset("none").for_input([1, 3, 28, 28]), rgb[:, :, 0])
    np.testing.assert_allclose(one[0], np.repeat(rgb[None, :, :, 0], 3, axis=0) / np.float32(255), atol=1e-7)
    rgba = np.concatenate([rgb, np.full((28, 28, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(preprocess_images(Preprocessing.preset("none").for_input([1, 3, 28, 28]), rgba),
                                  color[:1])


def test_pre_resized_images_need_numpy_only(monkeypatch):
    spec = Preprocessing.preset("imagenet").for_input([None, 3, 224, 224])
    real = importlib.import_module

    def no_pillow(name, *args):
        if name.startswith("PIL"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_pillow)
    assert preprocess_images(spec, photo(256, 300)).shape == (1, 3, 224, 224)  # already resized: no Pillow
    with pytest.raises(HapiError, match="needs Pillow: pip install pillow, or pass images already of that size"):
        preprocess_images(spec, photo(300, 300))


def test_spec_round_trips_and_presets_take_overrides():
    for name, spec in PRESETS.items():
        assert Preprocessing.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec, name
    spec = Preprocessing.from_dict({"preset": "imagenet", "resize": 288, "crop": 256})
    assert (spec.resize, spec.crop, spec.mean) == (288, (256, 256), PRESETS["imagenet"].mean)
    assert spec.for_input(["N", 3, 256, 256]).layout == "NCHW"


@pytest.mark.parametrize(("spec", "message"), [
    ({"resize": 200, "crop": 224}, r"crops \[224, 224\], larger than the resize 200"),
    ({"size": [100, 120], "crop": [101, 50]}, r"larger than the size \[100, 120\]"),
    ({"preset": "imagenet", "std": [0.2, 0.0, 0.2]}, r"'std' must be > 0 for every channel. Got \[0.2, 0.0, 0.2\]"),
    ({"std": 0}, "'std' must be > 0"),
    ({"preset": "imagenet", "channel_order": "L"}, "'mean' has 3 values; expected 1 for channel_order 'L'"),
    ({"mean": [0.1, 0.2]}, "'mean' has 2 values"),
    ({"scale": 0}, "'scale' must be a finite number > 0"),
    ({"resize": 0}, "'resize' must be a positive integer"),
    ({"resize": 256, "size": 224}, "both 'resize'"),
    ({"layout": "CHW"}, "'layout' must be one of NCHW, NHWC"),
    ({"dtype": "float16"}, "'dtype' must be one of float32"),
    ({"rezise": 256}, r"unknown fields \['rezise'\]"),
    ({"version": 2}, "version 2 is not supported"),
    ({"preset": "resnet"}, "Unknown preprocessing preset 'resnet'"),
])
def test_bad_specs_are_refused_with_the_fix(spec, message):
    with pytest.raises(HapiError, match=message):
        Preprocessing.from_dict(spec)


def test_spec_against_the_model_input():
    imagenet = Preprocessing.preset("imagenet")
    with pytest.raises(HapiError, match=r"gives 3 channel\(s\) .* but the model expects 1"):
        imagenet.for_input([None, 1, 224, 224])
    with pytest.raises(HapiError, match="outputs 224x224 images but the model expects 299x299"):
        imagenet.for_input([None, 3, 299, 299])
    with pytest.raises(HapiError, match="expects 4"):
        imagenet.for_input([None, 4, 224, 224])
    with pytest.raises(HapiError, match="must be 4-D"):
        imagenet.for_input([None, 3, 224])
    assert imagenet.for_input(["N", "C", "H", "W"]).channel_order == "RGB"  # symbolic dims are not checked


def test_images_smaller_than_the_crop_or_of_mixed_sizes_are_refused():
    with pytest.raises(HapiError, match="smaller than the crop 20x20"):
        preprocess_images(Preprocessing(crop=20).for_input([1, 3, 20, 20]), photo(19, 40))
    with pytest.raises(HapiError, match="different sizes after preprocessing"):
        preprocess_images(Preprocessing().for_input([1, 3, 20, 20]), [photo(20, 20), photo(21, 20)])
    with pytest.raises(HapiError, match="H x W x C array with C in 1, 3, 4"):
        preprocess_images(Preprocessing().for_input([1, 3, 20, 20]), np.zeros((20, 20, 2), np.uint8))


def test_read_preprocessing_from_a_preset_json_or_file(tmp_path):
    assert read_preprocessing("imagenet") == PRESETS["imagenet"]
    assert read_preprocessing('{"preset": "none", "scale": 1}').scale == 1.0
    (tmp_path / "spec.json").write_text(json.dumps({"resize": 40, "crop": 32}))
    assert read_preprocessing(str(tmp_path / "spec.json")).crop == (32, 32)
    with pytest.raises(HapiError, match="not valid JSON"):
        read_preprocessing("{oops")
    with pytest.raises(HapiError, match="does not exist"):
        read_preprocessing(str(tmp_path / "missing.json"))
