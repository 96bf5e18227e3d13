"""Image folders end to end: the same decisions as arrays, the spec carried into the bundle, clear refusals."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from data_images import rgb_cnn, write_photos

from hapi_onnx.bundle import write_bundle
from hapi_onnx.calibrate import calibrate
from hapi_onnx.choice import choices_from
from hapi_onnx.data import Dataset, mnist_splits, open_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.attach import attach_exits
from hapi_onnx.exits.input_record import InputRecord
from hapi_onnx.pipeline import BuildConfig, build
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.trace import Trace

PIL_Image = pytest.importorskip("PIL.Image")
DEMO = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.onnx"
SPEC = {"resize": 24, "crop": 20, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_npz_and_a_folder_of_8bit_pngs_give_the_same_trace(tmp_path):
    splits = mnist_splits(seed=0)
    ee = attach_exits(DEMO, splits["train"].subset(np.arange(600)), max_candidates=3).model
    calib = splits["calib"]
    order = np.concatenate([np.flatnonzero(calib.y == c)[:20] for c in range(10)])  # folder order: class, name
    x, y = calib.x[order], calib.y[order]
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = tmp_path / "calib" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        PIL_Image.fromarray(np.rint(image[0] * 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    Dataset(x, y, calib.classes).save(tmp_path / "calib.npz")

    from_arrays = calibrate(ee, tmp_path / "calib.npz")
    # Arrays with a declared spec: recorded resolved for the model (1 channel: L, NCHW), not applied.
    declared = attach_exits(DEMO, Dataset(x[::5], y[::5], calib.classes, "none"), max_candidates=1).model
    assert InputRecord.from_model(declared).preprocessing.channel_order == "L"
    bundle = write_bundle(declared, choices_from(["exit0"], [0.9]), tmp_path / "d.hapi")
    assert EarlyExitModel.load(bundle).manifest.preprocessing.layout == "NCHW"
    from_pngs = calibrate(ee, tmp_path / "calib")  # preset none: pixels / 255, gray for a 1-channel model
    np.testing.assert_array_equal(from_pngs.labels, from_arrays.labels)
    np.testing.assert_array_equal(from_pngs.pred, from_arrays.pred)
    np.testing.assert_allclose(from_pngs.conf, from_arrays.conf, atol=1e-5)  # x * (1/255) vs x / 255: an ulp


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    onnx.save(rgb_cnn(), root / "model.onnx")
    for split, n, seed in (("train", 20, 10), ("calib", 8, 11), ("test", 8, 12)):
        write_photos(root / "data" / split, per_class=n, seed=seed)
    return root


def test_folder_flow_records_the_spec_and_the_runtime_reproduces_it(photos, tmp_path, run_cli):
    data = photos / "data"
    result = run_cli("attach", photos / "model.onnx", "--data", data / "train", "--preprocess", json.dumps(SPEC),
                     "-o", tmp_path / "ee.onnx")
    assert result.exit_code == 0, result.output
    assert "preprocessing recorded for calibrate and bundle: resize 24, crop 20x20" in result.output
    record = InputRecord.from_model(onnx.load(tmp_path / "ee.onnx"))
    assert record.classes == ("cat", "dog", "owl") and record.preprocessing.layout == "NCHW"
    result = run_cli("calibrate", tmp_path / "ee.onnx", "--data", data / "calib", "-o", tmp_path / "trace.npz")
    assert result.exit_code == 0, result.output  # the recorded spec, not repeated

    bundle = write_bundle(tmp_path / "ee.onnx", choices_from(["exit1"], [0.6]), tmp_path / "m.hapi")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["preprocessing"]["crop"] == [20, 20] and manifest["labels"] == ["cat", "dog", "owl"]
    model = EarlyExitModel.load(bundle)
    folder = open_dataset(data / "test", SPEC).fit_to(model.manifest.input.shape)
    files = folder.files
    decoded = [np.asarray(PIL_Image.open(f).convert("RGB")) for f in files]  # as an app would decode them
    x = np.concatenate(list(folder.batches(5)))
    np.testing.assert_array_equal(model.preprocess(decoded), x)
    np.testing.assert_array_equal(model.predict(model.preprocess(decoded[:3])).classes, model.predict(x[:3]).classes)

    report = run_cli("evaluate", bundle, "--data", data / "test", "-o", tmp_path / "report.json")
    assert report.exit_code == 0, report.output
    assert "\r" not in report.output and "24 samples" in report.output
    ran = run_cli("run", bundle, data / "test" / "owl", "--json")
    rows = json.loads(ran.output)["predictions"]
    assert len(rows) == 8 and rows[0]["file"].endswith(".png") and rows[0]["label"] in ("cat", "dog", "owl")


def test_a_flat_folder_is_unlabelled_calibration_data(photos, tmp_path, run_cli):
    """The README: "calibrate takes unlabelled data (.npy, a folder of images)"; attach still needs labels."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, f in enumerate(sorted((photos / "data" / "calib").rglob("*.png"))):
        (flat / f"{i:03d}.png").write_bytes(f.read_bytes())
    ee, trace = tmp_path / "ee.onnx", tmp_path / "trace.npz"
    result = run_cli("attach", photos / "model.onnx", "--data", flat, "--preprocess", json.dumps(SPEC), "-o", ee)
    _assert_refused(result, ee, "has no labels; save it with np.savez(path, x=images, y=labels), or put the "
                                "images in one subfolder per class")
    result = run_cli("attach", photos / "model.onnx", "--data", photos / "data" / "train", "--preprocess",
                     json.dumps(SPEC), "-o", ee)
    assert result.exit_code == 0, result.output
    result = run_cli("calibrate", ee, "--data", flat, "-o", trace)
    assert result.exit_code == 0, result.output
    single = tmp_path / "single"
    single.mkdir()
    flat.rename(single / "all")  # one subfolder: one class, not unlabelled data
    result = run_cli("calibrate", ee, "--data", single, "-o", tmp_path / "t1.npz")
    _assert_refused(result, tmp_path / "t1.npz", "unlabelled images go in the folder itself, with no subfolder")
    (single / "all").rename(flat)
    unlabelled = Trace.load(trace)
    labelled = calibrate(ee, photos / "data" / "calib")
    assert unlabelled.labels is None and unlabelled.num_samples == 24
    np.testing.assert_array_equal(unlabelled.pred, labelled.pred)  # the same images, in the same order


