"""``build`` with default settings on a MobileNetV2-style model: every candidate exit is kept (23+,
more than the exact optimiser's limit), so the search runs its local-search optimiser and the
build completes, from attach to the evaluation on the held-out split."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hapi_onnx.data import mnist_splits
from hapi_onnx.graph import load_model
from hapi_onnx.graph.cuts import candidate_exits
from hapi_onnx.pipeline import BuildConfig, build, build_report
from hapi_onnx.search.design_search import EXACT_CANDIDATES

sys.path.insert(0, str(Path(__file__).parent))
from graph_models import NetBuilder  # noqa: E402

# MobileNetV2's stages (expansion t, channels c, blocks n, stride s), channels scaled down for 28 x 28.
STAGES = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 3, 2), (4, 24, 4, 1), (4, 32, 3, 1), (4, 48, 3, 2), (4, 64, 1, 1))


def mobilenetv2_mnist(seed: int = 0):
    """Stem, 17 inverted residual blocks in MobileNetV2's seven stages, 1x1 conv, head; 1 x 28 x 28 in."""
    nb = NetBuilder(seed, channels=1, size=28)
    x, cin = nb.relu6(nb.bn(nb.conv(nb.input, 1, 16), 16)), 16
    for t, c, n, s in STAGES:
        for i in range(n):
            stride, hidden = (s if i == 0 else 1), cin * t
            y = x if t == 1 else nb.relu6(nb.bn(nb.conv(x, cin, hidden, k=1), hidden))
            y = nb.relu6(nb.bn(nb.conv(y, hidden, hidden, k=3, stride=stride, group=hidden), hidden))
            y = nb.bn(nb.conv(y, hidden, c, k=1), c)
            x, cin = (nb.op("Add", [y, x]) if stride == 1 and cin == c else y), c
    last = nb.relu6(nb.bn(nb.conv(x, cin, 128, k=1), 128))
    return nb.build(nb.head(last, 128), name="mobilenetv2_mnist")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mbv2")
    model = root / "mbv2.onnx"
    model.write_bytes(mobilenetv2_mnist().SerializeToString())
    splits = mnist_splits(seed=0)
    data = root / "data"
    for name, size in (("train", 400), ("calib", 300), ("test", 200)):
        splits[name].subset(np.arange(size)).save(data / f"{name}.npz")
    # Default settings (every candidate, automatic optimiser); only the timing budget is cut short.
    config = BuildConfig.from_options(dict(model=str(model), data=str(data), max_accuracy_drop=2.0,
                                           profile_budget_s=0.05, eval_batch_size=8))
    return model, build(config, root / "work")


def test_the_model_offers_more_candidates_than_the_exact_limit(built):
    model, _ = built
    assert len(candidate_exits(load_model(model))) >= 23 > EXACT_CANDIDATES


def test_build_keeps_every_candidate_and_searches_them_all(built):
    model, result = built
    design = json.loads(result.paths["design"].read_text())
    assert len(design["search"]["candidates"]) == len(candidate_exits(load_model(model)))
    assert design["search"]["optimiser"] == "local" and design["search"]["exact"] is False
    report = json.loads(result.paths["report"].read_text())
    assert report["num_samples"] == 200
    lines = "\n".join(build_report(result))
    assert "speed-up" in lines and "held-out test split" in lines
    assert "search     local optimiser over" in lines and "not proven optimal" in lines


def test_grafting_heads_leaves_a_model_with_constant_nodes_unchanged():
    """torch exports ReLU6 as Clip with Constant bounds; onnx-graphsurgeon's import names their
    tensors in place, which changed the source model's fingerprint and made the build's evaluate
    step refuse the full model."""
    from hapi_onnx.exits.attach import graft_heads
    from hapi_onnx.graph.load import model_fingerprint

    model = load_model(Path(__file__).resolve().parents[1] / "examples" / "mnist_mbv2" / "model.onnx")
    assert any(node.op_type == "Constant" for node in model.graph.node)
    before = model_fingerprint(model)
    graft_heads(model, [])
    assert model_fingerprint(model) == before
