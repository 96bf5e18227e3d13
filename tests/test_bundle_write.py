"""write_bundle: stage graphs reproduce the over-provisioned model; the files and errors are right."""

import json
import zipfile

import numpy as np
import onnx
import pytest
from test_bundle_models import make_ee_model, reference_outputs, sample_images, softmax

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.errors import HapiError
from hapi_onnx.runtime import EarlyExitModel, Manifest


@pytest.mark.parametrize(("opset", "final_is_probability"), [(17, False), (18, True), (13, False)])
def test_full_path_equals_original_final_output(tmp_path, opset, final_is_probability):
    model = make_ee_model(seed=3, opset=opset, final_is_probability=final_is_probability)
    x = sample_images(32)
    ref = reference_outputs(model, x)
    final = ref["fc.probs"] if final_is_probability else softmax(ref["fc.logits"])
    exits = choices_from(["exit0", "exit1", "exit2", "final"], [0.5, 0.5, 0.5])
    bundle = write_bundle(model, exits, tmp_path / "m.hapi")
    full = EarlyExitModel.load(bundle).force_full_path()
    pred = full.predict(x, return_probs=True)
    assert np.array_equal(pred.exit_index, np.full(32, 3))
    assert np.array_equal(pred.classes, final.argmax(axis=1))
    np.testing.assert_allclose(pred.probs, final, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pred.confidences, final.max(axis=1), atol=1e-5, rtol=0)
    # Thresholds above 1 never exit either, whatever the bundle says.
    above = EarlyExitModel.load(bundle).with_thresholds([1.01, 2.0, 1.5]).predict(x)
    assert np.array_equal(above.exit_index, pred.exit_index) and np.array_equal(above.classes, pred.classes)


def test_stages_hold_only_the_kept_heads(tmp_path):
    bundle = write_bundle(make_ee_model(), choices_from(["exit0", "exit2"], [0.9, 0.8]), tmp_path / "m.hapi")
    manifest = Manifest.from_json((bundle / "manifest.json").read_text())
    assert [s.name for s in manifest.stages] == ["exit0", "exit2", "final"]
    assert [s.input for s in manifest.stages] == ["input", "t1", "t4"]
    assert [s.carried for s in manifest.stages] == ["t1", "t4", None]
    assert manifest.exits == choices_from(["exit0", "exit2"], [0.9, 0.8])
    inits = set()
    for stage in manifest.stages:
        stage_model = onnx.load(str(bundle / stage.file))
        onnx.checker.check_model(stage_model)
        inits |= {t.name for t in stage_model.graph.initializer}
    assert {"head0.w", "head2.w", "fc.w", "c4.w"} <= inits
    assert "head1.w" not in inits
    assert sorted(p.name for p in (bundle / "stages").iterdir()) == [
        "00_exit0.onnx", "01_exit2.onnx", "02_final.onnx"
    ]


def test_manifest_records_design_and_provenance(tmp_path):
    predicted = {"accuracy": 0.97, "mean_ms": 1.2, "exit_distribution": [0.5, 0.3, 0.2]}
    bundle = write_bundle(
        make_ee_model(), choices_from(["exit1", "exit2", "final"], [0.95, 0.9]), tmp_path / "m.hapi",
        design={"predicted": predicted}, labels=list("abcde"), preprocessing={"scale": 1 / 255},
    )
    data = json.loads((bundle / "manifest.json").read_text())
    assert data["kind"] == "hapi-onnx bundle" and data["format_version"] == 2
    assert data["input"] == {"name": "input", "shape": [None, 1, 12, 12], "dtype": "float32"}
    assert data["labels"] == list("abcde")
    assert data["preprocessing"] == {"version": 1, "resize": None, "size": None, "crop": None,
                                     "interpolation": "bilinear", "scale": 1 / 255, "mean": [0.0], "std": [1.0],
                                     "channel_order": "L", "layout": "NCHW", "dtype": "float32"}
    assert data["design"]["predicted"] == predicted
    assert [(s["name"], s["threshold"]) for s in data["stages"]] == [
        ("exit1", float(np.float32(0.95))), ("exit2", float(np.float32(0.9))), ("final", None)
    ]
    assert "exits" not in data["design"] and "thresholds" not in data["design"]  # thresholds live in the stages
    assert data["provenance"]["source_fingerprint"] == "0" * 64
    assert len(data["provenance"]["ee_model_fingerprint"]) == 64


def test_zip_bundle_predicts_like_the_directory(tmp_path):
    model, x = make_ee_model(seed=5), sample_images(40)
    conf = reference_outputs(model, x)["head1.probs"].max(axis=1)
    threshold = float(np.median(conf))
    folder = write_bundle(model, choices_from(["exit1"], [threshold]), tmp_path / "m.hapi")
    packed = write_bundle(model, choices_from(["exit1"], [threshold]), tmp_path / "m.hapi.zip")
    forced = write_bundle(model, choices_from(["exit1"], [threshold]), tmp_path / "other", zip=True)
    assert zipfile.is_zipfile(packed) and zipfile.is_zipfile(forced)
    with zipfile.ZipFile(packed) as archive:
        assert sorted(archive.namelist()) == ["manifest.json", "stages/00_exit1.onnx", "stages/01_final.onnx"]
    a = EarlyExitModel.load(folder).predict(x)
    b = EarlyExitModel.load(packed).predict(x)
    assert np.array_equal(a.classes, b.classes) and np.array_equal(a.exit_index, b.exit_index)
    assert set(a.exit_index.tolist()) == {0, 1}


def test_rewriting_replaces_the_bundle(tmp_path):
    out = tmp_path / "m.hapi"
    write_bundle(make_ee_model(), choices_from(["exit0", "exit1"], [0.9, 0.9]), out)
    write_bundle(make_ee_model(), choices_from(["exit2"], [0.7]), out)
    assert EarlyExitModel.load(out).exit_names == ("exit2", "final")
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["00_exit2.onnx", "01_final.onnx"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.hapi"]


@pytest.mark.parametrize(
    ("exits", "thresholds", "labels", "match"),
    [
        (["exit7"], [0.9], None, "not in the model"),
        (["exit2", "exit0"], [0.9, 0.9], None, "graph order"),
        (["exit0", "exit0"], [0.9, 0.9], None, "distinct"),
        (["final", "exit0"], [0.9, 0.9], None, "'final' must be the last"),
        (["exit0", "exit1"], [0.9], None, "one threshold per kept"),
        (["exit0"], [float("nan")], None, "finite number >= 0"),
        (["exit0"], [-0.5], None, "finite number >= 0"),
        (["exit0"], [0.9], ["a", "b"], "5 strings"),
    ],
)
def test_bad_arguments_raise_hapi_error(tmp_path, exits, thresholds, labels, match):
    with pytest.raises(HapiError, match=match):
        write_bundle(make_ee_model(), choices_from(exits, thresholds), tmp_path / "m.hapi", labels=labels)
    assert not (tmp_path / "m.hapi").exists()


def test_model_without_exit_layout_is_refused(tmp_path):
    model = make_ee_model()
    del model.metadata_props[:]
    with pytest.raises(HapiError, match="no early exits"):
        write_bundle(model, choices_from(["exit0"], [0.9]), tmp_path / "m.hapi")
