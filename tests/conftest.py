"""Shared pytest fixtures."""

import json

import pytest
from click.testing import CliRunner
from hapi_onnx_cli.main import cli

from hapi_onnx.profile.presets import load_preset

# A tiny timing policy: profiles in a fraction of a second, for tests that check what is timed.
FAST_TIMING = {
    "warmup_runs": 2,
    "warmup_s": 0.0,
    "min_runs": 10,
    "max_runs": 40,
    "target_rel_precision": 0.05,
    "confidence": 0.95,
    "time_budget_s": 0.05,
}


@pytest.fixture
def run_cli():
    """Invoke the ``hapi-onnx`` CLI in-process: ``run_cli("exits", "m.onnx")`` -> click Result."""

    def invoke(*args: str):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh temporary directory, also made the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def fast_preset(tmp_path_factory):
    """cpu-1t with :data:`FAST_TIMING`, as a preset file (also exercises path resolution)."""
    data = load_preset("cpu-1t").to_dict()
    data.update(name="cpu-1t-fast", timing=FAST_TIMING)
    path = tmp_path_factory.mktemp("preset") / "fast.json"
    path.write_text(json.dumps(data))
    return path

