"""Bad inputs a careless or hostile user can give, written once per test module (no tests here).

:func:`make_inputs` writes into one folder the good artifacts of a tiny early-exit flow (the
5-class residual CNN of :mod:`test_bundle_models`, its datasets, a real trace, a latency table
with its fingerprint, a design, a directory and a zip bundle) and, next to them, one broken
variant per way of breaking them: datasets, models, traces, latency tables, designs, bundle
manifests, tampered bundle folders and zips, device presets and build configs. The matrix in
``test_bad_inputs.py`` feeds them to every command; ``test_fuzz_artifacts.py`` mutates the good
ones further.
"""

import json
import shutil
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from test_bundle_models import NUM_CLASSES, make_ee_model, sample_images

from hapi_onnx.bundle import bundle_from_design
from hapi_onnx.calibrate import calibrate
from hapi_onnx.data import Dataset, load_dataset
from hapi_onnx.evaluate import full_model_bytes
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.search import Constraints, search
from hapi_onnx.search.synthetic import synthetic_table

DEEP = "[" * 100_000 + "]" * 100_000  # over Python's recursion limit when decoded naively
HUGE = "9" * 5_000  # over Python's 4,300-digit int conversion limit


def make_inputs(root: Path) -> Path:
    """Write every good and broken input into ``root`` (about a second) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    make_good(root)
    _datasets(root)
    _models(root)
    _traces(root)
    _latency_tables(root)
    _designs(root)
    _bundles(root)
    _zips(root)
    _presets_and_configs(root)
    return root


def make_good(root: Path) -> Path:
    """The good artifacts alone: models, datasets, trace, latency table, design, bundles."""
    root.mkdir(parents=True, exist_ok=True)
    ee = make_ee_model()
    onnx.save(ee, root / "ee.onnx")
    (root / "model.onnx").write_bytes(full_model_bytes(ee))
    onnx.save(make_ee_model(seed=1), root / "other_ee.onnx")
    rng = np.random.default_rng(0)
    for name, n in (("train", 200), ("calib", 300), ("test", 60)):
        Dataset(sample_images(n, seed=n), rng.integers(0, NUM_CLASSES, n)).save(root / f"{name}.npz")
    trace = calibrate(root / "ee.onnx", load_dataset(root / "calib.npz"))
    trace.save(root / "trace.npz")
    synthetic_table(3, model_fingerprint=trace.model_fingerprint).save(root / "latency.json")
    design = search(trace, LatencyTable.load(root / "latency.json"), Constraints(latency_sla_ms=1.5))
    design.save(root / "design.json")
    # With an accuracy constraint too: certified on a held-out half, a guarantee recorded.
    search(trace, LatencyTable.load(root / "latency.json"),
           Constraints(latency_sla_ms=1.5, min_accuracy=0.1)).save(root / "design_certified.json")
    bundle_from_design(root / "ee.onnx", design, root / "model.hapi")
    bundle_from_design(root / "ee.onnx", design, root / "model.hapi.zip")
    np.save(root / "images.npy", sample_images(4))
    # A folder holding the three splits, for `build --data`.
    (root / "splits").mkdir()
    for name in ("train", "calib", "test"):
        shutil.copy(root / f"{name}.npz", root / "splits" / f"{name}.npz")
    return root


def _save_npz(path: Path, compressed: bool = True, **arrays) -> None:
    with open(path, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def _datasets(root: Path) -> None:
    x = sample_images(40)
    y = np.arange(40) % NUM_CLASSES
    bad = x.copy()
    bad[3, 0, 2, 2] = np.nan
    _save_npz(root / "nan.npz", x=bad, y=y)
    bad = x.copy()
    bad[5, 0, 1, 1] = np.inf
    _save_npz(root / "inf.npz", x=bad, y=y)
    np.save(root / "nan.npy", bad)
    _save_npz(root / "neg_labels.npz", x=x, y=y - 1)
    _save_npz(root / "float_labels.npz", x=x, y=y + 0.5)
    _save_npz(root / "labels_2d.npz", x=x, y=np.eye(NUM_CLASSES)[y])
    _save_npz(root / "labels_beyond.npz", x=x, y=np.arange(40) % 10)  # the model has 5 classes
    _save_npz(root / "labels_short.npz", x=x, y=y[:-3])
    _save_npz(root / "x_3d.npz", x=x[:, 0], y=y)
    _save_npz(root / "x_uint8.npz", x=(x * 255).astype(np.uint8), y=y)
    _save_npz(root / "x_channels_last.npz", x=x.transpose(0, 2, 3, 1), y=y)
    _save_npz(root / "x_28.npz", x=np.zeros((8, 1, 28, 28), np.float32), y=np.zeros(8, np.int64))
    _save_npz(root / "x_rgb.npz", x=np.repeat(x, 3, axis=1), y=y)
    _save_npz(root / "x_empty.npz", x=x[:0], y=y[:0])
    _save_npz(root / "no_x.npz", images=x, labels=y)
    _save_npz(root / "unlabelled.npz", x=x)
    np.save(root / "unlabelled.npy", x)
    np.save(root / "x_3d.npy", x[:, 0])
    np.save(root / "x_float64.npy", x.astype(np.float64) * 1)  # loaded as float32: fine for run
    _save_npz(root / "pickled.npz", x=np.array([{"a": 1}], dtype=object), y=y[:1])
    good = (root / "test.npz").read_bytes()
    # A byte flipped inside the compressed 'x' member: the zip directory is intact, the member is not.
    (root / "corrupt_member.npz").write_bytes(_flip(good, len(good) // 3))
    (root / "truncated.npz").write_bytes(good[: len(good) // 2])
    (root / "text.npz").write_text("x,y\n1,2\n")
    (root / "empty.npz").write_bytes(b"")
    _save_npz(root / "bad_header.npz", compressed=False, x=x, y=y)
    raw = bytearray((root / "bad_header.npz").read_bytes())
    at = raw.index(b"{'descr'")
    raw[at : at + 8] = b"{'dexxr'"
    (root / "bad_header.npz").write_bytes(bytes(raw))
    (root / "bad.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"garbage" * 10)
    (root / "data.txt").write_text("1,2,3\n")
    (root / "empty_folder").mkdir()
    (root / "overlap").mkdir()  # test.npz is the calibration set: splits that leak
    for name, src in (("train", "train"), ("calib", "calib"), ("test", "calib")):
        shutil.copy(root / f"{src}.npz", root / "overlap" / f"{name}.npz")
    (root / "nan_splits").mkdir()
    for name, src in (("train", "nan"), ("calib", "calib"), ("test", "test")):
        shutil.copy(root / f"{src}.npz", root / "nan_splits" / f"{name}.npz")
    (root / "missing_split").mkdir()
    shutil.copy(root / "train.npz", root / "missing_split" / "train.npz")


def _models(root: Path) -> None:
    good = (root / "model.onnx").read_bytes()
    (root / "garbage.onnx").write_bytes(b"this is not an onnx model\n" * 4)
    (root / "empty.onnx").write_bytes(b"")
    (root / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (root / "model.txt").write_bytes(good)
    (root / "weights.pt").write_bytes(b"not a checkpoint")
    mlp = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
    )
    onnx.save(helper.make_model(mlp, opset_imports=[helper.make_opsetid("", 17)]), root / "rank2.onnx")
    broken = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 12, 12])],
    )
    onnx.save(helper.make_model(broken, opset_imports=[helper.make_opsetid("", 17)]), root / "invalid.onnx")
    ints = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "ints",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 1, 12, 12])],
    )
    onnx.save(helper.make_model(ints, opset_imports=[helper.make_opsetid("", 17)]), root / "int_input.onnx")
    (root / "factory.py").write_text("def build():\n    raise RuntimeError('no torch model here')\n")


def _trace_variant(root: Path, name: str, meta=None, meta_text: str | None = None, drop=(), **arrays) -> None:
    with np.load(root / "trace.npz") as npz:
        data = {key: npz[key] for key in npz.files}
    parsed = json.loads(str(data["meta"]))
    if meta is not None:
        meta(parsed)
    data["meta"] = np.array(meta_text if meta_text is not None else json.dumps(parsed))
    data.update(arrays)
    for key in drop:
        data.pop(key)
    _save_npz(root / name, **data)


def _traces(root: Path) -> None:
    with np.load(root / "trace.npz") as npz:
        pred, conf, labels = npz["pred"], npz["conf"], npz["labels"]
    meta = json.loads(str(np.load(root / "trace.npz")["meta"]))
    _trace_variant(root, "trace_names_int.npz", lambda m: m.update(exit_names=7))
    _trace_variant(root, "trace_names_null.npz", lambda m: m.update(exit_names=None))
    _trace_variant(root, "trace_names_nested.npz", lambda m: m.update(exit_names=[["a"], {"b": 1}, 3, None]))
    _trace_variant(root, "trace_tensors_short.npz", lambda m: m.update(tensors=m["tensors"][:1]))
    _trace_variant(root, "trace_classes_zero.npz", lambda m: m.update(num_classes=0))
    _trace_variant(root, "trace_classes_str.npz", lambda m: m.update(num_classes="5"))
    _trace_variant(root, "trace_fingerprint_int.npz", lambda m: m.update(model_fingerprint=12))
    _trace_variant(root, "trace_no_fingerprint.npz", lambda m: m.pop("model_fingerprint"))
    _trace_variant(root, "trace_kind.npz", lambda m: m.update(kind="hapi-onnx design"))
    _trace_variant(root, "trace_version.npz", lambda m: m.update(format_version=99))
    _trace_variant(root, "trace_meta_list.npz", meta_text="[1, 2, 3]")
    _trace_variant(root, "trace_meta_text.npz", meta_text="{not json")
    _trace_variant(root, "trace_meta_huge_int.npz", meta_text=json.dumps(meta).replace('"num_classes": 5',
                                                                                       f'"num_classes": {HUGE}'))
    _trace_variant(root, "trace_meta_deep.npz", meta_text=json.dumps(meta)[:-1] + f', "x": {DEEP}}}')
    _trace_variant(root, "trace_meta_nan.npz", meta_text=json.dumps(meta)[:-1] + ', "x": NaN}')
    _trace_variant(root, "trace_meta_int.npz", meta=None, meta_text="12")
    _trace_variant(root, "trace_no_meta.npz", drop=("meta",))
    _trace_variant(root, "trace_no_pred.npz", drop=("pred",))
    _trace_variant(root, "trace_no_labels.npz", drop=("labels",))
    _trace_variant(root, "trace_labels_scalar.npz", labels=np.array(3))
    _trace_variant(root, "trace_labels_2d.npz", labels=labels[None, :])
    _trace_variant(root, "trace_labels_short.npz", labels=labels[:-1])
    _trace_variant(root, "trace_labels_float.npz", labels=labels + 0.5)
    _trace_variant(root, "trace_labels_range.npz", labels=labels + 9)
    _trace_variant(root, "trace_pred_1d.npz", pred=pred[0])
    _trace_variant(root, "trace_pred_rows.npz", pred=pred[:2], conf=conf[:2])
    _trace_variant(root, "trace_pred_range.npz", pred=pred - 1)
    _trace_variant(root, "trace_conf_nan.npz", conf=np.where(np.arange(conf.size).reshape(conf.shape) == 7,
                                                            np.float32(np.nan), conf))
    _trace_variant(root, "trace_conf_big.npz", conf=conf * 3)
    _trace_variant(root, "trace_conf_int.npz", conf=(conf * 100).astype(np.int64))
    _trace_variant(root, "trace_empty.npz", labels=labels[:0], pred=pred[:, :0], conf=conf[:, :0], drop=("margin",))
    _trace_variant(root, "trace_other_model.npz", lambda m: m.update(model_fingerprint="f" * 64))
    _trace_variant(root, "trace_names_other.npz", lambda m: m.update(exit_names=["a", "b", "c", "final"]))
    _trace_variant(root, "trace_pickled.npz", extra=np.array([None], dtype=object))
    good = (root / "trace.npz").read_bytes()
    (root / "trace_corrupt.npz").write_bytes(_flip(good, len(good) // 2))
    (root / "trace_truncated.npz").write_bytes(good[: len(good) // 3])
    (root / "trace_text.npz").write_text("trace")
    shutil.copy(root / "test.npz", root / "trace_dataset.npz")  # an .npz, but a dataset


def _write_json(path: Path, data) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _variants(root: Path, stem: str):
    """``variant(name, change)``: writes ``<stem>_<name>.json``, ``<stem>.json`` with ``change`` applied."""
    text = (root / f"{stem}.json").read_text()

    def variant(name: str, change) -> None:
        data = json.loads(text)
        change(data)
        _write_json(root / f"{stem}_{name}.json", data)

    return variant


def _latency_tables(root: Path) -> None:
    text = (root / "latency.json").read_text()
    good = json.loads(text)
    variant = _variants(root, "latency")

    _write_json(root / "latency_garbage.json", "{latency: fast}")
    _write_json(root / "latency_empty.json", "")
    _write_json(root / "latency_deep.json", text.rstrip()[:-1] + f', "x": {DEEP}}}')
    _write_json(root / "latency_huge_int.json", text.replace('"batch_size": 1', f'"batch_size": {HUGE}'))
    _write_json(root / "latency_nan.json", text.replace('"batch_size": 1', '"batch_size": NaN'))
    _write_json(root / "latency_list.json", [good])
    (root / "latency_binary.json").write_bytes(b"\xff\xfe\x00junk")
    variant("kind", lambda d: d.update(kind="hapi-onnx design"))
    variant("version", lambda d: d.update(format_version=99))
    variant("no_segments", lambda d: d.pop("segments"))
    variant("segments_short", lambda d: d["segments"].pop())
    variant("segments_null", lambda d: d.update(segments=None))
    variant("segment_junk", lambda d: d["segments"].__setitem__(0, [1, 2]))
    variant("stats_negative", lambda d: d["segments"][0]["stats"].update(mean_ms=-1.0))
    variant("stats_string", lambda d: d["segments"][0]["stats"].update(p90_ms="fast"))
    variant("stats_missing", lambda d: d["heads"][0]["stats"].pop("p99_ms"))
    variant("stats_extra", lambda d: d["overhead"].update(max_ms=3.0))
    variant("overhead_null", lambda d: d.update(overhead=None))
    variant("batch_zero", lambda d: d.update(batch_size=0))
    variant("batch_bool", lambda d: d.update(batch_size=True))
    variant("unknown_field", lambda d: d.update(speed="fast"))
    variant("names_int", lambda d: d.update(exit_names=4))
    variant("names_other", lambda d: d.update(exit_names=["a", "b", "c", "final"]))
    variant("other_model", lambda d: d.update(model_fingerprint="f" * 64))
    variant("fingerprint_int", lambda d: d.update(model_fingerprint=5))
    variant("device_list", lambda d: d.update(device=["cpu"]))
    variant("piece_name_int", lambda d: d["heads"][0].update(name=3))


def _designs(root: Path) -> None:
    text = (root / "design.json").read_text()
    variant = _variants(root, "design")

    _write_json(root / "design_garbage.json", "design")
    _write_json(root / "design_deep.json", text.rstrip()[:-1] + f', "x": {DEEP}}}')
    _write_json(root / "design_huge_int.json", text.replace('"kind"', f'"n": {HUGE}, "kind"', 1))
    _write_json(root / "design_infinity.json", text.replace('"kind"', '"n": -Infinity, "kind"', 1))
    variant("kind", lambda d: d.update(kind="hapi-onnx latency table"))
    variant("version", lambda d: d.update(format_version=1))
    variant("no_exits", lambda d: d.pop("exits"))
    variant("exits_str", lambda d: d.update(exits="exit0,final"))
    variant("exits_empty", lambda d: d.update(exits=[]))
    variant("threshold_negative", lambda d: d["exits"][0].update(threshold=-1))
    variant("threshold_str", lambda d: d["exits"][0].update(threshold="0.9"))
    variant("final_threshold", lambda d: d["exits"][-1].update(threshold=0.5))
    variant("exit_unknown", lambda d: d["exits"][0].update(name="exit9"))
    variant("exits_reversed", lambda d: d.update(exits=[d["exits"][1], d["exits"][0], d["exits"][2]]))
    variant("other_model", lambda d: d.update(model_fingerprint="f" * 64))
    variant("constraints_junk", lambda d: d.update(constraints={"latency_sla_ms": "fast"}))
    variant("constraints_none", lambda d: d.update(constraints={}))
    variant("predicted_missing", lambda d: d["predicted"].pop("mean_ms"))
    variant("distribution_short", lambda d: d["predicted"]["exit_distribution"].pop())
    variant("front_junk", lambda d: d.update(pareto_front=[1, 2]))
    variant("policy", lambda d: d.update(policy="entropy"))
    variant("unknown_field", lambda d: d.update(colour="blue"))
    variant("search_list", lambda d: d.update(search=[1]))
    variant("reference_missing", lambda d: d["reference"].pop("accuracy"))


def _edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _bundles(root: Path) -> None:
    good = root / "model.hapi"

    def copy(name: str) -> Path:
        target = root / f"bundle_{name}.hapi"
        shutil.copytree(good, target, symlinks=True)
        return target

    stage = sorted((good / "stages").iterdir())[0].name
    b = copy("tampered")
    data = (b / "stages" / stage).read_bytes()
    (b / "stages" / stage).write_bytes(_flip(data, len(data) // 2))
    b = copy("swapped")
    files = sorted((b / "stages").iterdir())
    first = files[0].read_bytes()
    files[0].write_bytes(files[-1].read_bytes())
    files[-1].write_bytes(first)
    _edit_manifest(copy("extra_stage"), lambda d: d["stages"].insert(1, {**d["stages"][0],
                                                                          "file": "stages/99_extra.onnx"}))
    _edit_manifest(copy("dotdot"), lambda d: d["stages"][0].update(file="stages/../../x.onnx"))
    _edit_manifest(copy("absolute"), lambda d: d["stages"][0].update(file="/etc/passwd"))
    _edit_manifest(copy("threshold_negative"), lambda d: d["stages"][0].update(threshold=-1))
    _edit_manifest(copy("threshold_bool"), lambda d: d["stages"][0].update(threshold=True))
    _edit_manifest(copy("classes_zero"), lambda d: d.update(num_classes=0))
    _edit_manifest(copy("labels_short"), lambda d: d.update(labels=["a"]))
    _edit_manifest(copy("version"), lambda d: d.update(format_version=1))
    _edit_manifest(copy("kind"), lambda d: d.update(kind="hapi-onnx design"))
    _edit_manifest(copy("input_name"), lambda d: d["input"].update(name="image"))
    _edit_manifest(copy("input_shape"), lambda d: d["input"].update(shape=[None, 3, 12, 12]))
    _edit_manifest(copy("stages_empty"), lambda d: d.update(stages=[]))
    _edit_manifest(copy("stage_junk"), lambda d: d["stages"].__setitem__(0, "stage"))
    b = copy("deep")
    (b / "manifest.json").write_text((b / "manifest.json").read_text().rstrip()[:-1] + f', "x": {DEEP}}}')
    b = copy("huge_int")
    (b / "manifest.json").write_text((b / "manifest.json").read_text().replace(
        '"num_classes": 5', f'"num_classes": {HUGE}'))
    b = copy("not_json")
    (b / "manifest.json").write_text("manifest")
    b = copy("manifest_binary")
    (b / "manifest.json").write_bytes(b"\x80\x81\x82")
    b = copy("missing_stage")
    (b / "stages" / stage).unlink()
    b = copy("stage_symlink")
    (b / "stages" / stage).unlink()
    (b / "stages" / stage).symlink_to(good / "stages" / stage)
    b = copy("manifest_symlink")
    (b / "manifest.json").unlink()
    (b / "manifest.json").symlink_to(good / "manifest.json")
    b = copy("no_manifest")
    (b / "manifest.json").unlink()
    b = copy("stage_dir")
    (b / "stages" / stage).unlink()
    (b / "stages" / stage).mkdir()
    (root / "foreign.hapi").mkdir()
    (root / "foreign.hapi" / "notes.txt").write_text("not a bundle")


def _zip_with(path: Path, members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)


def _zips(root: Path) -> None:
    with zipfile.ZipFile(root / "model.hapi.zip") as archive:
        members = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    stage = sorted(n for n in members if n.startswith("stages/"))[0]
    _zip_with(root / "zip_dotdot.hapi.zip", {**members, "../evil.onnx": b"x"})
    _zip_with(root / "zip_absolute.hapi.zip", {**members, "/tmp/evil.onnx": b"x"})
    _zip_with(root / "zip_backslash.hapi.zip", {**members, "stages\\evil.onnx": b"x"})
    _zip_with(root / "zip_symlink.hapi.zip", members, symlinks=(stage,))
    _zip_with(root / "zip_extra.hapi.zip", {**members, "stages/99_extra.onnx": b"x"})
    _zip_with(root / "zip_no_manifest.hapi.zip", {k: v for k, v in members.items() if k != "manifest.json"})
    _zip_with(root / "zip_missing_stage.hapi.zip", {k: v for k, v in members.items() if k != stage})
    _zip_with(root / "zip_tampered.hapi.zip", {**members, stage: _flip(members[stage], 100)})
    _zip_with(root / "zip_manifest_deep.hapi.zip", {**members, "manifest.json": DEEP.encode()})
    _zip_with(root / "zip_duplicate.hapi.zip", {**members, "stages/./" + stage[7:]: members[stage]})
    # A stage replaced by 64 MiB of zeros (64 KiB compressed): refused before it is inflated.
    _zip_with(root / "zip_bomb.hapi.zip", {**members, stage: bytes(64 << 20)})
    # A member whose central directory claims 3 GiB.
    _zip_with(root / "zip_3gib.hapi.zip", members)
    raw = bytearray((root / "zip_3gib.hapi.zip").read_bytes())
    entry = raw.index(b"PK\x01\x02")
    while True:  # the central directory entry of `stage`
        name_len = struct.unpack_from("<H", raw, entry + 28)[0]
        if raw[entry + 46 : entry + 46 + name_len].decode() == stage:
            break
        entry = raw.index(b"PK\x01\x02", entry + 46 + name_len)
    struct.pack_into("<I", raw, entry + 24, 3 << 30)
    (root / "zip_3gib.hapi.zip").write_bytes(bytes(raw))
    good = (root / "model.hapi.zip").read_bytes()
    (root / "zip_truncated.hapi.zip").write_bytes(good[: len(good) // 2])
    (root / "zip_corrupt.hapi.zip").write_bytes(_flip(good, len(good) // 3))


def _presets_and_configs(root: Path) -> None:
    preset = {"name": "mine", "providers": [["CPUExecutionProvider", {}]], "session": {}, "timing": {}}
    _write_json(root / "preset_ok.json", preset)
    _write_json(root / "preset_garbage.json", "preset")
    _write_json(root / "preset_deep.json", json.dumps(preset)[:-1] + f', "x": {DEEP}}}')
    _write_json(root / "preset_huge_int.json", json.dumps({**preset, "batch_sizes": "B"}).replace('"B"', HUGE))
    _write_json(root / "preset_list.json", [preset])
    _write_json(root / "preset_unknown.json", {**preset, "gpu": True})
    _write_json(root / "preset_cuda.json", {**preset, "providers": [["CUDAExecutionProvider", {}]]})
    _write_json(root / "preset_no_providers.json", {**preset, "providers": []})
    _write_json(root / "preset_provider_str.json", {**preset, "providers": "CPUExecutionProvider"})
    _write_json(root / "preset_threads.json", {**preset, "session": {"intra_op_num_threads": "many"}})
    _write_json(root / "preset_batch.json", {**preset, "batch_sizes": [0]})
    base = {"model": "model.onnx", "max_accuracy_drop": 5}
    configs = {
        "nan_sla": '{"model": "model.onnx", "latency_sla_ms": NaN}',
        "deep": json.dumps(base)[:-1] + f', "x": {DEEP}}}',
        "huge_int": json.dumps(base)[:-1] + f', "max_candidates": {HUGE}}}',
        "garbage": "model: x",
        "list": json.dumps([base]),
        "model_int": {**base, "model": 3},
        "data_int": {**base, "data": 3},
        "device_int": {**base, "device": 3},
        "factory_int": {**base, "factory": 3},
        "device_unknown": {**base, "device": "nosuch"},
        "max_candidates_zero": {**base, "max_candidates": 0},
        "exits_str": {**base, "exits": "t1"},
        "input_shape": {**base, "input_shape": "a,b"},
        "unknown_key": {**base, "sla": 3},
        "no_model": {"max_accuracy_drop": 5},
        "no_constraint": {"model": "model.onnx"},
        "min_accuracy_pct": {"model": "model.onnx", "min_accuracy": 98.5},
        "pooling": {**base, "pooling": "max"},
        "budget_str": {**base, "profile_budget_s": "x"},
        "eval_batch_zero": {**base, "eval_batch_size": 0},
        "bound_level": {**base, "bound_level": 1.5},
        "space": {**base, "space": "each"},
        "model_missing": {**base, "model": "nowhere.onnx"},
        "model_garbage": {**base, "model": "garbage.onnx", "data": "./splits"},
        "data_overlap": {**base, "data": "./overlap"},
        "data_nan": {**base, "data": "./nan_splits"},
        "data_missing_split": {**base, "data": "./missing_split"},
        "model_dir": {**base, "model": "./splits", "data": "./splits"},
    }
    for name, config in configs.items():
        _write_json(root / f"config_{name}.json", config)
