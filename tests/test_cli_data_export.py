"""CLI: ``hapi-onnx data mnist`` and ``hapi-onnx export`` (thin shells over the library)."""

import numpy as np
import pytest
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


SMALL_FACTORY = '''
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
'''


@pytest.fixture()
def checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "tiny.py").write_text(SMALL_FACTORY)
    namespace = {}
    exec(SMALL_FACTORY, namespace)
    torch.save(namespace["build"]().state_dict(), tmp_path / "tiny.pt")
    return tmp_path / "tiny.pt"


def test_export_checkpoint_prints_verification(checkpoint, tmp_path):
    out = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(cli, [
        "export", str(checkpoint), "--factory", f"{tmp_path / 'tiny.py'}:build",
        "--input-shape", "1,1,28,28", "-o", str(out), "--data", str(_mnist_test(tmp_path)),
    ])
    assert result.exit_code == 0, result.output
    assert "verified against PyTorch: max |diff|" in result.output and "on 32 " in result.output
    assert "opset 17, input 'input' N x 1 x 28 x 28, outputs 'logits'" in result.output
    assert out.is_file()
    again = CliRunner().invoke(cli, ["export", str(out), "-o", str(tmp_path / "again.onnx"), "--opset", "18"])
    assert again.exit_code == 0, again.output
    assert "verified against the source ONNX model: max |diff| 0.00e+00" in again.output


def _mnist_test(tmp_path):
    from hapi_onnx.data import load_mnist_5k

    load_mnist_5k().subset(np.arange(40)).save(tmp_path / "digits.npz")
    return tmp_path / "digits.npz"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{ckpt}"], "give --factory"),
        (["{ckpt}", "--factory", "{dir}/tiny.py:build"], "needs --input-shape"),
        (["{ckpt}", "--factory", "{dir}/tiny.py:build", "--input-shape", "1,a,28,28"], "four positive ints N,C,H,W"),
        (["{ckpt}", "--factory", "{dir}/tiny.py", "--input-shape", "1,1,28,28"], "must look like"),
        (["{ckpt}", "--factory", "{dir}/tiny.py:missing", "--input-shape", "1,1,28,28"], "no attribute"),
        (["{dir}/none.pt", "--factory", "{dir}/tiny.py:build", "--input-shape", "1,1,28,28"],
         "does not exist"),
        (["{dir}/none.onnx"], "does not exist"),
        (["{ckpt}", "--factory", "{dir}/tiny.py:build", "--input-shape", "1,1,28,28", "--opset", "9"],
         "opset must be 13..20"),
        (["{ckpt}", "--factory", "{dir}/tiny.py:build", "--input-shape", "1,1,28,28", "--tolerance", "-1"],
         "tolerance must be"),
    ],
)
def test_export_bad_inputs_exit_2_with_one_line(checkpoint, tmp_path, args, message):
    out = tmp_path / "out.onnx"
    argv = ["export", *(a.format(ckpt=checkpoint, dir=tmp_path) for a in args), "-o", str(out)]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
