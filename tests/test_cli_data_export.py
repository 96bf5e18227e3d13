"""CLI: ``hapi-onnx data mnist`` and ``hapi-onnx export`` (thin shells over the library)."""

import numpy as np
from click.testing import CliRunner
from hapi_onnx_cli.main import cli

from hapi_onnx.data import load_dataset


def test_data_mnist_writes_three_splits_and_prints_balance(tmp_path):
    result = CliRunner().invoke(cli, ["data", "mnist", "-o", str(tmp_path / "d"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "train.npz: 3000 images 1x28x28, per class [300 300 300" in result.output
    assert "test.npz: 1000 images" in result.output
    test = load_dataset(tmp_path / "d" / "test.npz")
    np.testing.assert_array_equal(test.class_counts(), np.full(10, 100))


def test_data_mnist_onto_a_file_fails_with_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    result = CliRunner().invoke(cli, ["data", "mnist", "-o", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: ") and len(result.output.strip().splitlines()) == 1
