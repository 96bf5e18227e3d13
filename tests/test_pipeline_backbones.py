"""A build of several models: per-model steps cached, one joint search, the chosen bundle, and evaluate."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from hapi_onnx.errors import HapiError
from hapi_onnx.evaluate import EvaluationReport
from hapi_onnx.graph import load_model, model_fingerprint
from hapi_onnx.pipeline import BuildConfig, build, build_report
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search.backbones import BackboneSearch
from hapi_onnx.search.report import joint_front_lines

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RESNET, MBV2 = EXAMPLES / "mnist" / "model.onnx", EXAMPLES / "mnist_mbv2" / "model.onnx"
QUICK = dict(max_candidates=3, profile_budget_s=0.05, eval_batch_size=1, min_accuracy=0.9)
MODEL_STEPS = ("export", "attach", "calibrate", "profile")


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    work = tmp_path_factory.mktemp("joint")
    result = build(BuildConfig.from_options({**QUICK, "model": [str(RESNET), str(MBV2)]}), work)
    return work, result


def test_the_bundle_front_and_report_name_the_same_chosen_model(joint):
    work, result = joint
    search = BackboneSearch.load(result.paths["front"])
    assert [b.label for b in search.backbones] == ["mnist/model", "mnist_mbv2/model"]
    chosen_ee = result.paths["ee"]
    assert chosen_ee.parent.parent == work / "models"
    fingerprint = model_fingerprint(load_model(chosen_ee))
    assert search.summary(search.chosen).model_fingerprint == fingerprint == search.design.model_fingerprint
    bundle = EarlyExitModel.load(result.paths["bundle"])
    assert bundle.manifest.provenance["ee_model_fingerprint"] == fingerprint
    starred = [line for line in joint_front_lines(search) if line.lstrip().startswith("*")]
    assert starred[0].split()[1] == search.chosen
    report = EvaluationReport.load(result.paths["report"])
    other = next(b.label for b in search.backbones if b.label != search.chosen)
    assert report.full_accuracy is not None and [o.name for o in report.others] == [other]
    text = "\n".join(build_report(result))
    assert "Joint Pareto front of 2 models" in text and f"Chosen model: {search.chosen}" in text
    assert f"{other} (ms) mean" in text


def test_adding_a_model_reruns_only_its_steps_and_the_search(joint, tmp_path):
    work, first = joint
    third = tmp_path / "third" / "copy.onnx"
    third.parent.mkdir()
    shutil.copy(RESNET, third)
    again = build(BuildConfig.from_options({**QUICK, "model": [str(RESNET), str(MBV2), str(third)]}), work)
    earlier = {name for name in again.reused if "@" in name}
    assert len(earlier) == 2 * len(MODEL_STEPS)  # both earlier models' steps, none of the new one's
    assert not any(name.startswith("export@copy-") for name in again.reused)
    assert "search" not in again.reused and any(name.startswith("profile@copy-") for name in again.seconds)


def test_evaluate_measures_every_full_model_given(joint, run_cli):
    work, result = joint
    models = sorted(str(p) for p in (work / "models").glob("*/model.onnx"))  # the chosen one among them
    assert len(models) >= 2
    out = run_cli("evaluate", result.paths["bundle"], "--data", result.paths["data"] / "test.npz",
                  *[arg for m in models for arg in ("--full-model", m)])
    assert out.exit_code == 0, out.output
    assert "full model (ms)" in out.output and "another full model" in out.output


def test_plot_of_a_joint_build(joint, run_cli, tmp_path):
    pytest.importorskip("matplotlib")
    work, _ = joint
    png = tmp_path / "front.png"
    out = run_cli("build", RESNET, MBV2, "--workdir", work, "--max-candidates", "3", "--profile-budget", "0.05",
                  "--min-accuracy", "0.9", "--plot", png)
    assert out.exit_code == 0, out.output
    assert png.stat().st_size > 0 and "Joint Pareto front" in out.output


def test_a_drop_budget_with_several_models_is_refused_before_any_step(run_cli, tmp_path):
    work = tmp_path / "work"
    out = run_cli("build", RESNET, MBV2, "--workdir", work, "--max-accuracy-drop", "1")
    assert out.exit_code == 2 and out.output.count("\n") == 1
    assert "drop budget" in out.output and "--min-accuracy" in out.output
    assert not work.exists()
    with pytest.raises(HapiError, match="--factory"):
        BuildConfig.from_options({"model": [str(RESNET), str(MBV2)], "min_accuracy": 0.9, "factory": "m.py:f"})


def nine_class_model(folder: Path) -> Path:
    """The demo ResNet with its logits cut to 9 classes."""
    model = onnx.load(RESNET)
    logits = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Slice", [logits, "s0", "s9", "s1"], ["nine"]))
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.array([v], dtype=np.int64), name)
        for name, v in (("s0", 0), ("s9", 9), ("s1", 1))
    )
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("nine", onnx.TensorProto.FLOAT, ["N", 9]))
    path = folder / "nine.onnx"
    onnx.save(model, path)
    return path


def test_models_with_other_class_counts_are_refused_in_one_line(run_cli, tmp_path):
    nine = nine_class_model(tmp_path)
    work = tmp_path / "work"
    out = run_cli("build", RESNET, nine, "--workdir", work, "--min-accuracy", "0.9")
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "has 9 classes but" in out.output and not work.exists()


def test_evaluate_refuses_another_model_of_other_classes_in_one_line(joint, run_cli, tmp_path):
    _, result = joint
    out = run_cli("evaluate", result.paths["bundle"], "--data", result.paths["data"] / "test.npz",
                  "--full-model", result.paths["model"], "--full-model", nine_class_model(tmp_path))
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "9" in out.output and "same test data" in out.output


def test_a_config_file_lists_models_relative_to_itself(tmp_path):
    (tmp_path / "build.json").write_text('{"model": ["a.onnx", "sub/b.onnx"], "min_accuracy": 0.9}')
    config = BuildConfig.from_file(tmp_path / "build.json")
    assert config.models == (str(tmp_path / "a.onnx"), str(tmp_path / "sub" / "b.onnx"))
    (tmp_path / "drop.json").write_text('{"model": ["a.onnx", "b.onnx"], "max_accuracy_drop": 1}')
    with pytest.raises(HapiError, match="drop budget"):
        BuildConfig.from_file(tmp_path / "drop.json")
