"""The one-shot build on the demo: every artifact, reuse of unchanged steps, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hapi_onnx.data import load_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.pipeline import BuildConfig, build, build_report
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search import Design

DEMO = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.onnx"
STEPS = ["data", "export", "attach", "calibrate", "profile", "search", "bundle", "evaluate"]
# Small and quick: 3 candidate exits, short timing budget, small throughput batch.
QUICK = dict(model=str(DEMO), max_candidates=3, profile_budget_s=0.05, eval_batch_size=8, max_accuracy_drop=1.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("build")
    lines: list[str] = []
    result = build(BuildConfig.from_options(QUICK), work, log=lines.append)
    return work, result, lines


def test_build_writes_every_artifact_and_a_report(built):
    work, result, lines = built
    assert set(result.paths) == {"data", "model", "ee", "trace", "latency", "design", "bundle", "report"}
    assert result.reused == []
    assert all(path.exists() for path in result.paths.values())
    assert not list(work.glob(".*.tmp"))
    report = "\n".join(build_report(result))
    needles = ("Exits on the calibration split", "Design (", "held-out test split", "speed-up", "EarlyExitModel.load")
    for needle in needles:
        assert needle in report
    certified = Design.load(result.paths["design"]).search["guarantee"]["certified"]  # split, the default
    assert "  guarantee  with probability >= 0.9 over the calibration data" in report
    assert f"{certified} design(s) certified" in report
    model = EarlyExitModel.load(result.paths["bundle"])
    test = load_dataset(result.paths["data"] / "test.npz")
    pred = model.predict(test.x[:50])
    assert (pred.classes == test.y[:50]).mean() > 0.9


def test_second_run_reuses_everything_and_a_new_sla_reruns_only_search_onward(built):
    work, first, _ = built
    again = build(BuildConfig.from_options(QUICK), work)
    assert again.reused == STEPS
    changed = build(BuildConfig.from_options({**QUICK, "max_accuracy_drop": 2.0}), work)
    assert changed.reused == ["data", "export", "attach", "calibrate", "profile"]
    assert json.loads(changed.paths["design"].read_text())["constraints"]["max_accuracy_drop"] == 2.0


def test_a_damaged_output_is_rebuilt(built):
    work, result, _ = built
    result.paths["trace"].write_bytes(b"not a trace")
    again = build(BuildConfig.from_options(QUICK), work)
    assert "calibrate" not in again.reused
    assert again.reused[:3] == ["data", "export", "attach"]


def test_killed_build_resumes_and_completes(tmp_path):
    work = tmp_path / "work"
    config = tmp_path / "build.json"
    config.write_text(json.dumps({**QUICK, "profile_budget_s": 0.5}))
    cmd = [sys.executable, "-m", "hapi_onnx", "--verbose", "build", "--config", str(config), "--workdir", str(work)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = work / ".steps" / "calibrate.json"  # kill while profiling (or just after)
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "report.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "up to date, reusing ee.onnx" in done.stderr
    assert "speed-up" in done.stdout
    assert not list(work.glob(".*.tmp")) and not list(work.glob(".steps/.*.tmp"))


def test_config_errors_are_user_errors(tmp_path, run_cli):
    with pytest.raises(HapiError, match="at least one constraint"):
        BuildConfig.from_options({"model": str(DEMO)})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": str(DEMO), "max_accuracy_drop": 0.5, "sla": 3}))
    result = run_cli("build", "--config", bad, "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "unknown build option(s) ['sla']" in result.output
    result = run_cli("build", tmp_path / "missing.onnx", "--max-accuracy-drop", "0.5", "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "w" / "model.onnx").exists()


def test_bad_build_options_fail_before_any_work(tmp_path, run_cli):
    result = run_cli("build", "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "give the MODEL" in result.output
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": str(DEMO), "max_accuracy_drop": "0.5"}))
    result = run_cli("build", "--config", config, "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "'max_accuracy_drop' must be a number of percentage points" in result.output
    assert f"build config {str(config)!r}" in result.output  # the file's value: the file is named
    config.write_text(json.dumps({"model": str(DEMO), "max_accuracy_drop": 0.5}))
    result = run_cli("build", "--config", config, "--max-accuracy-drop", "-1", "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "'max_accuracy_drop' must be a number of percentage points" in result.output
    assert "build config" not in result.output  # a flag's value: the file is not blamed
    with pytest.raises(HapiError, match="'space' must be one of"):
        BuildConfig.from_options({"model": str(DEMO), "max_accuracy_drop": 0.5, "thresholds": "each"})
    for option, value, message in [
        ("min_accuracy", 98.5, r"a fraction: 98.5% is 0.985"),
        ("latency_sla_ms", float("nan"), "'latency_sla_ms' must be a positive"),
        ("device", "nosuch", "Unknown device 'nosuch'"),
        ("max_candidates", 0, "'max_candidates' must be an int >= 1"),
        ("exits", "t1", "'exits' must be a list"),
        ("input_shape", "a,b", "four positive ints"),
        ("model", 3, "'model' must be a non-empty string"),
        ("pooling", "max", "'pooling' must be one of"),
    ]:
        with pytest.raises(HapiError, match=message):
            BuildConfig.from_options({"model": str(DEMO), "max_accuracy_drop": 0.5, option: value})
    result = run_cli("build", str(DEMO), "--min-accuracy", "98.5", "--device", "nosuch", "--workdir", tmp_path / "w")
    assert result.exit_code == 2 and "Unknown device 'nosuch'" in result.output
    assert not (tmp_path / "w").exists()


def test_overlapping_splits_are_refused(tmp_path):
    from hapi_onnx.data import mnist_splits

    splits = mnist_splits(seed=0)
    data = tmp_path / "data"
    splits["train"].save(data / "train.npz")
    splits["calib"].save(data / "calib.npz")
    splits["calib"].save(data / "test.npz")  # reporting on the calibration images: a leak
    with pytest.raises(HapiError, match="1000 of the 1000 images in test.npz also appear in calib.npz"):
        build(BuildConfig.from_options({**QUICK, "data": str(data)}), tmp_path / "w")
    assert not (tmp_path / "w" / "model.onnx").exists()


def test_a_second_build_in_the_same_workdir_is_refused_while_one_runs(tmp_path):
    from hapi_onnx.pipeline import _exclusive

    (tmp_path / ".steps").mkdir()
    with _exclusive(tmp_path):
        with pytest.raises(HapiError, match="another build is running"):
            build(BuildConfig.from_options(QUICK), tmp_path)


def test_a_floor_no_design_can_reach_stops_right_after_calibrate(tmp_path, run_cli):
    """98.5% on the demo: the full model (98.7% on calib) is not certified at it on 700 samples, so no
    design is; build says so before profiling, not after."""
    work = tmp_path / "w"
    result = run_cli("-q", "build", DEMO, "--min-accuracy", "98.5", "--max-candidates", "3", "--workdir", work)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: no design reaches 98.50% accuracy: even the full model's accuracy "
                                    "lower bound is"), result.output
    assert (work / "trace.npz").exists() and not (work / "latency.json").exists()
    from hapi_onnx.search import Constraints, check_reachable
    from hapi_onnx.trace import Trace

    trace = Trace.load(work / "trace.npz")
    check_reachable(trace, Constraints(min_accuracy=0.95))  # reachable: nothing raised
    for guarantee, level in (("per-design", 0.9), ("split", 0.0)):  # no certification: any exit right at most
        with pytest.raises(HapiError, match="at most .* of the samples are right at some exit"):
            check_reachable(trace, Constraints(min_accuracy=0.9999, guarantee=guarantee, bound_level=level))
    with pytest.raises(HapiError, match="unlabelled"):
        check_reachable(replace(trace, labels=None), Constraints(min_accuracy=0.9))
