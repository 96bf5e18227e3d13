"""evaluate --full-model: only the model a bundle was built from (its EE model or its source) is accepted."""

import numpy as np
import onnx
import pytest
from graph_models import resnet, run_model
from test_exits_attach import labelled, with_embedding_output

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.errors import HapiError
from hapi_onnx.evaluate import evaluate_bundle, full_model_for_bundle
from hapi_onnx.exits.attach import attach
from hapi_onnx.graph import load_model, model_fingerprint


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A resnet, its EE model and a bundle (exit0 + final), all on disk, and labelled test data."""
    root = tmp_path_factory.mktemp("full")
    net = resnet()
    onnx.save(net.model, root / "model.onnx")
    # as the pipeline does: attach reads model.onnx, evaluate later gets that same file as the full model
    result = attach(root / "model.onnx", labelled(net.model, 120, seed=0), max_candidates=1)
    result.save(root / "ee.onnx")
    onnx.save(resnet(seed=1).model, root / "other.onnx")
    bundle = write_bundle(result.model, choices_from(["exit0", "final"], [0.9]), root / "m.hapi")
    test = labelled(net.model, 30, seed=2)
    test.save(root / "test.npz")
    logits = run_model(load_model(net.model), {"image": test.x})[0]
    return root, bundle, test, float((logits.argmax(axis=1) == test.y).mean())


@pytest.mark.parametrize("name", ["model.onnx", "ee.onnx"])
def test_the_source_and_the_ee_model_are_both_accepted(built, name):
    root, bundle, test, full_accuracy = built
    report = evaluate_bundle(bundle, test, full_model=root / name, warmup=2)
    assert report.full_accuracy == pytest.approx(full_accuracy)
    assert report.full_latency.n == 28


def test_a_different_model_is_refused_naming_the_bundles(built):
    root, bundle, test, _ = built
    source = model_fingerprint(load_model(root / "model.onnx"))[:12]
    ee = model_fingerprint(load_model(root / "ee.onnx"))[:12]
    with pytest.raises(HapiError, match=f"not the model this bundle was built from.*{ee}.*{source}"):
        evaluate_bundle(bundle, test, full_model=root / "other.onnx")


def test_a_multi_output_source_asks_for_the_ee_model(tmp_path):
    net = resnet()
    model = with_embedding_output(net)
    logits_name = net.model.graph.output[0].name
    result = attach(model, labelled(net.model, 120, seed=0), final_output=logits_name, max_candidates=1)
    bundle = write_bundle(result.model, choices_from(["final"], []), tmp_path / "m.hapi")
    from hapi_onnx.runtime.manifest import Manifest

    provenance = Manifest.from_json((bundle / "manifest.json").read_text()).provenance
    with pytest.raises(HapiError, match="has 2 outputs.*Pass the early-exit model"):
        full_model_for_bundle(model, provenance)
    # from the EE model: the classifier named by its layout, not its first output (the embedding)
    only = onnx.load_from_string(full_model_for_bundle(result.model, provenance))
    assert [o.name for o in only.graph.output] == [logits_name]
    x = np.random.default_rng(3).normal(size=(4, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(run_model(only, {"image": x})[0],
                               run_model(load_model(net.model), {"image": x})[0], atol=1e-5)


def test_cli_refuses_another_model_with_exit_2(built, run_cli):
    root, bundle, _, _ = built
    result = run_cli("evaluate", bundle, "--data", root / "test.npz", "--full-model", root / "other.onnx")
    assert result.exit_code == 2 and result.output.startswith("error: ")
    assert "not the model this bundle was built from" in result.output
    result = run_cli("evaluate", bundle, "--data", root / "test.npz", "--full-model", root / "model.onnx", "--json")
    assert result.exit_code == 0, result.output
