"""attach_exits on a seeded test ResNet: grafting, layout, fidelity of the original output, errors."""

import numpy as np
import onnx
import pytest
from graph_models import resnet, run_model

from hapi_onnx.data import Dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.attach import attach_exits
from hapi_onnx.exits.heads import heldout_split
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import candidate_exits, load_model, model_fingerprint


def labelled(model: onnx.ModelProto, n: int, seed: int) -> Dataset:
    """Random images labelled by the (mean-centred) logits of the network: learnable, all classes."""
    x = np.random.default_rng(seed).normal(size=(n, 3, 16, 16)).astype(np.float32)
    logits = run_model(load_model(model), {"image": x})[0]
    return Dataset(x, (logits - logits.mean(axis=0)).argmax(axis=1))


@pytest.fixture(scope="module")
def net():
    return resnet()


@pytest.fixture(scope="module")
def train(net):
    return labelled(net.model, 300, seed=0)


@pytest.fixture(scope="module")
def attached(net, train):
    before = model_fingerprint(net.model)
    result = attach_exits(net.model, train)
    assert model_fingerprint(net.model) == before, "attach_exits must not modify its input"
    return result


def test_heads_go_on_every_candidate_in_graph_order(net, attached):
    layout = attached.layout
    assert [e.tensor for e in layout.exits] == net.boundaries
    assert [e.tensor for e in layout.exits] == [c.tensor for c in candidate_exits(load_model(net.model))]
    assert [e.name for e in layout.exits] == ["exit0", "exit1", "exit2", "exit3"]
    assert [o.name for o in attached.model.graph.output] == [net.model.graph.output[0].name] + [
        f"exit{k}_prob" for k in range(4)
    ]
    assert layout == ExitLayout.from_model(attached.model)
    assert layout.final_output == net.model.graph.output[0].name and not layout.final_is_probability
    assert layout.num_classes == 10 and layout.input == "image"
    assert layout.source_fingerprint == model_fingerprint(load_model(net.model))
    onnx.checker.check_model(attached.model, full_check=True)


def test_original_output_is_unchanged_and_heads_output_probabilities(net, attached):
    x = np.random.default_rng(9).normal(size=(16, 3, 16, 16)).astype(np.float32)
    original = run_model(load_model(net.model), {"image": x})[0]
    outs = run_model(attached.model, {"image": x})
    np.testing.assert_allclose(outs[0], original, atol=1e-5, rtol=0)
    for probs in outs[1:]:
        assert probs.shape == (16, 10) and (probs >= 0).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_grafted_heads_reproduce_the_fitted_accuracies(attached, train):
    outs = run_model(attached.model, {"image": train.x})[1:]
    fit_idx, held_idx = heldout_split(len(train))
    for report, probs in zip(attached.heads, outs, strict=True):
        correct = probs.argmax(axis=1) == train.y
        assert abs(correct[fit_idx].mean() - report.train_accuracy) <= 1 / len(fit_idx)
        assert abs(correct[held_idx].mean() - report.heldout_accuracy) <= 1 / len(held_idx)
        assert report.temperature > 0 and report.fit_seconds >= 0
    fractions = [h.mac_fraction for h in attached.heads]
    assert fractions == sorted(fractions) and 0 < fractions[0] < fractions[-1] <= 1
    # the deepest head reads the map the classifier pools: it beats the shallowest one
    assert attached.heads[-1].train_accuracy > attached.heads[0].train_accuracy


def test_saved_model_fingerprint_is_stable(attached, tmp_path):
    path = tmp_path / "ee.onnx"
    attached.save(path)
    assert model_fingerprint(onnx.load(path)) == model_fingerprint(attached.model)
    assert model_fingerprint(load_model(path)) == model_fingerprint(attached.model)


def test_named_exits_max_candidates_and_grid_pooling(net, train):
    small = train.subset(np.arange(120))
    b = net.boundaries
    named = attach_exits(net.model, small, exits=[b[2], b[0]], pooling="gap+2x2")
    assert [e.tensor for e in named.layout.exits] == [b[0], b[2]]
    assert [h.feature_dim for h in named.heads] == [16 * 5, 32 * 5]
    capped = attach_exits(net.model, small, max_candidates=2)
    assert len(capped.heads) == 2 and capped.layout.exits[-1].tensor == b[-1]
    x = train.x[:4]
    np.testing.assert_allclose(run_model(named.model, {"image": x})[0],
                               run_model(load_model(net.model), {"image": x})[0], atol=1e-5)


def test_feature_progress_is_reported(net, train):
    calls = []
    attach_exits(net.model, train.subset(np.arange(50)), exits=[net.boundaries[1]], batch_size=20,
                 progress=lambda done, total: calls.append((done, total)))
    assert calls == [(20, 50), (40, 50), (50, 50)]


@pytest.mark.parametrize("bad, message", [
    (lambda m, d: attach_exits(m, d, exits=["nope"]), "not a tensor of this model"),
    (lambda m, d: attach_exits(m, d, exits=["image"]), "model's input"),
    (lambda m, d: attach_exits(m, d, exits=[], max_candidates=None), "No exits"),
    (lambda m, d: attach_exits(m, d, exits=["relu_9"], max_candidates=2), "not both"),
    (lambda m, d: attach_exits(m, d, pooling="max"), "pooling must be one of"),
    (lambda m, d: attach_exits(m, Dataset(d.x[:, :1], d.y)), "C x H x W = 1 x 16 x 16"),
    (lambda m, d: attach_exits(m, Dataset(d.x)), "has no labels"),
    (lambda m, d: attach_exits(m, Dataset(d.x, np.where(d.y == 0, 12, d.y))), "label 12"),
    (lambda m, d: attach_exits(m, Dataset(d.x, d.y % 3, ("a", "b", "c"))), "names 3 classes"),
])
def test_user_errors(net, train, bad, message):
    with pytest.raises(HapiError, match=message):
        bad(net.model, train.subset(np.arange(40)))


def test_refuses_to_attach_to_an_ee_model(attached, train):
    with pytest.raises(HapiError, match="already carries early exits"):
        attach_exits(attached.model, train)


def test_cli_attach_writes_model_and_table(net, train, tmp_path, run_cli):
    onnx.save(net.model, tmp_path / "m.onnx")
    train.subset(np.arange(100)).save(tmp_path / "train.npz")
    result = run_cli("attach", tmp_path / "m.onnx", "--data", tmp_path / "train.npz", "-o", tmp_path / "ee.onnx",
                     "--max-candidates", "2")
    assert result.exit_code == 0, result.output
    assert "held-out %" in result.output and "exit1" in result.output
    assert len(ExitLayout.from_model(onnx.load(tmp_path / "ee.onnx")).exits) == 2


def test_cli_attach_bad_data_exits_2_and_writes_nothing(net, train, tmp_path, run_cli):
    onnx.save(net.model, tmp_path / "m.onnx")
    x = train.x[:20].copy()
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=train.y[:20])
    np.savez(tmp_path / "small.npz", x=train.x[:20, :, :8, :8], y=train.y[:20])
    for data, message in (("nan.npz", "NaN"), ("small.npz", "model expects"), ("missing.npz", "does not exist")):
        result = run_cli("attach", tmp_path / "m.onnx", "--data", tmp_path / data, "-o", tmp_path / "ee.onnx")
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.startswith("error: ")
    result = run_cli("attach", tmp_path / "m.onnx", "-o", tmp_path / "ee.onnx")
    assert result.exit_code == 2 and "--data" in result.output
    assert not (tmp_path / "ee.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ee.onnx")]
