"""Data sources read in batches: array files, image folders, spilled features, progress lines."""

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from data_images import rgb_cnn, write_photos

from hapi_onnx.data import Dataset, open_dataset, shared_samples
from hapi_onnx.data.arrays import ArrayFile
from hapi_onnx.data.images import ImageFolder
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.features import FeatureSet, collect_features, run_batch_size
from hapi_onnx.graph import load_model

pytest.importorskip("PIL.Image")


def arrays(n=23, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 3, 5, 4), dtype=np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("kind", ["npz", "npz-compressed", "npy", "npy-fortran"])
def test_array_files_stream_the_same_samples(tmp_path, kind):
    x, y = arrays()
    path = tmp_path / ("d.npy" if kind.startswith("npy") else "d.npz")
    if kind == "npz":
        np.savez(path, x=x, y=y, classes=np.array(["a", "b", "c"]))
    elif kind == "npz-compressed":
        np.savez_compressed(path, x=x.astype(np.float64), y=y, classes=np.array(["a", "b", "c"]))
    else:
        np.save(path, np.asfortranarray(x) if kind == "npy-fortran" else x)
    data = open_dataset(path)
    assert isinstance(data, ArrayFile) and len(data) == 23 and data.image_shape == (3, 5, 4)
    batches = list(data.batches(5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3] and all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), x)
    np.testing.assert_array_equal(np.concatenate(list(data.batches(5))), x)  # a second pass reads it again
    if kind.startswith("npz"):
        np.testing.assert_array_equal(data.y, y)
        assert data.classes == ("a", "b", "c")
    assert list(data.digests()) == list(Dataset(x).digests())


def test_array_file_problems_found_while_streaming(tmp_path):
    x, y = arrays()
    x[17, 0, 0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", x=x, y=y)
    data = open_dataset(tmp_path / "inf.npz")  # opening reads the header and labels only
    with pytest.raises(HapiError, match="NaN or infinite values .* from index 17"):
        list(data.batches(5))
    np.save(tmp_path / "cut.npy", arrays()[0])
    raw = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(HapiError, match="x ends after 20 of 23 samples; the file is truncated"):
        list(open_dataset(tmp_path / "cut.npy").batches(10))


def test_image_folder_decodes_lazily_in_order_with_or_without_threads(tmp_path):
    root = write_photos(tmp_path / "photos", per_class=5, seed=1)
    (root / "dog" / "notes.txt").write_text("not an image, ignored")
    spec = {"resize": 24, "crop": 20}
    model_shape = ["N", 3, 20, 20]
    threaded = ImageFolder(root, open_dataset(root, spec).preprocessing, workers=2).fit_to(model_shape)
    plain = ImageFolder(root, open_dataset(root, spec).preprocessing, workers=0).fit_to(model_shape)
    assert threaded.classes == ("cat", "dog", "owl") and list(threaded.y) == [0] * 5 + [1] * 5 + [2] * 5
    assert threaded.image_shape == (3, 20, 20) and threaded.preprocessing.channel_order == "RGB"
    a, b = list(threaded.batches(4)), list(plain.batches(4))
    assert [len(t) for t in a] == [4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
    first = sorted((root / "cat").iterdir())[0]
    assert next(threaded.digests()) == hashlib.sha256(first.read_bytes()).digest()
    # A generator abandoned half-way stops its decoding threads.
    gen = threaded.batches(2)
    next(gen)
    gen.close()


def test_image_folder_problems_are_refused_before_any_work(tmp_path):
    root = write_photos(tmp_path / "photos", per_class=2, seed=2)
    (root / "bird").mkdir()
    with pytest.raises(HapiError, match="class folder 'bird' holds no images"):
        open_dataset(root)
    (root / "bird").rmdir()
    with pytest.raises(HapiError, match="different sizes after preprocessing"):
        open_dataset(root).fit_to(["N", 3, 20, 20])
    with pytest.raises(HapiError, match="smaller than the crop 36x36"):
        open_dataset(root, {"crop": 36}).fit_to(["N", 3, 36, 36])
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(HapiError, match=r"cannot read image '.*broken.png'"):
        open_dataset(root, {"resize": 24, "crop": 20}).fit_to(["N", 3, 20, 20])


def test_a_truncated_image_fails_while_streaming_with_its_name(tmp_path):
    root = write_photos(tmp_path / "photos", per_class=3, seed=3)
    victim = sorted((root / "dog").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:200])  # the header still parses
    data = open_dataset(root, {"resize": 24, "crop": 20}).fit_to(["N", 3, 20, 20])
    with pytest.raises(HapiError, match=f"cannot read image '.*{victim.name}'"):
        list(data.batches(2))


def test_shared_samples_streams_file_contents(tmp_path):
    a = write_photos(tmp_path / "a", per_class=2, seed=4)
    b = write_photos(tmp_path / "b", per_class=2, seed=5)
    assert shared_samples(open_dataset(a), open_dataset(b)) == 0
    for f in list((a / "owl").iterdir())[:1]:
        (b / "owl" / "copy.png").write_bytes(f.read_bytes())
    assert shared_samples(open_dataset(a), open_dataset(b)) == 1


def test_spilled_features_match_in_memory_ones(tmp_path):
    root = write_photos(tmp_path / "photos", per_class=4, seed=6)
    model = load_model(rgb_cnn())
    data = open_dataset(root, {"resize": 24, "crop": 20}).fit_to(["N", 3, 20, 20])
    cuts = [("r1", ["N", 8, 20, 20]), ("r3", ["N", 16, 10, 10])]
    memory = collect_features(model, data, cuts, "gap+2x2", batch_size=5)
    spilled = collect_features(model, data, cuts, "gap+2x2", batch_size=5, spill_bytes=0)
    assert not memory.spilled and spilled.spilled
    folder = Path(spilled._tmp.name)
    for k in range(2):
        np.testing.assert_allclose(spilled[k], memory[k], rtol=2e-3, atol=1e-4)  # float16 on disk
    spilled.close()
    assert not folder.exists()


def test_feature_set_keeps_values_beyond_float16_range():
    features = FeatureSet(6, [2], spill=True)
    features.append([np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)])
    big = np.array([[1e6, -3e7], [2.0, 1.0], [0.25, 4.0], [5.0, 6.0]], np.float32)
    features.append([big])  # 3e7 overflows float16 at the first batch's scale: the cut becomes float32
    np.testing.assert_allclose(features[0], np.concatenate([[[1.0, -2.0], [3.0, 0.5]], big]), rtol=1e-3)
    features.close()


def test_automatic_batch_size_bounds_the_input_bytes():
    model = load_model(rgb_cnn())
    assert run_batch_size(model, None, (3, 20, 20)) == 256
    assert run_batch_size(model, None, (3, 224, 224)) == 32
    assert run_batch_size(model, 7, (3, 224, 224)) == 7


def test_progress_off_a_terminal_is_whole_lines_and_timed_from_the_start_mark(capsys):
    from hapi_onnx_cli import console

    console.set_mode("verbose")
    try:
        progress = console.progress("heads")
        time.sleep(0.3)  # e.g. the feature pass before the heads: not part of their ETA
        progress(0, 4)
        for done in (1, 2, 3, 4):
            progress(done, 4)
    finally:
        console.set_mode("auto")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 4
    assert lines[0].startswith("heads: 1/4 (25%, 0 s, eta 0 s)")
    assert lines[-1].startswith("heads: 4/4 (100%")
