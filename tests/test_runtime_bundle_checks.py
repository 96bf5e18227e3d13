"""The loader refuses tampered, malformed, incomplete or unsafe bundles with one HapiError."""

import hashlib
import json
import shutil
import stat
import zipfile

import onnx
import pytest
from test_bundle_models import make_ee_model

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.runtime import BundleError, EarlyExitModel


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    folder = write_bundle(make_ee_model(), choices_from(["exit0", "exit2"], [0.9, 0.8]), root / "m.hapi")
    packed = write_bundle(make_ee_model(), choices_from(["exit0", "exit2"], [0.9, 0.8]), root / "m.hapi.zip")
    return folder, packed


@pytest.fixture
def bundle(pristine, tmp_path):
    copy = tmp_path / "m.hapi"
    shutil.copytree(pristine[0], copy)
    return copy


def edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_pristine_bundles_load(pristine):
    for path in pristine:
        assert EarlyExitModel.load(path).exit_names == ("exit0", "exit2", "final")


def test_tampered_stage_file(bundle):
    stage = bundle / "stages" / "01_exit2.onnx"
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 0x01
    stage.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"'stages/01_exit2.onnx' does not match the sha256"):
        EarlyExitModel.load(bundle)


def test_swapped_stage_files(bundle):
    a, b = bundle / "stages" / "00_exit0.onnx", bundle / "stages" / "02_final.onnx"
    blob = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(blob)
    with pytest.raises(BundleError, match="does not match the sha256"):
        EarlyExitModel.load(bundle)


def test_missing_stage_file(bundle):
    (bundle / "stages" / "02_final.onnx").unlink()
    with pytest.raises(BundleError, match="'stages/02_final.onnx' is missing"):
        EarlyExitModel.load(bundle)


def test_missing_manifest_and_missing_bundle(bundle, tmp_path):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        EarlyExitModel.load(bundle)
    with pytest.raises(BundleError, match="does not exist"):
        EarlyExitModel.load(tmp_path / "nowhere.hapi")
    (tmp_path / "junk.hapi").write_text("not a bundle")
    with pytest.raises(BundleError, match="neither a bundle directory nor a zip"):
        EarlyExitModel.load(tmp_path / "junk.hapi")


def test_symlinked_stage_file_is_refused(bundle, pristine):
    stage = bundle / "stages" / "00_exit0.onnx"
    stage.unlink()
    stage.symlink_to(pristine[0] / "stages" / "00_exit0.onnx")
    with pytest.raises(BundleError, match="is a symlink"):
        EarlyExitModel.load(bundle)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(kind="something else"), "not a hapi-onnx bundle"),
        (lambda d: d.update(format_version=3), "format_version 3"),
        (lambda d: d["stages"][0].update(sha256="0" * 64), "does not match the sha256"),
        (lambda d: d["stages"][0].update(sha256="abc"), "64 lowercase hex"),
        (lambda d: d["stages"][1].update(file="../../etc/passwd.onnx"), "plain 'stages/<name>.onnx'"),
        (lambda d: d["stages"][1].update(file="/abs/x.onnx"), "plain 'stages/<name>.onnx'"),
        (lambda d: d["stages"][0].pop("threshold"), "'threshold' is missing"),
        (lambda d: d["stages"][0].update(threshold="high"), "must be a number or null"),
        (lambda d: d["stages"][0].update(threshold=None), "needs a 'threshold'"),
        (lambda d: d["stages"][2].update(threshold=0.5), "last stage decides"),
        (lambda d: d["stages"][1].update(input="t9"), "'input' must be 't1'"),
        (lambda d: d["stages"][1]["outputs"].update(probs="nope"), "missing outputs \\['nope'\\]"),
        (lambda d: d.update(num_classes=True), "'num_classes' must be a positive int"),
        (lambda d: d.update(labels=["a"]), "'labels' must be 5 strings"),
        (lambda d: d["input"].update(dtype="float64"), "'dtype' must be one of"),
        (lambda d: d["input"].update(shape=[None, 1, 12]), "'shape' must be 4 dimensions"),
        (lambda d: d.update(stages=[]), "at least the final stage"),
        (lambda d: d.pop("provenance"), "'provenance' is missing"),
    ],
)
def test_edited_manifest_is_refused(bundle, change, match):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=match):
        EarlyExitModel.load(bundle)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        # The three edits a reviewer reproduced as predict-time crashes or wrong values.
        (lambda d: d.update(num_classes=7),
         r"does not match stage 0 .*outputs.probs 'hapi_probs' is tensor\(float\) \[N, 5\].*expected "
         r"tensor\(float\) \[N, 7\] \(num_classes\)"),
        (lambda d: d["input"].update(shape=[None, 3, 12, 12]),
         r"does not match stage 0 .*'input' 'input' is tensor\(float\) \[N, 1, 12, 12\] in the stage "
         r"file, but the manifest's 'input' says float32 \[N, 3, 12, 12\]"),
        (lambda d: d["stages"][2]["outputs"].update(probs="hapi_class"),
         r"does not match stage 2 \('final'.*must name distinct outputs"),
        # A size the stage file fixes cannot be left open in the manifest.
        (lambda d: d["input"].update(shape=[None, 1, 12, None]), r"does not match stage 0 .*\[N, 1, 12, \?\]"),
        # Swapped outputs: every name exists and is distinct, types or ranks give them away.
        (lambda d: d["stages"][1]["outputs"].update(**{"class": "hapi_probs", "probs": "hapi_class"}),
         r"does not match stage 1 .*outputs.class 'hapi_probs' is tensor\(float\) \[N, 5\] in the stage file; expected "
         r"tensor\(int64\) \[N\]"),
        (lambda d: d["stages"][0]["outputs"].update(confidence="hapi_probs", probs="hapi_confidence"),
         r"does not match stage 0 .*outputs.confidence 'hapi_probs' is tensor\(float\) \[N, 5\]"),
        (lambda d: d["stages"][0]["outputs"].update(confidence="t1"),
         r"does not match stage 0 .*must name distinct outputs"),
        # A stage dropped from the manifest: the next one reads another tensor.
        (lambda d: (d["stages"].pop(1), d["stages"][1].update(input="t1")),
         r"does not match stage 1 \('final'.*'input' is 't1', but the stage file's inputs are \['t4'\]"),
    ],
)
def test_manifest_that_contradicts_its_stage_files_is_refused_at_load(bundle, change, match):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=match):
        EarlyExitModel.load(bundle)


