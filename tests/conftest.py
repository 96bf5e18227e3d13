"""Shared pytest fixtures."""

import pytest
from click.testing import CliRunner
from hapi_onnx_cli.main import cli


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
