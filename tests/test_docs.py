"""What a newcomer reads is what the tool does: runnable doc blocks run, and help texts say the code's numbers.

Every block of the README and docs/ marked runnable (:mod:`docs_blocks`) is run here, page by page,
in a fresh folder. docs/your-model.md goes on past its blocks: the Node app and the web page
(served, in headless Chromium) must give the Python runtime's answers on the same samples.
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest
from docs_blocks import PAGES, REPO, blocks, run, workspace

from hapi_onnx.runtime import EarlyExitModel

REQUIRE_JS = os.environ.get("HAPI_REQUIRE_JS") == "1"


def _has(tool: str) -> bool:
    return shutil.which(tool) is not None


def test_there_are_runnable_blocks_on_the_pages_a_newcomer_reads():
    runnable = {page.name: [b for b in blocks(page) if b.file is None] for page in PAGES}
    assert runnable["README.md"] and runnable["your-model.md"], runnable


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_runnable_blocks_run(page, tmp_path):
    env = workspace(tmp_path)
    ran = 0
    for block in blocks(page):
        if block.needs is not None and not _has(block.needs):
            if REQUIRE_JS:
                pytest.fail(f"{block} needs {block.needs} (HAPI_REQUIRE_JS=1)")
            continue
        result = run(block, tmp_path, env)
        assert result.returncode == 0, f"{block} failed:\n{block.text}\n--- stdout\n{result.stdout[-3000:]}\n" \
                                       f"--- stderr\n{result.stderr[-3000:]}"
        ran += 1
    assert ran
    if page.name == "your-model.md":
        _your_model_runs_the_same_everywhere(tmp_path, env)


def _your_model_runs_the_same_everywhere(folder, env):
    """The page's bundle in Python, in its Node app and in its web page: the same classes and exits."""
    model = EarlyExitModel.load(folder / "mine" / "build" / "model.hapi")
    x = np.load(folder / "mine" / "samples.npy")
    pred = model.predict(x)
    expected = {"classes": [model.labels[c] for c in pred.classes],
                "exits": [model.exit_names[e] for e in pred.exit_index]}
    assert model.manifest.preprocessing is not None  # the path the page takes records it
    if not (_has("node") and _has("npm")):
        if REQUIRE_JS:
            pytest.fail("node and npm are needed for docs/your-model.md's app (HAPI_REQUIRE_JS=1)")
        return
    app = folder / "mine" / "app"
    done = subprocess.run(["node", "app.mjs"], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected
    installed = json.loads((app / "package.json").read_text())["dependencies"]
    assert list(installed) == ["hapi-onnx-runtime"] and installed["hapi-onnx-runtime"].endswith(".tgz")
    assert not (app / "node_modules" / "hapi-onnx-runtime").is_symlink()  # a copy from the tarball, not a link

    chromium = os.environ.get("HAPI_CHROMIUM") or shutil.which("chromium")
    playwright = REPO / "runtime-js" / "node_modules" / "playwright-core"
    if chromium is None or not playwright.is_dir():
        if REQUIRE_JS:
            pytest.fail("chromium and runtime-js/node_modules are needed for the page (HAPI_REQUIRE_JS=1)")
        return
    handler = functools.partial(_Quiet, directory=str(folder / "mine"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/app/index.html"
        done = subprocess.run(["node", str(REPO / "runtime-js" / "test" / "page_check.mjs"), url, chromium],
                              cwd=REPO, capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert page["status"] == "done" and not page["console"], page
    assert page["result"] == expected


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# -- help texts -----------------------------------------------------------------------------------


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", ["search", "build"])
def test_the_guarantee_help_states_the_split_the_code_uses(run_cli, command):
    from hapi_onnx.search.guarantee import split_indices

    search, certify = (len(part) for part in split_indices(1000))
    text = _flat(run_cli(command, "--help").output)
    assert f"split: search on {search // 10}% of the calibration data, certify on the other {certify // 10}%" in text
    assert "half" not in text
    if command == "search":
        assert f"searched on {search // 10}% of the trace and certified on the other {certify // 10}%" in text


def test_top_level_help_says_what_calibrate_and_run_take(run_cli):
    commands = _flat(run_cli("--help").output.split("Commands:")[1])
    calibrate = commands.split(" calibrate ")[1].split(" profile ")[0]
    run = commands.split(" run ")[1].split(" evaluate ")[0]
    assert "labelled set" not in calibrate and "labelled or not" in calibrate
    assert "images" in run and "folder" in run


def test_no_text_asks_pip_for_hapi_onnx_from_an_index():
    """hapi-onnx installs from a checkout or a wheel: `pip install hapi-onnx[...]` finds nothing on PyPI."""
    from hapi_onnx.lazy import extra_requirement, lazy_import

    pattern = re.compile(r"pip install(?:\s+--?[\w-]+)*\s+['\"]?hapi-onnx(?:\[[^\]]*\])?['\"]?(?=[\s&;`'\"]|$)")
    files = [*PAGES, *REPO.glob("hapi_onnx/**/*.py"), *REPO.glob("cli/*.py"), REPO / "Makefile"]
    found = [f"{f.relative_to(REPO)}: {m.group(0)}" for f in files for m in pattern.finditer(f.read_text())]
    assert not found, found
    for extra, requirement in (("torch", "torch=="), ("images", "Pillow"), ("plot", "matplotlib")):
        assert extra_requirement(extra).startswith(requirement)
    with pytest.raises(Exception, match=r"pip install 'torch==[\d.]+' \(hapi-onnx's 'torch' extra\)"):
        lazy_import("hapi_onnx_no_such_module", "torch")
