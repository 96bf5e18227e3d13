"""One threshold rule everywhere: ExitChoice, Design, write_bundle, the manifest and the runtime agree."""

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_bundle_models import make_ee_model

from hapi_onnx.bundle import write_bundle
from hapi_onnx.checks import finite_number
from hapi_onnx.choice import (
    FINAL,
    ExitChoice,
    check_choices,
    check_threshold,
    choices_from,
    confidences_staying,
    first_exit,
    leaves,
    thresholds_reached,
)
from hapi_onnx.errors import HapiError
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search import Constraints, Design

BAD = [-0.1, -1, float("nan"), float("inf"), 1e39, "0.5", True, np.bool_(True), None, [0.5]]
GOOD = [0, 0.0, 0.5, np.float32(0.9), np.float64(0.25), np.int64(1), 1.5]


def design_with(threshold) -> Design:
    exits = [{"name": "exit1", "threshold": threshold}, {"name": FINAL, "threshold": None}]
    return Design(
        exits=exits,
        constraints=Constraints(max_accuracy_drop=1.0),
        predicted={"accuracy": 0.9, "mean_ms": 0.1, "p50_ms": 0.1, "p90_ms": 0.1, "p99_ms": 0.1,
                   "exit_distribution": [0.5, 0.5], "speedup_vs_full": 1.5, "accuracy_lower_bound": 0.88,
                   "accuracy_drop_bound_pp": 0.9},
        reference={"accuracy": 0.91, "mean_ms": 0.15, "no_exit_mean_ms": 0.16, "no_exit_p90_ms": 0.17},
        pareto_front=[], search={"num_samples": 100}, device="cpu-1t",
        trace_fingerprint="t", latency_fingerprint="l", model_fingerprint="m",
    )


@pytest.mark.parametrize("value", GOOD)
def test_good_thresholds_are_held_as_their_float32_value(value):
    assert check_threshold(value) == float(np.float32(value))
    assert ExitChoice("exit1", value).threshold == float(np.float32(value))


@pytest.mark.parametrize("value", [v for v in BAD if v is not None])
def test_every_step_refuses_the_same_thresholds(value, tmp_path):
    with pytest.raises(HapiError, match="finite number >= 0"):
        check_threshold(value)
    with pytest.raises(HapiError, match="finite number >= 0"):
        design_with(value)
    with pytest.raises(HapiError, match="finite number >= 0"):
        write_bundle(make_ee_model(), [ExitChoice("exit1", value), ExitChoice(FINAL)], tmp_path / "m.hapi")
    assert not (tmp_path / "m.hapi").exists()


def test_the_runtime_and_the_manifest_refuse_them_too(tmp_path):
    bundle = write_bundle(make_ee_model(), choices_from(["exit1"], [0.9]), tmp_path / "m.hapi")
    model = EarlyExitModel.load(bundle)
    for value in BAD:
        with pytest.raises(HapiError):
            model.with_thresholds([value])
    manifest = json.loads((bundle / "manifest.json").read_text())
    for value in (-0.1, "0.5", True, [0.5]):
        manifest["stages"][0]["threshold"] = value
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(HapiError, match="stage 0"):
            EarlyExitModel.load(bundle)


def test_a_threshold_travels_unchanged_from_design_to_runtime(tmp_path):
    design = design_with(0.9)
    design.save(tmp_path / "design.json")
    loaded = Design.load(tmp_path / "design.json")
    bundle = write_bundle(make_ee_model(), loaded.exits, tmp_path / "m.hapi")
    model = EarlyExitModel.load(bundle)
    assert model.exits == loaded.exits == design.exits == (ExitChoice("exit1", 0.9), ExitChoice(FINAL))
    assert model.exits[0].threshold == float(np.float32(0.9)) != 0.9  # the float32 value, exactly


def test_the_comparison_is_float32_greater_or_equal():
    t = check_threshold(0.9)
    assert leaves(np.float32(0.9), t) and leaves(0.9, t)  # 0.9 rounds to the same float32
    assert not leaves(np.nextafter(np.float32(0.9), np.float32(0)), t)
    assert leaves(np.ones(3, np.float32), 1.0).all() and not leaves(1.0, 1.5)


