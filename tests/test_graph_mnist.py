"""The demo MNIST model: its candidates are the stem and the nine residual blocks, and they chain back.

Skipped (with the reason shown by ``-ra``) until ``examples/mnist/train.py`` has written the model.
"""

from pathlib import Path

import numpy as np
import pytest
from graph_models import run_chain, run_model

from hapi_onnx.graph import candidate_exits, input_spec, load_model, split_model

MNIST_MODEL = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.onnx"


def check_mnist_candidates_chain_back(path: Path, images: np.ndarray) -> None:
    model = load_model(path)
    cands = candidate_exits(model)
    shapes = [tuple(c.shape[1:]) for c in cands]
    assert shapes == [(16, 28, 28)] * 4 + [(32, 14, 14)] * 3 + [(64, 7, 7)] * 3
    name = input_spec(model).name
    expected = run_model(model, {name: images})[0]
    got = run_chain(split_model(model, [c.tensor for c in cands]), images)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.skipif(not MNIST_MODEL.is_file(), reason="examples/mnist/model.onnx not built yet (train.py)")
def test_mnist_candidates_chain_back_on_real_test_digits():
    from hapi_onnx.data import mnist_splits

    test = mnist_splits(seed=0)["test"]
    check_mnist_candidates_chain_back(MNIST_MODEL, test.x[:256])


def test_torch_exported_backbone_chains_back(tmp_path):
    """The same check on the untrained demo backbone exported by torch, so it runs before training too."""
    pytest.importorskip("torch")
    from hapi_onnx.export.torch_export import export_torch

    factory = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.py"
    path = tmp_path / "untrained.onnx"
    export_torch(f"{factory}:build_model", None, (1, 1, 28, 28), path)
    images = np.random.default_rng(0).uniform(0, 1, size=(64, 1, 28, 28)).astype(np.float32)
    check_mnist_candidates_chain_back(path, images)
