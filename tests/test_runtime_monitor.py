"""The drift monitor: the controller on synthetic streams with known disagreement steps, the audits
on a real bundle (records, thread safety, a full queue never blocking predict), the certified path
in the manifest, and `hapi-onnx run --monitor`."""

import json
import threading
import time

import numpy as np
import pytest
from test_bundle_models import make_ee_model, sample_images

from hapi_onnx.bundle import bundle_from_design, write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.errors import HapiError
from hapi_onnx.graph import load_model, model_fingerprint
from hapi_onnx.runtime import CertifiedPath, EarlyExitModel, Manifest, Monitor, MonitoredModel
from hapi_onnx.runtime.monitor import DERIVED_STEPS, Controller, disagreements, kl_bounds, monitor_path

EXITS = ["exit0", "exit1", "exit2"]
BUDGET = 0.03
DETECT = 120
"""Audits within which a step from 0.5% to 30% disagreement at the shipped design is detected
(window 200, level 0.9, 10 positions, after 500 clean audits): the lower bound passes 3% once
about 24 of the window's audits disagree, about 80 audits after the step on average."""


def synthetic(rates: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Nested records: one uniform draw per audit, position k disagrees when it is below rates[k]."""
    return rng.random((n, 1)) < rates[None, :]


def rates_at(shipped: float, positions: int = 10) -> np.ndarray:
    """Disagreement rising along the path: 0 at the full model, ``shipped`` at the shipped design."""
    return shipped * (np.arange(positions) / (positions - 1)) ** 3


def run(controller: Controller, records: np.ndarray) -> list[int]:
    return [controller.update(r) for r in records]


@pytest.mark.parametrize("seed", range(5))
def test_the_controller_steps_back_within_the_stated_audits_and_returns_after_the_drift(seed):
    rng = np.random.default_rng(seed)
    c = Controller(10, BUDGET, level=0.9, window=200)
    clean = run(c, synthetic(rates_at(0.005), 500, rng))
    assert clean == [9] * 500  # no false alarm on the certified design's own rate
    drifted = run(c, synthetic(rates_at(0.3), 600, rng))
    back = drifted.index(next(p for p in drifted if p < 9))
    assert back < DETECT
    assert max(drifted[back:]) < 9  # stays back while the drift lasts
    after = run(c, synthetic(rates_at(0.005), 1000, rng))
    assert after[-1] == 9 and after.index(9) <= 200 + 50  # back once the window has forgotten the drift


def test_the_controller_never_passes_the_shipped_design_and_starts_safe_without_trust():
    rng = np.random.default_rng(0)
    c = Controller(10, BUDGET, level=0.9, window=1000, trust_certificate=False)
    assert c.position == 0
    positions = run(c, synthetic(np.zeros(10), 2000, rng))
    assert max(positions) == 9 == positions[-1]  # nothing disagrees: verified all the way, and no further
    assert positions.index(9) > 500  # verifying a rate below 3% from zero disagreements takes audits
    worse = run(c, synthetic(rates_at(0.2), 600, rng))
    assert worse[-1] < 9 and max(worse[-200:]) < 9


def test_kl_bounds_are_the_chernoff_interval():
    lower, upper = kl_bounds(np.array([0, 5, 100]), 100, 3.0)
    assert lower[0] == 0 and 0 < upper[0] < 0.05 and lower[1] < 0.05 < upper[1] and upper[2] == 1.0
    p, q = 0.05, upper[1]
    assert 100 * (p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))) == pytest.approx(3.0, abs=1e-6)


def test_records_say_where_each_position_would_have_left():
    thresholds = np.array([[2, 2], [0.9, 0.9], [0.5, 0.5]], dtype=np.float32)
    classes = np.array([[1, 2, 3], [1, 1, 1], [4, 5, 6]])
    confidences = np.array([[0.95, 0.99, 1.0], [0.95, 0.2, 1.0], [0.6, 0.7, 0.9]], dtype=np.float32)
    assert disagreements(thresholds, classes, confidences).tolist() == [
        [False, True, True],  # leaves at exit0 (class 1 != 3) from position 1 on
        [False, False, False],  # leaves early with the final class
        [False, False, True],  # leaves at exit0 (4 != 6) only at threshold 0.5
    ]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The same 4-stage model with a certified path in its manifest and without one."""
    model, x = make_ee_model(seed=7), sample_images(400, seed=11)
    probe = write_bundle(model, choices_from(EXITS, [0.0] * 3), tmp_path_factory.mktemp("p") / "m.hapi")
    stages = list(EarlyExitModel.load(probe).force_full_path().progressive(x))
    conf = np.stack([p.confidences for p in stages])
    design = [float(np.quantile(conf[k], 0.3)) for k in range(3)]  # most samples leave early
    steps = [[float(t + (1 - t) * (1 - i / 4)) for t in design] for i in range(1, 5)]
    steps[-1] = design
    path = CertifiedPath(steps=tuple(map(tuple, steps)), budget_pp=3.0, reference="final", level=0.9)
    root = tmp_path_factory.mktemp("b")
    with_path = write_bundle(model, choices_from(EXITS, design), root / "path.hapi", path=path)
    without = write_bundle(model, choices_from(EXITS, design), root / "plain.hapi")
    return with_path, without, x


def test_the_manifest_records_the_path_and_old_bundles_get_a_derived_one(bundles):
    with_path, without, _ = bundles
    manifest = EarlyExitModel.load(with_path).manifest
    assert manifest.path.budget_pp == 3.0
    assert manifest.path.steps[-1] == tuple(s.threshold for s in manifest.stages[:-1])
    rows, budget, certified = monitor_path(manifest)
    assert certified and budget == 0.03 and len(rows) == 5 and (rows[0] == 2.0).all()
    plain = EarlyExitModel.load(without).manifest
    assert plain.path is None
    with pytest.raises(HapiError, match="records no accuracy-drop budget"):
        monitor_path(plain)
    rows, budget, certified = monitor_path(plain, budget=0.02)
    assert not certified and budget == 0.02 and len(rows) == DERIVED_STEPS + 1
    assert (np.diff(rows[1:], axis=0) <= 0).all() and np.allclose(rows[-1], [s.threshold for s in plain.stages[:-1]])
    data = json.loads((with_path / "manifest.json").read_text())
    data["stages"][0]["threshold"] = 0.5  # edited after the search: the path no longer leads there
    rows, _, certified = monitor_path(Manifest.from_dict(data))
    assert not certified and len(rows) == DERIVED_STEPS + 1 and rows[-1][0] == 0.5
    data["path"]["steps"][-1] = [0.5]  # one threshold for three stages
    with pytest.raises(HapiError, match="'path'"):
        Manifest.from_dict(data)


def test_bundle_from_design_carries_the_certified_path(tmp_path):
    from test_bundle_design import make_design

    model = make_ee_model()
    design = make_design(model_fingerprint(load_model(model)))
    design = type(design)(**{**design.__dict__, "search": {"num_samples": 100, "guarantee": {
        "statement": "s", "certified": 3, "path": [[0.99, 0.95], [0.9, 0.75]]}}})
    out = bundle_from_design(model, design, tmp_path / "m.hapi")
    path = EarlyExitModel.load(out).manifest.path
    assert path.steps == ((float(np.float32(0.99)), float(np.float32(0.95))), (float(np.float32(0.9)), 0.75))
    assert path.budget_pp == 1.0 and path.reference == "labels" and path.level == 0.9


def test_audits_move_along_the_path_and_never_past_the_design(bundles):
    with_path, _, x = bundles
    settings = Monitor(audit_rate=0.5, budget=0.0, window=50, background=False, seed=3)
    model = EarlyExitModel.load(with_path, monitor=settings)
    assert isinstance(model, MonitoredModel) and model.thresholds == EarlyExitModel.load(with_path).thresholds
    design = np.array(model.thresholds)
    for i in range(200):
        model.predict(x[i : i + 1])
        assert (np.array(model.thresholds) >= design).all()  # never past the certified design
    state = model.monitor_state()
    # a zero budget: any disagreement at the design is evidence against it, and nothing else is verified
    assert state.position == 0 and state.thresholds == (2.0, 2.0, 2.0) and state.audits_done > 100
    changes = model.position_changes()
    assert changes[0].old == 4 and changes[0].new == 0 and state.changes == len(changes)
    # at the full model every sample is audited for free
    before = model.monitor_state().audits_done
    pred = model.predict(x[:5])
    assert model.monitor_state().audits_done == before + 5 and (pred.exit_index == 3).all()


def test_the_monitor_is_deterministic_given_its_seed(bundles):
    with_path, _, x = bundles

    def moves(seed):
        model = EarlyExitModel.load(with_path, monitor=Monitor(audit_rate=0.3, budget=0.05, window=40,
                                                               background=False, seed=seed))
        classes = [int(model.predict(x[i : i + 1]).classes[0]) for i in range(len(x))]
        return classes, model.position_changes(), model.monitor_state().audits_done

    assert moves(5) == moves(5)
    assert moves(5)[2] != moves(6)[2]


def test_concurrent_predict_from_threads_counts_every_sample(bundles):
    with_path, _, x = bundles
    model = EarlyExitModel.load(with_path, monitor=Monitor(audit_rate=0.2, budget=0.5, queue_size=1000))
    reference = EarlyExitModel.load(with_path).predict(x)
    errors = []

    def work(rows):
        try:
            for i in rows:
                pred = model.predict(x[i : i + 1])
                if model.monitor_state().position == 4 and pred.classes[0] != reference.classes[i]:
                    errors.append(i)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(range(k, len(x), 4),)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    model.drain()
    state = model.monitor_state()
    model.close()
    assert not errors
    assert state.samples == len(x) and state.audits_pending == 0
    assert state.audits_done + state.audits_dropped > 40  # about 0.2 * 400 picked


def test_a_full_audit_queue_drops_audits_and_never_blocks_predict(bundles):
    with_path, _, x = bundles
    model = EarlyExitModel.load(with_path, monitor=Monitor(audit_rate=1.0, budget=0.5, queue_size=1))
    gate = threading.Lock()
    gate.acquire()
    audit = model._audit

    def stuck(items):  # the background thread waits here until released: the queue stays full
        with gate:
            audit(items)

    model._audit = stuck
    start = time.perf_counter()
    for i in range(50):
        model.predict(x[i : i + 1])
    elapsed = time.perf_counter() - start
    state = model.monitor_state()
    gate.release()
    model.close()
    assert state.audits_dropped >= 48 and state.samples == 50  # one running, at most one queued
    assert elapsed < 5.0  # a blocking put would never return while the gate is held


def test_monitor_settings_are_checked(bundles):
    with pytest.raises(HapiError, match="'audit_rate' of Monitor"):
        Monitor(audit_rate=0)
    with pytest.raises(HapiError, match="'window' of Monitor"):
        Monitor(window=0)
    with pytest.raises(HapiError, match="monitor must be"):
        EarlyExitModel.load(bundles[0], monitor="yes")


def test_run_monitor_prints_classes_exits_and_moves(bundles, tmp_path, run_cli):
    with_path, _, x = bundles
    np.save(tmp_path / "stream.npy", x[:120])
    result = run_cli("run", str(with_path), str(tmp_path / "stream.npy"), "--monitor", "--audit-rate", "0.5",
                     "--budget", "0", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out["predictions"]) == 120 and out["monitor"]["state"]["samples"] == 120
    move = out["monitor"]["changes"][0]
    assert move["old"] == 4 and move["new"] == 0
    assert all(p["exit"] == "final" for p in out["predictions"][move["sample"]:])
    again = run_cli("run", str(with_path), str(tmp_path / "stream.npy"), "--monitor", "--audit-rate", "0.5",
                    "--budget", "0", "--json")
    for run_ in (out, again := json.loads(again.output)):
        del run_["monitor"]["state"]["audit_seconds"]  # the one timing in it
    assert again == out  # one sample at a time, audits inline: reproducible
    bad = run_cli("run", str(with_path), str(tmp_path / "stream.npy"), "--audit-rate", "0.5")
    assert bad.exit_code == 2 and "--audit-rate needs --monitor" in bad.output


def test_the_js_state_machine_takes_the_python_positions_on_recorded_streams(bundles, tmp_path):
    """runtime-js/src/monitor.mjs against this module: positions on recorded audit streams (with
    drift steps, trusting the certificate or not), the bundle's path (certified and derived), and
    the records of recorded stage outputs."""
    from test_runtime_js import _run_node

    with_path, without, x = bundles
    rng = np.random.default_rng(2)
    streams, expected = [], []
    for trust, window in ((True, 200), (True, 50), (False, 1000)):
        rates = [rates_at(q) for q in (0.005, 0.3, 0.01, 0.08, 0.0)]
        records = np.concatenate([synthetic(r, 300, rng) for r in rates])
        c = Controller(10, BUDGET, level=0.9, window=window, trust_certificate=trust)
        expected.append(run(c, records))
        streams.append({"positions": 10, "budget": BUDGET, "level": 0.9, "window": window, "trust": trust,
                        "records": records.astype(int).tolist()})
    assert all(len(set(p)) > 1 for p in expected) and len({tuple(p) for p in expected}) == 3  # moves in each
    model = EarlyExitModel.load(with_path)
    stages = list(model.force_full_path().progressive(x[:100]))
    classes = np.stack([p.classes for p in stages], 1)
    confidences = np.stack([p.confidences for p in stages], 1)
    case = {"streams": streams, "bundle": str(with_path), "plain": str(without), "budget": 0.02,
            "classes": classes.tolist(), "confidences": confidences.astype(float).tolist()}
    (tmp_path / "cases.json").write_text(json.dumps(case))
    done = _run_node("runtime-js/test/monitor_check.mjs", tmp_path / "cases.json")
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    assert js["streams"] == expected
    rows, budget, certified = monitor_path(model.manifest)
    assert js["path"] == {"rows": rows.astype(float).tolist(), "budget": budget, "certified": certified}
    rows_d, budget_d, _ = monitor_path(EarlyExitModel.load(without).manifest, 0.02)
    assert js["derived"] == {"rows": rows_d.astype(float).tolist(), "budget": budget_d, "certified": False}
    assert js["records"] == disagreements(rows, classes, confidences).tolist()
