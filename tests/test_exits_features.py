"""Pooled features: equal to numpy pooling of the real feature maps, from a pruned model."""

import numpy as np
import pytest
from graph_models import resnet, run_model
from onnx import TensorProto, helper

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.features import collect_features, feature_model
from hapi_onnx.exits.pooling import pooled_features
from hapi_onnx.graph import add_outputs, load_model
from hapi_onnx.graph.tensors import dims_of, value_infos


@pytest.fixture(scope="module")
def net():
    net = resnet()
    model = load_model(net.model)
    infos = value_infos(model.graph)
    cuts = [(t, dims_of(infos[t])) for t in net.boundaries]
    x = np.random.default_rng(0).normal(size=(7, 3, 16, 16)).astype(np.float32)
    maps = run_model(add_outputs(model, net.boundaries), {"image": x})[1:]
    return model, cuts, x, maps


def quadrant_means(m: np.ndarray) -> np.ndarray:
    """Mean of each of 2 x 2 windows per axis (ceil(s/2) wide, overlapping when s is odd)."""
    h, w = m.shape[2:]
    kh, kw = -(-h // 2), -(-w // 2)
    rows = [m[:, :, r : r + kh] for r in (0, h - kh)]
    cells = [r[:, :, :, c : c + kw].mean(axis=(2, 3)) for r in rows for c in (0, w - kw)]
    return np.stack(cells, axis=2).reshape(len(m), -1)


def test_gap_features_equal_numpy_means(net):
    model, cuts, x, maps = net
    got = collect_features(model, x, cuts, "gap", batch_size=3)
    for feats, fmap in zip(got, maps, strict=True):
        np.testing.assert_allclose(feats, fmap.mean(axis=(2, 3)), atol=1e-5)


def test_grid_features_equal_numpy_quadrants(net):
    model, cuts, x, maps = net
    got = collect_features(model, x, cuts, "gap+2x2", batch_size=4)
    for feats, fmap in zip(got, maps, strict=True):
        c = fmap.shape[1]
        assert feats.shape == (len(x), 5 * c)
        np.testing.assert_allclose(feats[:, :c], fmap.mean(axis=(2, 3)), atol=1e-5)
        np.testing.assert_allclose(feats[:, c:], quadrant_means(fmap), atol=1e-5)


def test_odd_sizes_use_two_overlapping_windows():
    fmap = np.arange(2 * 3 * 7 * 5, dtype=np.float32).reshape(2, 3, 7, 5)
    pooled = pooled_features("t", ["N", 3, 7, 5], "gap+2x2", "p/")
    assert pooled.dim == 15
    graph = helper.make_graph(
        pooled.nodes, "g", [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 3, 7, 5])],
        [helper.make_tensor_value_info(pooled.output, TensorProto.FLOAT, None)],
    )
    out = run_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"t": fmap})[0]
    np.testing.assert_allclose(out[:, 3:], quadrant_means(fmap), atol=1e-4)


def test_feature_model_returns_only_pooled_vectors_and_drops_the_classifier(net):
    model, cuts, _, _ = net
    fm, dims = feature_model(model, cuts[:2], "gap")
    assert dims == [c[1][1] for c in cuts[:2]]
    assert len(fm.graph.output) == 2
    assert len(fm.graph.node) < len(model.graph.node)
    assert "Gemm" not in {n.op_type for n in fm.graph.node}


def test_fixed_batch_models_are_fed_one_batch_at_a_time():
    net = resnet()  # exported with a fixed batch of 1
    model = net.model
    infos = value_infos(load_model(model).graph)
    cut = [(net.boundaries[-1], dims_of(infos[net.boundaries[-1]]))]
    x = np.random.default_rng(1).normal(size=(3, 3, 16, 16)).astype(np.float32)
    calls = []
    feats = collect_features(model, x, cut, progress=lambda done, total: calls.append((done, total)))[0]
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]
    ref = collect_features(load_model(model), x, cut, batch_size=64)[0]
    np.testing.assert_allclose(feats, ref, atol=1e-5)


def test_bad_pooling_requests_are_user_errors():
    with pytest.raises(HapiError, match="pooling must be one of"):
        pooled_features("t", ["N", 4, 8, 8], "max", "p/")
    with pytest.raises(HapiError, match="static"):
        pooled_features("t", ["N", 4, "H", "W"], "gap+2x2", "p/")
    with pytest.raises(HapiError, match="static shape"):
        pooled_features("t", ["N", "C", 8, 8], "gap", "p/")


@pytest.mark.parametrize("size", [8, 7])  # even: quadrant head with GAP folded in; odd: overlapping windows
def test_gap_2x2_head_graph_computes_the_fitted_logits(size):
    import onnxruntime as ort
    from onnx import helper

    from hapi_onnx.exits.attach import head_model
    from hapi_onnx.exits.heads import LinearHead

    rng = np.random.default_rng(size)
    x = rng.standard_normal((3, 4, size, size)).astype(np.float32)
    shape = [3, 4, size, size]
    head = LinearHead(weight=rng.standard_normal((20, 5)).astype(np.float32),
                      bias=rng.standard_normal(5).astype(np.float32))
    model = head_model("t", shape, "gap+2x2", head, "h/", "probs", [helper.make_opsetid("", 17)])
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"t": x})[0]
    half = (size + 1) // 2
    quads = [x[:, :, i:i + half, j:j + half].mean(axis=(2, 3)) for i in (0, size - half) for j in (0, size - half)]
    features = np.concatenate([x.mean(axis=(2, 3)), np.stack(quads, axis=2).reshape(3, 16)], axis=1)
    logits = head.logits(features)
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got, want / want.sum(1, keepdims=True), atol=1e-5)
    ops = [n.op_type for n in model.graph.node]
    assert ("GlobalAveragePool" in ops) == (size % 2 == 1)
