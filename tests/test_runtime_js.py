"""The JavaScript runtime (runtime-js/) gives the Python runtime's answers, in Node and in Chromium.

One quick demo build (the demo CNN, as in test_pipeline.py) serves every test: its bundle and
its 1000 held-out test images are run by the Python runtime (the reference), by
``runtime-js/cli.mjs`` and the library API under Node (onnxruntime-node), and by the example
page in headless Chromium (onnxruntime-web, WASM). Broken copies of the bundle (one byte
flipped in a stage, an unknown format version, a missing stage file) must be refused with one
clear error by each.

Without ``node`` (or ``runtime-js/node_modules``, which ``make test`` installs) or Chromium the
tests skip; with ``HAPI_REQUIRE_JS=1`` (set by ``.ci/run``) they fail instead.
"""

import functools
import http.server
import json
import math
import os
import shutil
import subprocess
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import QUICK

from hapi_onnx.choice import check_threshold, leaves
from hapi_onnx.data import load_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.pipeline import BuildConfig, build
from hapi_onnx.runtime import EarlyExitModel

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "runtime-js"
CLI = JS / "cli.mjs"
REQUIRED = os.environ.get("HAPI_REQUIRE_JS") == "1"
BROWSER_DIGITS = 20


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (HAPI_REQUIRE_JS=1: the JS tests must run)")
    pytest.skip(reason)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _unavailable("node not found: install Node.js 18+ to test runtime-js")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        _unavailable("runtime-js/node_modules is missing: run `make test` (it runs npm ci)")
    return node