def _assert_refused(result, output: Path, message: str):
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not output.exists() and not list(output.parent.glob(f".{output.name}.*"))


@pytest.mark.parametrize(("model", "spec", "message"), [
    ("rgb", '{"resize": 16, "crop": 20}', "crops [20, 20], larger than the resize 16"),
    ("rgb", '{"preset": "imagenet", "std": [0.2, 0, 0.2]}', "'std' must be > 0 for every channel"),
    ("rgb", "imagenet", "outputs 224x224 images but the model expects 20x20"),
    ("demo", '{"preset": "imagenet", "resize": 28, "crop": 28}', "gives 3 channel(s) (channel_order 'RGB'"),
])
def test_bad_specs_exit_2_with_nothing_written(photos, tmp_path, run_cli, model, spec, message):
    path = photos / "model.onnx" if model == "rgb" else DEMO
    out = tmp_path / "ee.onnx"
    result = run_cli("attach", path, "--data", photos / "data" / "train", "--preprocess", spec, "-o", out)
    _assert_refused(result, out, message)


def test_bad_folders_exit_2_with_nothing_written(photos, tmp_path, run_cli):
    model, out = photos / "model.onnx", tmp_path / "ee.onnx"
    corrupt = write_photos(tmp_path / "corrupt", per_class=2, seed=20)
    (corrupt / "dog" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = run_cli("attach", model, "--data", corrupt, "--preprocess", json.dumps(SPEC), "-o", out)
    _assert_refused(result, out, "bad.jpg' (cannot identify image file")

    empty = write_photos(tmp_path / "empty", per_class=2, seed=21)
    (empty / "eel").mkdir()
    result = run_cli("attach", model, "--data", empty, "--preprocess", json.dumps(SPEC), "-o", out)
    _assert_refused(result, out, "class folder 'eel' holds no images")

    ok = run_cli("attach", model, "--data", photos / "data" / "train", "--preprocess", json.dumps(SPEC), "-o", out)
    assert ok.exit_code == 0, ok.output
    renamed = write_photos(tmp_path / "other", per_class=3, seed=22, classes=("bird", "cat", "dog"))
    trace = tmp_path / "trace.npz"
    result = run_cli("calibrate", out, "--data", renamed, "-o", trace)
    _assert_refused(result, trace, "has classes ['bird', 'cat', 'dog'] but the heads' training data has "
                                   "['cat', 'dog', 'owl'] (missing ['owl']; not in the heads' training data: ['bird'])")
    other_spec = json.dumps({**SPEC, "resize": 30})
    result = run_cli("calibrate", out, "--data", photos / "data" / "calib", "--preprocess", other_spec, "-o", trace)
    _assert_refused(result, trace, "preprocessed differently from the heads' training data: resize 30 instead of 24")


def test_build_from_image_folders(photos, tmp_path):
    config = BuildConfig.from_options(dict(model=str(photos / "model.onnx"), data=str(photos / "data"), preprocess=SPEC,
                                           max_candidates=2, profile_budget_s=0.05, eval_batch_size=8,
                                           max_accuracy_drop=5.0))
    lines: list[str] = []
    result = build(config, tmp_path / "work", log=lines.append)
    model = EarlyExitModel.load(result.paths["bundle"])
    assert model.manifest.preprocessing.crop == (20, 20) and model.labels == ("cat", "dog", "owl")
    assert any(line.startswith("attach: heads 2/2") for line in lines)
    assert json.loads(result.paths["report"].read_text())["num_samples"] == 24


def test_build_refuses_splits_with_other_classes_before_any_step(photos, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "calib"):
        (data / split).symlink_to(photos / "data" / split)
    write_photos(data / "test", per_class=2, seed=30, classes=("cat", "dog", "own"))
    config = BuildConfig.from_options(dict(model=str(photos / "model.onnx"), data=str(data), preprocess=SPEC,
                                           max_accuracy_drop=5.0))
    with pytest.raises(HapiError, match=r"test split .* has classes \['cat', 'dog', 'own'\] but the training split"):
        build(config, tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before the work directory is created
