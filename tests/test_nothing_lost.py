"""Nothing lost, round 2: a user's folder is never replaced, a full disk is one line, every new input path is checked.

Runs with the shared inputs of :mod:`bad_inputs` and the checks of :mod:`test_bad_inputs`: a
refusal is exit 2, one ``error:`` line, no traceback, nothing changed under the case's folder
or the inputs.
"""

import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from bad_inputs import make_inputs
from click.testing import CliRunner
from hapi_onnx_cli.main import cli
from onnx import TensorProto, helper, numpy_helper
from test_bad_inputs import assert_one_line_error, changes, snapshot

from hapi_onnx.errors import HapiError
from hapi_onnx.files import OUTPUT_RECORD
from hapi_onnx.runtime import EarlyExitModel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def _invoke(args, inputs, folder):
    return CliRunner().invoke(cli, [str(a).replace("{i}", str(inputs)).replace("{c}", str(folder)) for a in args])


def _refused(args, inputs, folder, expect):
    """Run a CLI command that must be refused: one line, exit 2, nothing changed."""
    before = snapshot(folder, inputs)
    result = _invoke(args, inputs, folder)
    assert not changes(before, snapshot(folder, inputs))
    return assert_one_line_error(result, expect)


# -- a folder is replaced only when it is provably this tool's output of that kind ---------------

WRITERS = {
    "bundle": ("bundle", "{i}/ee.onnx", "--design", "{i}/design.json", "-o", "{c}/out"),
    "split": ("split", "{i}/model.onnx", "-o", "{c}/out"),
    "data": ("data", "mnist", "-o", "{c}/out"),
    "build": ("build", "{i}/model.onnx", "--data", "{i}/splits", "--max-accuracy-drop", "5", "--workdir", "{c}/out"),
}
MARKERS = {"bundle": "manifest.json", "split": "index.json", "data": "splits.json", "build": "model.onnx"}


def _foreign(kind: str, content: str):
    """Fill ``out/`` with something the command did not write."""

    def make(out: Path) -> None:
        out.mkdir()
        if content == "marker-and-a-file":  # the case that lost index.html, notes.txt, thesis.tex
            (out / MARKERS[kind]).write_text("{}")
            (out / "index.html").write_text("<p>mine</p>")
        elif content == "a-file":
            (out / "notes.txt").write_text("mine")
        elif content == "a-hidden-file":
            (out / ".notes").write_text("mine")
        elif content == "an-empty-folder":
            (out / "mine").mkdir()
        elif content == "a-link":
            (out / "link").symlink_to(out.parent)
        elif content == "a-forged-record":  # another kind's record
            other = "split" if kind != "split" else "bundle"
            (out / OUTPUT_RECORD).write_text(json.dumps({"kind": other, "files": ["notes.txt"]}))
            (out / "notes.txt").write_text("mine")

    return make


CONTENTS = ["marker-and-a-file", "a-file", "a-hidden-file", "an-empty-folder", "a-link", "a-forged-record"]


@pytest.mark.parametrize("content", CONTENTS)
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_bundle_split_data_and_build_refuse_every_folder_they_did_not_write(kind, content, inputs, tmp_path):
    _foreign(kind, content)(tmp_path / "out")
    if kind == "build" and content == "a-forged-record":
        (tmp_path / "out" / OUTPUT_RECORD).write_text(json.dumps({"kind": "bundle", "files": ["notes.txt"]}))
    _refused(WRITERS[kind], inputs, tmp_path, "not one (this step|a build) wrote|did not write")


@pytest.mark.parametrize("kind", ["bundle", "split"])
def test_an_earlier_output_is_replaced_but_never_a_file_a_user_added_to_it(kind, inputs, tmp_path):
    assert _invoke(WRITERS[kind], inputs, tmp_path).exit_code == 0
    out = tmp_path / "out"
    record = json.loads((out / OUTPUT_RECORD).read_text())
    assert record["kind"] == kind and sorted(record["files"]) == sorted(
        p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != OUTPUT_RECORD)
    again = _invoke(WRITERS[kind], inputs, tmp_path)  # its own earlier output: replaced
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "NOTES.txt").write_text("mine")
    line = _refused(WRITERS[kind], inputs, tmp_path, "holds 'NOTES.txt', which this step did not write")
    assert "never deletes" in line