def test_carried_tensor_that_the_next_stage_cannot_read_is_refused(bundle):
    """Stage 1's file re-declared to read t1 at another size (and re-hashed): caught at load, not at run."""
    stage = bundle / "stages" / "01_exit2.onnx"
    model = onnx.load_from_string(stage.read_bytes())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 6, 6
    blob = model.SerializeToString()
    stage.write_bytes(blob)
    edit_manifest(bundle, lambda d: d["stages"][1].update(sha256=hashlib.sha256(blob).hexdigest()))
    with pytest.raises(BundleError, match=r"does not match stage 0 .*'carried' 't1' is tensor\(float\) "
                                          r"\[N, 4, 12, 12\], but stage 1 reads 't1' as tensor\(float\) "
                                          r"\[N, 4, 6, 6\]"):
        EarlyExitModel.load(bundle)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf"), 10**400, -0.5, 1e39])
def test_manifest_threshold_must_be_finite(bundle, threshold):
    edit_manifest(bundle, lambda d: d["stages"][0].update(threshold=threshold))
    with pytest.raises(BundleError, match="finite number >= 0|not valid JSON"):
        EarlyExitModel.load(bundle)


def test_manifest_that_is_not_json(bundle):
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        EarlyExitModel.load(bundle)


def rewrite_zip(src, dst, extra=None, drop=(), rename=None):
    """Copy a zip bundle, adding ``extra`` members (ZipInfo, bytes), dropping and renaming some."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            if info.filename in drop:
                continue
            data = old.read(info)
            if rename and info.filename in rename:
                info.filename = rename[info.filename]
            new.writestr(info, data)
        for info, data in extra or []:
            new.writestr(info, data)
    return dst


def symlink_member(name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"extra": [(zipfile.ZipInfo("../evil.onnx"), b"x")]}, "unsafe member '../evil.onnx'"),
        ({"extra": [(zipfile.ZipInfo("stages/../../evil"), b"x")]}, "unsafe member"),
        ({"extra": [(zipfile.ZipInfo("/etc/evil"), b"x")]}, "unsafe member '/etc/evil'"),
        ({"extra": [symlink_member("stages/link.onnx", "/etc/passwd")]}, "unsafe member 'stages/link.onnx'"),
        ({"extra": [(zipfile.ZipInfo("notes.txt"), b"hello")]}, r"does not list: \['notes.txt'\]"),
        ({"drop": ["stages/02_final.onnx"]}, "'stages/02_final.onnx' is missing"),
        ({"drop": ["manifest.json"]}, "no manifest.json"),
        ({"rename": {"manifest.json": "sub/manifest.json"}}, "no manifest.json"),
    ],
)
def test_unsafe_or_incomplete_zip_is_refused(pristine, tmp_path, kwargs, match):
    bad = rewrite_zip(pristine[1], tmp_path / "bad.hapi.zip", **kwargs)
    with pytest.raises(BundleError, match=match):
        EarlyExitModel.load(bad)


def test_corrupt_zip_member_is_refused(pristine, tmp_path):
    data = bytearray(pristine[1].read_bytes())
    with zipfile.ZipFile(pristine[1]) as archive:
        info = archive.getinfo("stages/01_exit2.onnx")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    data[start] ^= 0xFF
    bad = tmp_path / "corrupt.hapi.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="cannot be read|does not match the sha256"):
        EarlyExitModel.load(bad)
