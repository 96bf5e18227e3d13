"""attach_exits on a seeded test ResNet: grafting, layout, fidelity of the original output, errors."""

import numpy as np
import onnx
import pytest
from graph_models import resnet, run_model

from hapi_onnx.data import Dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.attach import attach, attach_exits
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
    assert calls == [(0, 50), (20, 50), (40, 50), (50, 50)]


@pytest.mark.parametrize("bad, message", [
    (lambda m, d: attach_exits(m, d, exits=["nope"]), "not a tensor of this model"),
    (lambda m, d: attach_exits(m, d, exits=["image"]), "model's input"),
    (lambda m, d: attach_exits(m, d, exits=[], max_candidates=None), "No exits"),
    (lambda m, d: attach_exits(m, d, exits=["relu_9"], max_candidates=2), "not both"),
    (lambda m, d: attach_exits(m, d, pooling="max"), "pooling must be one of"),
    (lambda m, d: attach_exits(m, Dataset(d.x[:, :1], d.y)), "are 1 x 16 x 16 but the model expects 3 x 16 x 16"),
    (lambda m, d: attach_exits(m, Dataset(d.x)), "has no labels"),
    (lambda m, d: attach_exits(m, Dataset(d.x, np.where(d.y == 0, 12, d.y))), "label 12"),
    (lambda m, d: attach_exits(m, Dataset(d.x, d.y % 3, ("a", "b", "c"))), "names 3 classes"),
    (lambda m, d: attach_exits(m, Dataset(d.x, np.full(len(d), 4))), r"samples of 1 class\(es\) \(4\).*at least 2"),
    (lambda m, d: attach_exits(m, Dataset(d.x, d.y % 3)), r"no sample of class\(es\) 3, 4, 5, 6, 7, 8, 9;"),
    (lambda m, d: attach_exits(m, Dataset(d.x, d.y % 9, tuple("abcdefghij"))), r"class\(es\) 9 \('j'\);"),
    (lambda m, d: attach(m), "needs labelled training data"),
    (lambda m, d: attach(m, d, from_outputs=True), "takes no data"),
    (lambda m, d: attach(m, from_outputs=True, exits=["relu_3"], max_candidates=1), "takes no exits, max_candidates"),
    (lambda m, d: attach(m, d, final_output="nope"), "has no output 'nope'"),
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
    x = train.x.copy()  # every class present: the NaN is found while the features stream
    x[3, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=train.y)
    np.savez(tmp_path / "small.npz", x=train.x[:20, :, :8, :8], y=train.y[:20])
    for data, message in (("nan.npz", "NaN"), ("small.npz", "model expects"), ("missing.npz", "does not exist")):
        result = run_cli("attach", tmp_path / "m.onnx", "--data", tmp_path / data, "-o", tmp_path / "ee.onnx")
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.startswith("error: ")
    result = run_cli("attach", tmp_path / "m.onnx", "-o", tmp_path / "ee.onnx")
    assert result.exit_code == 2 and "--data" in result.output
    assert not (tmp_path / "ee.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ee.onnx")]


def with_embedding_output(net) -> onnx.ModelProto:
    """``net.model`` with its flattened features [N, 32] as an extra output, before the classifier."""
    model = onnx.ModelProto()
    model.CopyFrom(net.model)
    flat = next(n.output[0] for n in model.graph.node if n.op_type == "Flatten")
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info(flat, onnx.TensorProto.FLOAT, [1, 32]))
    return model


def test_final_output_picks_the_classifier_of_a_multi_output_model(net, train):
    model = with_embedding_output(net)
    logits = net.model.graph.output[0].name
    small = train.subset(np.arange(120))
    # the first output (the embedding) is taken for a 32-class classifier: its classes have no samples
    with pytest.raises(HapiError, match=r"no sample of class\(es\) 10, 11, .*32 classes"):
        attach(model, small)
    result = attach(model, small, final_output=logits, max_candidates=2)
    assert result.layout.final_output == logits and result.layout.num_classes == 10
    # the same cuts as on the single-output backbone: the extra output does not restrict them
    assert [e.tensor for e in result.layout.exits] == [
        c.tensor for c in candidate_exits(load_model(net.model), max_candidates=2)]
    assert result.num_samples == 120 and len(result.heads) == 2
    x = train.x[:4]
    outs = dict(zip([o.name for o in result.model.graph.output], run_model(result.model, {"image": x}), strict=True))
    np.testing.assert_allclose(outs[logits], run_model(load_model(net.model), {"image": x})[0], atol=1e-5)


def test_attach_from_outputs_is_one_call(tmp_path):
    from test_exits_from_outputs import multi_exit

    result = attach(multi_exit(), from_outputs=True, final_output="final_logits")
    assert result.heads == [] and result.feature_seconds == 0.0 and result.num_samples == 0
    assert result.layout == ExitLayout.from_model(result.model)
    assert [e.tensor for e in result.layout.exits] == ["t1", "t2"]
    result.save(tmp_path / "ee.onnx")
    assert model_fingerprint(load_model(tmp_path / "ee.onnx")) == model_fingerprint(result.model)


def test_cli_attach_final_output_and_label_errors(net, train, tmp_path, run_cli):
    onnx.save(with_embedding_output(net), tmp_path / "m.onnx")
    small = train.subset(np.arange(100))
    small.save(tmp_path / "train.npz")
    Dataset(small.x, np.zeros(len(small), np.int64)).save(tmp_path / "one.npz")
    logits = net.model.graph.output[0].name
    result = run_cli("attach", tmp_path / "m.onnx", "--data", tmp_path / "train.npz", "-o", tmp_path / "ee.onnx",
                     "--max-candidates", "1", "--final-output", logits)
    assert result.exit_code == 0, result.output
    assert "1 heads on 100 images" in result.output
    assert ExitLayout.from_model(onnx.load(tmp_path / "ee.onnx")).final_output == logits
    result = run_cli("attach", tmp_path / "m.onnx", "--data", tmp_path / "one.npz", "-o", tmp_path / "ee2.onnx",
                     "--final-output", logits)
    assert result.exit_code == 2 and "at least 2" in result.output, result.output
    assert not (tmp_path / "ee2.onnx").exists()