def edge_values() -> tuple[np.ndarray, np.ndarray]:
    """Thresholds at the edges of the rule and, for each, confidences equal to it and 1 ulp either side."""
    f32 = np.float32
    thresholds = np.array([0.0, 1e-45, 0.5, 0.9, 1.0, 1.5, np.finfo(f32).max], dtype=f32)
    with np.errstate(over="ignore"):  # 1 ulp past float32's largest is infinity
        near = [np.nextafter(thresholds, f32(-np.inf)), thresholds, np.nextafter(thresholds, f32(np.inf))]
    extra = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, 1.0], dtype=f32)
    return thresholds, np.concatenate([*near, extra])


def test_every_form_of_the_rule_agrees_with_leaves_at_the_edges():
    thresholds, conf = edge_values()
    want = np.array([[bool(leaves(c, t)) for c in conf] for t in thresholds])  # [T, C]
    assert want[thresholds == np.float32(0.9)][0][conf == np.float32(0.9)].all()  # equal leaves
    assert not want[:, np.isnan(conf)].any()  # a NaN confidence never leaves
    assert (leaves(conf[None, :], thresholds[:, None]) == want).all()
    # The sorted forms count over confidences a trace holds (never NaN: Trace refuses it).
    number = ~np.isnan(conf)
    assert (thresholds_reached(np.sort(thresholds), conf[number]) == want[:, number].sum(axis=0)).all()
    finite = np.sort(conf[number])
    stay = np.array([[not leaves(c, t) for c in finite] for t in thresholds]).sum(axis=1)
    assert (confidences_staying(finite, thresholds) == stay).all()
    # first_exit: kept exits with these thresholds, each sample's confidence at every exit the same.
    pos = first_exit(np.tile(conf, (len(thresholds), 1)), thresholds)
    expected = [next((j for j in range(len(thresholds)) if want[j, i]), len(thresholds)) for i in range(len(conf))]
    assert pos.tolist() == expected
    batch = first_exit(np.tile(conf, (2, 1)), np.array([[0.5, 0.9], [2.0, 1.0]], dtype=np.float32))
    assert batch.shape == (2, len(conf)) and batch[0].tolist() == first_exit(np.tile(conf, (2, 1)), [0.5, 0.9]).tolist()
    assert first_exit(np.zeros((0, 3), np.float32), np.zeros((4, 0), np.float32)).tolist() == [[0] * 3] * 4


def test_a_plan_has_the_final_classifier_last_and_distinct_names():
    assert check_choices([{"name": "exit0", "threshold": 0.5}, {"name": FINAL, "threshold": None}])[1].name == FINAL
    for bad, match in [
        ([], "at least the final"),
        ([ExitChoice("exit0", 0.5)], "has no threshold"),
        ([ExitChoice("exit0"), ExitChoice(FINAL)], "needs a threshold"),
        ([ExitChoice("exit0", 0.5), ExitChoice("exit0", 0.5), ExitChoice(FINAL)], "distinct"),
        ("exit0", "list of exits"),
        ([{"name": "exit0"}], r"object \{name, threshold\}"),
    ]:
        with pytest.raises(HapiError, match=match):
            check_choices(bad)
    with pytest.raises(HapiError, match="one threshold per kept"):
        choices_from(["exit0", "exit1"], [0.5])
    assert math.isclose(choices_from(["exit0", FINAL], [0.5])[0].threshold, 0.5)


def test_the_profiler_uses_no_private_name_of_the_runtime():
    for path in (Path(__file__).parents[1] / "hapi_onnx" / "profile").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hapi_onnx.runtime"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


@pytest.mark.parametrize("value", [0, -3, 2.5, np.float32(0.5), np.float64(1e300), np.int64(7), 10**300])
def test_one_finite_number_check_takes_python_and_numpy_numbers(value):
    assert finite_number(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), float("nan"), np.float32("inf"), 10**400, "1", None, [1]])
def test_one_finite_number_check_refuses_the_rest(value):
    assert not finite_number(value)


def test_numpy_numbers_are_taken_and_saved_as_plain_numbers_everywhere(tmp_path):
    from hapi_onnx.runtime.preprocess import Preprocessing

    assert Constraints(latency_sla_ms=np.float32(5), max_accuracy_drop=np.int64(1)).latency_sla_ms == 5
    assert Preprocessing(scale=np.float32(0.5)).scale == 0.5
    design = design_with(np.float32(0.5))
    design.predicted["mean_ms"] = np.float32(0.25)
    design = Design(**{**design.__dict__})
    design.save(tmp_path / "d.json")
    assert Design.load(tmp_path / "d.json").predicted["mean_ms"] == 0.25
    with pytest.raises(HapiError):
        Constraints(latency_sla_ms=10**400)
