"""The wheel is a release artifact: built from the sources alone, it installs into a fresh virtual
environment outside the checkout and runs there (the CLI, a build, the runtime).

Offline and quick: the wheel is built without build isolation (the project venv's setuptools) and
installed with ``--no-deps --no-index``; its dependencies (onnx, onnxruntime, numpy, scipy, click,
...) are the project venv's, made visible to the new venv by one ``.pth`` line, so nothing is
downloaded. (``runtime-js``'s tarball is installed into an app by docs/your-model.md, run by
``tests/test_docs.py``.)
"""

import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "hapi_onnx", "cli", "profiles")
DEMO = REPO / "examples" / "mnist" / "model.onnx"


def _modules(root: Path, package: str) -> set[str]:
    return {package + "." + ".".join(p.relative_to(root).with_suffix("").parts) for p in root.rglob("*.py")}


def test_the_wheel_installs_into_a_fresh_venv_and_runs_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("hapi_onnx-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "zz_project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    app = tmp_path / "elsewhere"  # not the checkout: nothing can come from the sources
    app.mkdir()

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([*args], cwd=app, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done

    assert "Commands:" in run(str(venv / "bin" / "hapi-onnx"), "--help").stdout
    found = run(str(python), "-c", "import hapi_onnx, hapi_onnx_cli, pkgutil; "
                "print(hapi_onnx.__file__); "
                "print(' '.join(m.name for p in (hapi_onnx, hapi_onnx_cli) "
                "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')))").stdout.split("\n")
    assert Path(found[0]).is_relative_to(purelib), found[0]  # the wheel's copy, not the checkout's
    installed = set(found[1].split())
    expected = _modules(REPO / "hapi_onnx", "hapi_onnx") | _modules(REPO / "cli", "hapi_onnx_cli")
    expected = {m.removesuffix(".__init__") for m in expected} - {"hapi_onnx", "hapi_onnx_cli"}
    assert expected <= installed, sorted(expected - installed)  # every module of the sources is in the wheel

    # a quick build from the installed command, then the bundle in the runtime (numpy + onnxruntime)
    run(str(venv / "bin" / "hapi-onnx"), "-q", "build", str(DEMO), "--max-accuracy-drop", "1", "--max-candidates", "2",
        "--profile-budget", "0.05", "--workdir", "w")
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    np.save(app / "x.npy", x)
    out = run(str(python), "-c", "import numpy as np; from hapi_onnx.runtime import EarlyExitModel; "
              "m = EarlyExitModel.load('w/model.hapi'); print(len(m.predict(np.load('x.npy')).classes))").stdout
    assert out.strip() == "2"