def test_an_empty_folder_is_written_into(inputs, tmp_path):
    (tmp_path / "out").mkdir()
    assert _invoke(WRITERS["split"], inputs, tmp_path).exit_code == 0
    assert (tmp_path / "out" / "index.json").is_file()


# -- a swap leaves the old or the new output at the path, at every instant -------------------------

SLOW_SWAP = """
import sys, time
from pathlib import Path
mark = Path(sys.argv[2])
from hapi_onnx import files
remove = files._remove_recorded
def slow_remove(folder, listed):  # just after the exchange, before the old output is deleted
    mark.touch()
    time.sleep(30)
files._remove_recorded = slow_remove
from hapi_onnx_cli.main import main
sys.argv = ["hapi-onnx", "bundle", sys.argv[3], "--design", sys.argv[4], "-o", sys.argv[1]]
main()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2(RENAME_EXCHANGE) is Linux's")
def test_sigterm_during_a_bundle_swap_leaves_a_whole_bundle_at_the_path(inputs, tmp_path, tmp_path_factory):
    out, mark = tmp_path / "m.hapi", tmp_path_factory.mktemp("mark") / "swapped"
    shutil.copytree(inputs / "model.hapi", out)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SWAP, str(out), str(mark), str(inputs / "ee.onnx"),
                             str(inputs / "design.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert mark.exists(), proc.communicate()
    assert EarlyExitModel.load(out).num_stages == 3  # the new bundle is in place already
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr) == (143, "error: terminated.\n")
    assert EarlyExitModel.load(out).num_stages == 3
    left = sorted(p.name for p in tmp_path.iterdir())  # the old bundle, stopped before it was deleted
    assert len(left) == 2 and left[1] == "m.hapi" and left[0].startswith(f".m.hapi.{proc.pid}.")
    assert _invoke(WRITERS["bundle"][:-1] + ("{c}/m.hapi",), inputs, tmp_path).exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.hapi"]  # the next write removed it


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` made read-only: a read-only bind mount as root (whom modes do not stop), else its mode."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mount = ["mount", "--bind", str(folder), str(folder)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("bind mounts are not allowed here")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("read-only remounts are not allowed here")
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_an_earlier_bundle_that_cannot_be_deleted_is_refused_before_any_work(inputs, tmp_path):
    assert _invoke(WRITERS["bundle"], inputs, tmp_path).exit_code == 0
    with _read_only(tmp_path / "out" / "stages"):
        _refused(WRITERS["bundle"], inputs, tmp_path, "read-only")
        assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no undeletable leftover beside it


# -- a full disk: one line, nothing changed --------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB tmpfs (root), filled up but for what ``room`` leaves; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")

    def fill() -> None:
        with open(mount / ".filler", "ab", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(bytes(4096))

    try:
        yield mount, fill
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


DISK_FULL = [
    ("bundle-folder", "bundle", "{i}/ee.onnx", "--design", "{i}/design.json", "-o", "{d}/m.hapi"),
    ("bundle-zip", "bundle", "{i}/ee.onnx", "--design", "{i}/design.json", "-o", "{d}/m.hapi.zip"),
    ("calibrate", "calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz", "-o", "{d}/new/trace.npz"),
    ("search", "search", "--trace", "{i}/trace.npz", "--latency", "{i}/latency.json", "--latency-sla", "1.5",
     "-o", "{d}/design.json"),
    ("attach", "attach", "{i}/model.onnx", "--data", "{i}/train.npz", "-o", "{d}/ee.onnx"),
    ("data-mnist", "data", "mnist", "-o", "{d}/data"),
    ("split", "split", "{i}/model.onnx", "-o", "{d}/seg"),
    ("evaluate-o", "evaluate", "{i}/model.hapi", "--data", "{i}/test.npz", "-o", "{d}/report.json"),
    ("export", "export", "{i}/model.onnx", "-o", "{d}/m.onnx"),
    ("profile", "profile", "{i}/ee.onnx", "--device", "{i}/preset_fast.json", "-o", "{d}/latency.json"),
    ("build", "build", "{i}/model.onnx", "--data", "{i}/splits", "--max-accuracy-drop", "5", "--workdir",
     "{d}/new/w"),
    ("build-into-its-workdir", "build", "{i}/model.onnx", "--data", "{i}/splits", "--max-accuracy-drop", "5",
     "--workdir", "{d}/w2"),
    ("overwrite", "search", "--trace", "{i}/trace.npz", "--latency", "{i}/latency.json", "--latency-sla", "1.5",
     "-o", "{d}/old.json"),
]


@pytest.mark.parametrize("args", DISK_FULL, ids=[a[0] for a in DISK_FULL])
def test_a_full_disk_is_one_line_and_changes_nothing(args, inputs, full_disk, fast_preset, tmp_path):
    disk, fill = full_disk
    if args[0] == "overwrite":
        (disk / "old.json").write_text("earlier output")
    if args[0] == "build-into-its-workdir":  # a build's own earlier workdir
        (disk / "w2").mkdir()
        (disk / "w2" / OUTPUT_RECORD).write_text(json.dumps({"kind": "build", "files": []}))
    fill()
    before = {k: v for k, v in snapshot(disk, inputs).items() if not k.endswith(".filler")}
    argv = [a.replace("{d}", str(disk)).replace("{i}/preset_fast.json", str(fast_preset)) for a in args[1:]]
    result = _invoke(argv, inputs, tmp_path)
    after = {k: v for k, v in snapshot(disk, inputs).items() if not k.endswith(".filler")}
    assert not changes(before, after)
    assert_one_line_error(result, "No space left on device")


# -- inputs that hung, blew up or were misread ----------------------------------------------------

def _png_header(width: int, height: int, depth: int = 8) -> bytes:
    """A PNG that claims ``width x height`` pixels: its header alone (what is read before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name", ["pipe.png", "pipe.npy"])
def test_run_on_a_fifo_is_refused_instead_of_hanging(name, inputs, tmp_path):
    os.mkfifo(tmp_path / name)
    done = subprocess.run([sys.executable, "-m", "hapi_onnx", "run", str(inputs / "model.hapi"), str(tmp_path / name)],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1 and "not a regular file" in done.stderr, done.stderr


def test_a_decompression_bomb_is_refused_from_its_header_without_pillow_warnings(inputs, tmp_path):
    (tmp_path / "big.png").write_bytes(_png_header(12000, 12000))
    start = time.perf_counter()
    line = _refused(("run", "{i}/model.hapi", "{c}/big.png"), inputs, tmp_path, "12000x12000 pixels, more than")
    assert "DecompressionBomb" not in line
    assert time.perf_counter() - start < 30  # nothing decoded (decoding 144 Mpx took seconds)


def test_an_npy_header_with_negative_sizes_is_refused(inputs, tmp_path):
    from numpy.lib import format as npy_format

    with open(tmp_path / "neg.npy", "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (-1, -1, 12, 12)})
        f.write(bytes(64))
    _refused(("run", "{i}/model.hapi", "{c}/neg.npy"), inputs, tmp_path, "negative size")


def test_preprocess_sizes_are_bounded(inputs, tmp_path):
    _refused(("attach", "{i}/model.onnx", "--data", "{i}/train.npz", "-o", "{c}/ee.onnx", "--preprocess",
              '{"resize": 100000, "crop": 28}'), inputs, tmp_path, "up to 8192")


# -- 16-bit images: scaled by their own range, the same in both paths ------------------------------

@pytest.fixture(scope="module")
def spec_model(inputs, tmp_path_factory):
    """The shared bundle again, recording the ``none`` spec (pixels / 255, 1 x 12 x 12)."""
    from hapi_onnx.bundle import bundle_from_design

    out = tmp_path_factory.mktemp("spec") / "m.hapi"
    bundle_from_design(inputs / "ee.onnx", inputs / "design.json", out, preprocessing="none")
    return EarlyExitModel.load(out)


def test_sixteen_bit_images_are_scaled_by_their_range_in_folders_and_preprocess(spec_model, tmp_path):
    from PIL import Image

    from hapi_onnx.data.images import ImageFolder

    wide = (np.arange(144, dtype=np.uint32).reshape(12, 12) * 455).astype(np.uint16)  # 0 .. 65065
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.fromarray(wide).save(tmp_path / "train" / name / "x.png")
        Image.fromarray((wide >> 8).astype(np.uint8)).save(tmp_path / "train" / name / "y.png")
    folder = ImageFolder(tmp_path / "train", workers=0).fit_to(["N", 1, 12, 12])
    x16, x8 = next(folder.batches(4))[:2]
    np.testing.assert_allclose(x16[0], wide / 65535, atol=1e-6)  # never clipped at 255
    np.testing.assert_allclose(x16, x8, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(spec_model.preprocess(wide)[0], x16, atol=1e-6)
    assert spec_model.preprocess(wide).max() <= 1.0


@pytest.mark.parametrize(("image", "expect"), [
    (np.full((12, 12), np.nan, np.float32), "NaN or infinite"),
    (np.full((12, 12), np.inf, np.float32), "NaN or infinite"),
    (np.zeros((20, 20), np.uint8), "becomes 20x20 .* takes 12x12"),
    (None, "Got NoneType"),
    ("image.png", "Got str"),
])
def test_preprocess_refuses_what_the_model_cannot_take(spec_model, image, expect):
    with pytest.raises(HapiError, match=expect):
        spec_model.preprocess(image)


@pytest.mark.parametrize("path", [None, 123, 1.5, b"model.hapi"])
def test_load_refuses_a_path_of_the_wrong_type_with_hapi_error(path):
    with pytest.raises(HapiError, match="bundle path must be a str"):
        EarlyExitModel.load(path)


# -- image folders ---------------------------------------------------------------------------------

def _gray(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(path)


def test_two_class_folders_spelled_nfc_and_nfd_are_refused(tmp_path):
    from hapi_onnx.data.images import ImageFolder

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    _gray(tmp_path / nfc / "1.png")
    _gray(tmp_path / nfd / "1.png")
    with pytest.raises(HapiError, match="NFC and NFD"):
        ImageFolder(tmp_path)


@pytest.mark.parametrize("target", [".", ".."])
def test_a_class_folder_linking_back_to_its_split_is_refused_by_name(tmp_path, target):
    from hapi_onnx.data.images import ImageFolder

    _gray(tmp_path / "train" / "cat" / "1.png")
    (tmp_path / "train" / "loop").symlink_to(target)
    with pytest.raises(HapiError, match="class folder 'loop' is a link to"):
        ImageFolder(tmp_path / "train")


# -- quantized models: their scales are checked when they are loaded -------------------------------

def _qdq_model(act_scale=0.02, weight_scale=(0.01, 0.01, 0.01, 0.01), scale_type=TensorProto.FLOAT, weight_zps=4):
    """x -> Q/DQ -> Conv (per-channel int8 weights) -> ReLU -> GAP -> Flatten -> Gemm: a tiny QDQ classifier."""
    rng = np.random.default_rng(0)
    def as_scale(value):
        dtype = np.float32 if scale_type == TensorProto.FLOAT else np.int32
        return numpy_helper.from_array(np.asarray(value).astype(dtype))

    inits = [
        as_scale(act_scale), numpy_helper.from_array(np.zeros(np.shape(act_scale), np.int8)),
        numpy_helper.from_array(rng.integers(-100, 100, (4, 1, 3, 3)).astype(np.int8), "w_q"),
        as_scale(weight_scale), numpy_helper.from_array(np.zeros(weight_zps, np.int8), "w_zp"),
        numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(3, np.float32), "fc_b"),
    ]
    for init, name in zip(inits[:2], ("x_scale", "x_zp"), strict=True):
        init.name = name
    inits[3].name = "w_scale"
    nodes = [
        helper.make_node("QuantizeLinear", ["image", "x_scale", "x_zp"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


QDQ_BAD = {
    "nan-activation-scale": (dict(act_scale=float("nan")), "finite"),
    "inf-activation-scale": (dict(act_scale=float("inf")), "finite"),
    "nan-weight-scale": (dict(weight_scale=(0.01, float("nan"), 0.01, 0.01)), "finite"),
    "inf-weight-scale": (dict(weight_scale=(0.01, 0.01, float("inf"), 0.01)), "finite"),
    "zero-scale": (dict(act_scale=0.0), "must be > 0"),
    "three-element-scale": (dict(act_scale=[0.02, 0.02, 0.02]), "3 values for axis 1 of size 1"),
    "zero-point-count": (dict(weight_zps=3), "4 value\\(s\\) but a zero point of 3"),
    "int32-scale": (dict(act_scale=2, weight_scale=(1, 1, 1, 1), scale_type=TensorProto.INT32), "int32, not float"),
}


def test_a_good_qdq_model_loads_and_runs(tmp_path):
    import onnxruntime as ort

    from hapi_onnx.graph import load_model

    model = load_model(_qdq_model())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((2, 1, 8, 8), np.float32)})[0].shape == (2, 3)


@pytest.mark.parametrize("name", sorted(QDQ_BAD))
@pytest.mark.parametrize("command", ["exits", "split", "attach", "calibrate"])
def test_qdq_models_with_unusable_scales_are_refused_when_loaded(name, command, inputs, tmp_path):
    kwargs, expect = QDQ_BAD[name]
    (tmp_path / "in").mkdir()
    onnx.save(_qdq_model(**kwargs), tmp_path / "in" / "q.onnx")
    args = {"exits": ("exits", "{c}/in/q.onnx"), "split": ("split", "{c}/in/q.onnx", "-o", "{c}/seg"),
            "attach": ("attach", "{c}/in/q.onnx", "--data", "{i}/train.npz", "-o", "{c}/ee.onnx"),
            "calibrate": ("calibrate", "{c}/in/q.onnx", "--data", "{i}/calib.npz", "-o", "{c}/t.npz")}[command]
    _refused(args, inputs, tmp_path, expect)


# -- bundles: a linked stages/ folder, and the JS CLI's bounds -------------------------------------

def _linked_stages(inputs: Path, tmp_path: Path) -> Path:
    bundle = shutil.copytree(inputs / "model.hapi", tmp_path / "m.hapi")
    shutil.move(bundle / "stages", tmp_path / "elsewhere")
    (bundle / "stages").symlink_to(tmp_path / "elsewhere")
    return bundle


def test_a_bundle_whose_stages_folder_is_a_link_is_refused(inputs, tmp_path):
    bundle = _linked_stages(inputs, tmp_path)
    with pytest.raises(HapiError, match="lies in 'stages', a symlink"):
        EarlyExitModel.load(bundle)
    _refused(("run", "{c}/m.hapi", "{i}/images.npy"), inputs, tmp_path, "lies in 'stages', a symlink")


def _js_one_line_error(*args) -> str:
    from test_runtime_js import CLI, _node, _one_line_error

    done = subprocess.run([_node(), str(CLI), *map(str, args)], capture_output=True, text=True, timeout=180, cwd=REPO)
    return _one_line_error(done)


def test_the_js_cli_refuses_a_linked_stages_folder(inputs, tmp_path):
    bundle = _linked_stages(inputs, tmp_path)
    assert "lies in 'stages', a symlink" in _js_one_line_error(bundle, inputs / "images.npy")


def _npy(path: Path, shape: str, header_size: int) -> Path:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".ljust(header_size - 1) + "\n"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header.encode() + bytes(4 * 144))
    return path


def test_the_js_cli_refuses_an_npy_header_numpy_refuses(inputs, tmp_path):
    long = _npy(tmp_path / "long.npy", "(1, 1, 12, 12)", 20_000)
    with pytest.raises(ValueError, match="max_header_size"):
        np.load(long)
    assert "more than the 10000 numpy reads" in _js_one_line_error(inputs / "model.hapi", long)
    neg = _npy(tmp_path / "neg.npy", "(-1, -1, 12, 12)", 116)
    assert "sizes must be whole numbers" in _js_one_line_error(inputs / "model.hapi", neg)


def test_the_js_cli_refuses_a_fifo_instead_of_hanging(inputs, tmp_path):
    os.mkfifo(tmp_path / "pipe.npy")
    assert "not a regular file" in _js_one_line_error(inputs / "model.hapi", tmp_path / "pipe.npy")


# -- nothing outside the output: ONNX Runtime's telemetry store and debug log ----------------------

def test_python_sessions_leave_nothing_in_home(inputs, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "hapi_onnx", "run", str(inputs / "model.hapi"),
                           str(inputs / "images.npy")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert list(home.rglob("*")) == []  # no ~/.cache/Microsoft/DeveloperTools/.onnxruntime


def test_node_sessions_leave_nothing_in_home_or_tmp(inputs, tmp_path):
    from test_runtime_js import CLI, _node

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"} | {"HOME": str(home)}
    proc = subprocess.Popen([_node(), str(CLI), str(inputs / "model.hapi"), str(inputs / "images.npy")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert list(home.rglob("*")) == []
    assert not Path(f"/tmp/mat-debug-{proc.pid}.log").exists()


# -- the build config takes the flags' names -------------------------------------------------------

def test_a_build_config_takes_the_flags_names(inputs, tmp_path):
    from hapi_onnx.pipeline import BuildConfig

    path = tmp_path / "build.json"
    path.write_text(json.dumps({"model": str(inputs / "model.onnx"), "latency-sla": 2.5, "profile-budget": 0.5}))
    config = BuildConfig.from_file(path)
    assert (config.constraints.latency_sla_ms, config.profile_budget_s) == (2.5, 0.5)
    assert BuildConfig.from_file(path, latency_sla_ms=3.0).constraints.latency_sla_ms == 3.0  # the flag wins
    path.write_text(json.dumps({"model": str(inputs / "model.onnx"), "latency_sla": 2.5, "latency_sla_ms": 2}))
    with pytest.raises(HapiError, match="same option"):
        BuildConfig.from_file(path)


# -- -o into missing folders: made, for every command (and removed again on failure) --------------

def test_missing_parent_folders_of_an_output_are_made(inputs, tmp_path):
    result = _invoke(("calibrate", "{i}/ee.onnx", "--data", "{i}/calib.npz", "-o", "{c}/no/such/trace.npz"),
                     inputs, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "no" / "such" / "trace.npz").is_file()


def test_a_failed_build_leaves_no_workdir_nor_its_parents(inputs, tmp_path):
    args = ("build", "{i}/model.onnx", "--data", "{i}/splits", "--max-accuracy-drop", "5", "--device",
            "{i}/preset_garbage.json", "--workdir", "{c}/a/b/w")
    _refused(args, inputs, tmp_path, "not valid JSON")
    (tmp_path / "in").mkdir()
    onnx.save(_qdq_model(act_scale=float("nan")), tmp_path / "in" / "q.onnx")
    _refused(("build", "{c}/in/q.onnx", "--data", "{i}/splits", "--max-accuracy-drop", "5", "--workdir",
              "{c}/a/b/w"), inputs, tmp_path, "finite")