def _run_node(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([_node(), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@dataclass(frozen=True)
class Demo:
    bundle: Path
    images: Path  # the 1000 test images as float32 N x 1 x 28 x 28 .npy
    x: np.ndarray
    model: EarlyExitModel


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    _node()
    work = tmp_path_factory.mktemp("js-demo")
    result = build(BuildConfig.from_options(QUICK), work)
    x = load_dataset(result.paths["data"] / "test.npz").x
    images = work / "test_x.npy"
    np.save(images, x)
    return Demo(result.paths["bundle"], images, x, EarlyExitModel.load(result.paths["bundle"]))


def _flip_byte(bundle: Path) -> None:
    stage = sorted((bundle / "stages").iterdir())[1]
    data = bytearray(stage.read_bytes())
    data[len(data) // 2] ^= 0x01
    stage.write_bytes(bytes(data))


def _unknown_version(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def _drop_last_stage(bundle: Path) -> None:
    sorted((bundle / "stages").iterdir())[-1].unlink()


# name -> (how the copy is broken, what the one error must say)
BROKEN = {
    "tampered": (_flip_byte, "does not match the sha256 in the manifest"),
    "version": (_unknown_version, "format_version 99; this runtime reads version 2"),
    "missing": (_drop_last_stage, "stages/02_final.onnx' is missing"),
}


@pytest.fixture(scope="module")
def broken(demo, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("js-broken")
    copies = {}
    for name, (damage, _) in BROKEN.items():
        copies[name] = shutil.copytree(demo.bundle, root / f"{name}.hapi")
        damage(copies[name])
    return copies


def _python_answers(model: EarlyExitModel, x: np.ndarray, batch: int):
    preds = [model.predict(x[i : i + batch]) for i in range(0, len(x), batch)]
    return (np.concatenate([p.classes for p in preds]), np.concatenate([p.exit_index for p in preds]),
            np.concatenate([p.confidences for p in preds]))


# -- Node ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 64, None])
def test_node_cli_gives_the_python_answers_on_the_demo_test_set(demo, batch):
    args = [] if batch is None else ["--batch", batch]
    done = _run_node(CLI, demo.bundle, demo.images, *args)
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    classes, exits, confidences = _python_answers(demo.model, demo.x, batch or len(demo.x))
    assert js["exit_names"] == list(demo.model.exit_names)
    np.testing.assert_array_equal(js["classes"], classes)
    np.testing.assert_array_equal(js["exits"], exits)
    np.testing.assert_allclose(js["confidences"], confidences, rtol=0, atol=1e-6)
    # Every stage decides some samples, so compaction and every exit are exercised.
    assert np.bincount(exits, minlength=demo.model.num_stages).min() > 0


def test_node_api_probs_and_progressive_match_python(demo, tmp_path):
    x = demo.x[:64]
    np.save(tmp_path / "x.npy", x)
    done = _run_node(JS / "test" / "api_check.mjs", demo.bundle, tmp_path / "x.npy")
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    assert js["thresholds"] == list(demo.model.thresholds)
    ref = demo.model.predict(x, return_probs=True)
    np.testing.assert_array_equal(js["predict"]["classes"], ref.classes)
    np.testing.assert_array_equal(js["predict"]["exits"], ref.exit_index)
    np.testing.assert_allclose(js["predict"]["probs"], ref.probs.ravel(), rtol=0, atol=1e-6)
    steps = list(demo.model.progressive(x))
    assert [s["stage"] for s in js["progressive"]] == list(range(len(steps)))
    for j, (step, want) in enumerate(zip(js["progressive"], steps, strict=True)):
        np.testing.assert_array_equal(step["classes"], want.classes)
        np.testing.assert_array_equal(step["exits"], np.full(len(x), j))
        np.testing.assert_allclose(step["confidences"], want.confidences, rtol=0, atol=1e-6)
        np.testing.assert_allclose(step["probs"], want.probs.ravel(), rtol=0, atol=1e-6)
        last = j == len(steps) - 1
        leaves = np.ones(len(x), bool) if last else want.confidences >= np.float32(demo.model.thresholds[j])
        np.testing.assert_array_equal(np.array(step["leaves"], bool), leaves)


def test_node_compares_confidence_and_threshold_in_float32_as_python(demo, tmp_path):
    # A threshold just above a sample's stage-0 confidence in float64, equal to it in float32:
    # the sample leaves at stage 0 by the float32 rule, and would not by a float64 compare.
    x = demo.x[:8]
    confidence = float(next(demo.model.progressive(x[:1])).confidences[0])
    threshold = float(np.nextafter(confidence, 2.0))
    assert threshold > confidence and np.float32(threshold) == np.float32(confidence)
    bundle = shutil.copytree(demo.bundle, tmp_path / "edge.hapi")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["stages"][0]["threshold"] = threshold
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    np.save(tmp_path / "x.npy", x)
    ref = EarlyExitModel.load(bundle).predict(x)
    assert ref.exit_index[0] == 0
    done = _run_node(CLI, bundle, tmp_path / "x.npy")
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(json.loads(done.stdout)["exits"], ref.exit_index)


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_node_applies_the_same_exit_rule_and_threshold_rule_as_python():
    """``leaves`` and ``checkThreshold`` (manifest.mjs) against hapi_onnx.choice, on edge values:
    equal to the threshold, 1 ulp either side in float32, NaN, infinities, values off the float32 grid."""
    from test_choice import BAD, edge_values

    thresholds, conf = edge_values()
    conf = [*conf.tolist(), 0.9, 0.1 + 0.2]  # doubles that round to a float32 on either side
    thresholds = [*thresholds.tolist(), 0.9, 0.30000001]
    candidates = [*BAD[:7], -0.0, 0.0, 1.5, float(np.finfo(np.float32).max), 3.4028235e38, 3.4028236e38]

    def encode(v):  # JSON has no NaN or infinities: numbers travel as strings JS's Number() reads back
        return {"number": repr(float(v)).replace("inf", "Infinity")} if isinstance(v, float) else {"value": v}

    code = """
import { leaves, checkThreshold } from './runtime-js/src/manifest.mjs';
const decode = (v) => ('number' in v ? Number(v.number) : v.value);
const { conf, thresholds, candidates } = JSON.parse(process.argv[1]);
const checked = candidates.map(decode).map((v) => {
  try { return Object.is(checkThreshold(v), -0) ? '-0' : checkThreshold(v); } catch (e) { return null; }
});
const rule = thresholds.map(decode).map((t) => conf.map(decode).map((c) => leaves(c, t)));
console.log(JSON.stringify({ rule, checked }));
"""
    payload = {"conf": [encode(float(c)) for c in conf], "thresholds": [encode(float(t)) for t in thresholds],
               "candidates": [encode(float(v)) if isinstance(v, float) else encode(v) for v in candidates]}
    run = _run_node("--input-type=module", "-e", code, json.dumps(payload))
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["rule"] == [[bool(leaves(c, t)) for c in conf] for t in thresholds]

    def python_check(v):
        try:
            t = check_threshold(v)
        except HapiError:
            return None
        return "-0" if math.copysign(1, t) < 0 and t == 0 else t

    assert got["checked"] == [python_check(v) for v in candidates]
    assert got["checked"][2] is None and got["checked"][-1] is None  # NaN and past float32 refused


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_node_and_python_refuse_a_broken_bundle_with_one_clear_error(demo, broken, name):
    expected = BROKEN[name][1]
    assert expected in _one_line_error(_run_node(CLI, broken[name], demo.images))
    with pytest.raises(HapiError, match="sha256|format_version|missing"):
        EarlyExitModel.load(broken[name])


def _edit(change):
    """A bundle damage that rewrites manifest.json with ``change(manifest)``."""

    def damage(bundle: Path) -> None:
        manifest = json.loads((bundle / "manifest.json").read_text())
        change(manifest)
        (bundle / "manifest.json").write_text(json.dumps(manifest))

    return damage


def _set(*path_and_value):
    *path, key, value = path_and_value

    def change(manifest):
        target = manifest
        for part in path:
            target = target[part]
        target[key] = value

    return change


def _symlink_stage(bundle: Path) -> None:
    stage = sorted((bundle / "stages").iterdir())[0]
    stage.rename(bundle / "elsewhere.onnx")
    stage.symlink_to(bundle / "elsewhere.onnx")


# Manifests and files both runtimes must refuse at load (the manifest is not hashed, the stages are).
MALFORMED = {
    "kind": _edit(_set("kind", "hapi-onnx design")),
    "exit_rule": _edit(_set("exit_rule", "confidence > threshold")),
    "num_classes": _edit(_set("num_classes", 0)),
    "labels": _edit(_set("labels", ["a", "b"])),
    "no_stages": _edit(_set("stages", [])),
    "file_escapes": _edit(_set("stages", 0, "file", "stages/../../x.onnx")),
    "sha256_case": _edit(lambda m: m["stages"][0].update(sha256=m["stages"][0]["sha256"].upper())),
    "negative_threshold": _edit(_set("stages", 0, "threshold", -0.5)),
    "string_threshold": _edit(_set("stages", 0, "threshold", "0.5")),
    "final_threshold": _edit(_set("stages", -1, "threshold", 0.5)),
    "input_rank": _edit(_set("input", "shape", [None, 28, 28])),
    "input_dtype": _edit(_set("input", "dtype", "float16")),
    "input_size": _edit(_set("input", "shape", [None, 1, 32, 32])),
    "broken_chain": _edit(_set("stages", 1, "input", "other")),
    "wrong_output": _edit(_set("stages", 0, "outputs", "probs", "not_an_output")),
    "num_classes_vs_probs": _edit(lambda m: m.update(num_classes=11, labels=None)),
    "duplicate_names": _edit(_set("stages", 1, "name", "exit0")),
    "not_json": lambda bundle: (bundle / "manifest.json").write_text("{not json"),
    "symlinked_stage": _symlink_stage,
}


def test_node_and_python_refuse_the_same_malformed_bundles(demo, tmp_path):
    copies = {}
    for name, damage in MALFORMED.items():
        copies[name] = shutil.copytree(demo.bundle, tmp_path / f"{name}.hapi", symlinks=True)
        damage(copies[name])
    done = _run_node(JS / "test" / "load_errors.mjs", *copies.values())
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout)
    for name, bundle in copies.items():
        with pytest.raises(HapiError):
            EarlyExitModel.load(bundle)
        assert errors[str(bundle)], f"runtime-js loaded the {name!r} bundle"
    assert "not a hapi-onnx bundle file" in errors[str(copies["kind"])]
    assert "missing outputs ['not_an_output']" in errors[str(copies["wrong_output"])].replace('"', "'")
    assert "is a symlink" in errors[str(copies["symlinked_stage"])]


def test_node_cli_refuses_zip_bundles_bad_images_and_bad_usage(demo, tmp_path):
    archive = tmp_path / "model.hapi.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(demo.bundle.rglob("*")):
            z.write(f, f.relative_to(demo.bundle).as_posix())
    assert "zip bundles" in _one_line_error(_run_node(CLI, archive, demo.images))
    np.save(tmp_path / "f64.npy", demo.x[:2].astype(np.float64))
    assert "float32" in _one_line_error(_run_node(CLI, demo.bundle, tmp_path / "f64.npy"))
    np.save(tmp_path / "wrong.npy", demo.x[:2, :, :14])
    assert "(N, 1, 28, 28)" in _one_line_error(_run_node(CLI, demo.bundle, tmp_path / "wrong.npy"))
    assert "--batch must be a positive integer" in _one_line_error(
        _run_node(CLI, demo.bundle, demo.images, "--batch", "0"))
    assert "expected BUNDLE_DIR and IMAGES.npy" in _one_line_error(_run_node(CLI, demo.bundle))


# -- Chromium -----------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(root: Path) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_browser_page_gives_the_python_answers_and_refuses_broken_bundles(demo, broken, tmp_path):
    chromium = os.environ.get("HAPI_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        _unavailable("chromium not found: `apt-get install chromium` (Debian) to run the browser test")
    # The page as `make web` serves it (repository root), plus this test's bundles under /b/.
    site = tmp_path / "site"
    (site / "b").mkdir(parents=True)
    for part in ("examples", "runtime-js"):
        (site / part).symlink_to(REPO / part)
    x = demo.x[:BROWSER_DIGITS]
    np.save(site / "b" / "samples.npy", x)
    shutil.copytree(demo.bundle, site / "b" / "model.hapi")
    for name, path in broken.items():
        shutil.copytree(path, site / "b" / f"{name}.hapi")
    ref = demo.model.predict(x)  # the page classifies the digits as one batch too
    sample = int(np.argmax(ref.exit_index))  # the first digit that runs deepest
    screenshot = tmp_path / "web-example.png"
    server = _serve(site)
    try:
        page = f"http://127.0.0.1:{server.server_port}/examples/web/index.html?bundle=/b/model.hapi/&samples=/b/samples.npy"
        plan = {"page": page, "screenshot": str(screenshot), "sample": sample, "chromium": chromium,
                "broken": {name: f"/b/{name}.hapi/" for name in broken}}
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        done = _run_node(JS / "test" / "browser_check.mjs", tmp_path / "plan.json")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    print(f"screenshot of the page after one classification: {screenshot}")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [m for m in out["console"] if m.startswith("pageerror")], out["console"]

    np.testing.assert_array_equal(out["batch"]["classes"], ref.classes)
    np.testing.assert_array_equal(out["batch"]["exits"], ref.exit_index)
    np.testing.assert_allclose(out["batch"]["confidences"], ref.confidences, rtol=0, atol=1e-5)

    single = out["single"]  # one digit stage by stage: the confidence at every stage it reached
    assert (single["class"], single["exit"]) == (ref.classes[sample], ref.exit_index[sample])
    steps = list(demo.model.progressive(x[sample : sample + 1]))[: single["exit"] + 1]
    assert [s["name"] for s in single["stages"]] == list(demo.model.exit_names[: single["exit"] + 1])
    np.testing.assert_allclose([s["confidence"] for s in single["stages"]],
                               [s.confidences[0] for s in steps], rtol=0, atol=1e-5)
    assert all(s["ms"] >= 0 for s in single["stages"])

    assert out["drawn"]["class"] == 7  # a "7" drawn with the mouse on the pad

    for name, (_, expected) in BROKEN.items():
        error = out["errors"][name]
        assert error["status"] == "error" and expected in error["error"], error
