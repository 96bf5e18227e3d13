"""EarlyExitModel.predict / progressive: early-exit semantics, batch = single, thread safety, validation."""

import threading

import numpy as np
import pytest
from test_bundle_models import make_ee_model, reference_outputs, sample_images, softmax

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.runtime import BoundCall, BundleError, DataError, EarlyExitModel, HapiError

EXITS = ["exit0", "exit1", "exit2"]
N = 96


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 4-stage bundle whose thresholds are quantiles of each exit's confidence, so every stage is used."""
    model, x = make_ee_model(seed=7), sample_images(N, seed=11)
    ref = reference_outputs(model, x)
    probs = [ref[f"head{k}.probs"] for k in range(3)] + [softmax(ref["fc.logits"])]
    thresholds = [float(np.quantile(p.max(axis=1), 0.6)) for p in probs[:3]]
    bundle = write_bundle(model, choices_from(EXITS, thresholds), tmp_path_factory.mktemp("b") / "m.hapi")
    return EarlyExitModel.load(bundle), x, probs, thresholds


def expected_decisions(probs, thresholds):
    """First exit whose max probability reaches its threshold (in float32, as the search), per sample."""
    conf = np.stack([p.max(axis=1) for p in probs])
    exit_index = np.full(conf.shape[1], len(probs) - 1)
    for k in reversed(range(len(thresholds))):
        exit_index = np.where(conf[k] >= np.float32(thresholds[k]), k, exit_index)
    rows = np.arange(conf.shape[1])
    classes = np.stack([p.argmax(axis=1) for p in probs])[exit_index, rows]
    return exit_index, classes, conf[exit_index, rows]


def test_batch_prediction_follows_the_exit_rule(setup):
    model, x, probs, thresholds = setup
    pred = model.predict(x, return_probs=True)
    exit_index, classes, conf = expected_decisions(probs, thresholds)
    assert set(exit_index.tolist()) == {0, 1, 2, 3}
    assert np.array_equal(pred.exit_index, exit_index)
    assert np.array_equal(pred.classes, classes)
    np.testing.assert_allclose(pred.confidences, conf, atol=1e-6, rtol=0)
    stacked = np.stack(probs)[exit_index, np.arange(N)]
    np.testing.assert_allclose(pred.probs, stacked, atol=1e-6, rtol=0)
    assert pred.classes.dtype == np.int64 and pred.confidences.dtype == np.float32
    assert pred.exit_index.dtype == np.int64 and len(pred) == N


def test_single_samples_agree_with_the_batch(setup):
    """Batch 1 (IOBinding path) and batch N (compacted session.run) give the same answers.

    On the CPU provider they agree bitwise here; the contract is exact classes and exit
    indices, and confidences/probabilities within 1e-6.
    """
    model, x, _, _ = setup
    batch = model.predict(x, return_probs=True)
    singles = [model.predict(x[i : i + 1], return_probs=True) for i in range(N)]
    assert np.array_equal(np.concatenate([s.classes for s in singles]), batch.classes)
    assert np.array_equal(np.concatenate([s.exit_index for s in singles]), batch.exit_index)
    np.testing.assert_allclose(np.concatenate([s.confidences for s in singles]), batch.confidences, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([s.probs for s in singles]), batch.probs, atol=1e-6)
    again = model.predict(x[5:6])
    assert again.probs is None and again.classes[0] == batch.classes[5]


def test_batch_order_is_kept_under_compaction(setup):
    model, x, _, _ = setup
    order = np.random.default_rng(0).permutation(N)
    batch, shuffled = model.predict(x), model.predict(x[order])
    assert np.array_equal(shuffled.classes, batch.classes[order])
    assert np.array_equal(shuffled.exit_index, batch.exit_index[order])


def test_progressive_yields_every_exit(setup):
    model, x, probs, _ = setup
    steps = list(model.progressive(x[:8]))
    assert len(steps) == model.num_stages == 4
    for j, step in enumerate(steps):
        assert np.array_equal(step.exit_index, np.full(8, j))
        assert np.array_equal(step.classes, probs[j][:8].argmax(axis=1))
        np.testing.assert_allclose(step.probs, probs[j][:8], atol=1e-6)
    first = next(model.progressive(x[:1]))
    assert first.classes.shape == (1,)


def test_concurrent_predict_calls_are_safe(setup):
    model, x, _, _ = setup
    expected = model.predict(x)
    results, errors = {}, []

    def worker(t):
        try:
            for _ in range(3):
                for i in range(t, N, 4):
                    p = model.predict(x[i : i + 1])
                    results[i] = (int(p.classes[0]), int(p.exit_index[0]))
                half = model.predict(x[t::4])
                assert np.array_equal(half.classes, expected.classes[t::4])
        except Exception as err:  # noqa: BLE001 - reported to the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    pairs = zip(expected.classes.tolist(), expected.exit_index.tolist(), strict=True)
    assert [results[i] for i in range(N)] == list(pairs)


def test_threshold_overrides(setup):
    model, x, probs, _ = setup
    eager = model.with_thresholds([0.0, 0.0, 0.0]).predict(x)
    assert np.array_equal(eager.exit_index, np.zeros(N)) and np.array_equal(eager.classes, probs[0].argmax(1))
    full = model.force_full_path()
    assert full.thresholds == (2.0, 2.0, 2.0) and model.thresholds != full.thresholds
    assert np.array_equal(full.predict(x[:1]).exit_index, [3])
    with pytest.raises(HapiError, match="needs 3 thresholds"):
        model.with_thresholds([0.5])
    with pytest.raises(HapiError, match="finite number >= 0"):
        model.with_thresholds([0.5, float("nan"), 0.5])


@pytest.mark.parametrize(
    "thresholds",
    [["a"], [0.5, "a", 0.5], [0.5, "0.5", 0.5], [0.5, None, 0.5], [0.5, True, 0.5],
     [0.5, float("inf"), 0.5], [0.5, np.float32("nan"), 0.5], [0.5, -1, 0.5], "0.5"],
)
def test_thresholds_must_be_finite_numbers(setup, thresholds):
    with pytest.raises(HapiError, match="finite number >= 0|needs a threshold|needs 3 thresholds|list of numbers"):
        setup[0].with_thresholds(thresholds)


def test_numpy_and_int_thresholds_are_accepted(setup):
    model = setup[0]
    variant = model.with_thresholds([np.float32(0.25), np.int64(2), 1])
    assert variant.thresholds == (0.25, 2.0, 1.0)
    assert model.force_full_path().thresholds == (2.0,) * 3


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((1, 12, 12), np.float32), r"4D input .* Add a batch axis"),
        (np.zeros((2, 1, 12, 12), np.float64), "expects float32 input. Got float64"),
        (np.zeros((2, 3, 12, 12), np.float32), r"shape \(N, 1, 12, 12\)"),
        (np.zeros((0, 1, 12, 12), np.float32), "N >= 1"),
        ([[0.0]], "numpy array"),
    ],
)
def test_bad_inputs_raise_one_clear_error(setup, bad, match):
    model = setup[0]
    with pytest.raises(DataError, match=match):
        model.predict(bad)
    with pytest.raises(DataError, match=match):
        next(model.progressive(bad))
    assert not issubclass(DataError, BundleError) and issubclass(DataError, HapiError)


def test_non_contiguous_input_is_accepted(setup):
    model, x, _, _ = setup
    strided = np.concatenate([x, x], axis=3)[..., ::2]
    assert not strided.flags.c_contiguous
    a, b = model.predict(strided[:1]), model.predict(np.ascontiguousarray(strided[:1]))
    assert a.classes[0] == b.classes[0] and a.confidences[0] == b.confidences[0]


def test_unavailable_provider_is_a_clear_error(setup, tmp_path):
    bundle = write_bundle(make_ee_model(), choices_from(["exit0"], [0.9]), tmp_path / "m.hapi")
    with pytest.raises(HapiError, match="not available"):
        EarlyExitModel.load(bundle, providers=["NoSuchExecutionProvider"])


def test_thresholds_compare_in_float32_like_the_search(setup):
    """A threshold a quarter-ulp above a float32 confidence still lets that sample exit (float32 rule)."""
    model, x, probs, _ = setup
    conf = probs[0][:1].max(axis=1)[0]
    above = float(conf) + float(np.spacing(conf)) / 4
    assert above > float(conf) and np.float32(above) == conf
    for sample in (x[:1], np.concatenate([x[:1], x[:1]])):
        pred = model.with_thresholds([above, 2.0, 2.0]).predict(sample)
        assert np.array_equal(pred.exit_index, np.zeros(len(sample)))


def test_strided_batches_and_array_subclasses_predict_like_plain_arrays(setup):
    model, x, _, _ = setup
    wide = np.repeat(x, 2, axis=3)
    strided = wide[..., ::2]  # == x, not contiguous
    assert not strided.flags.c_contiguous and np.array_equal(strided, x)
    plain = model.predict(x)
    for variant in (strided, x.view(_Images), strided[:1], x[:1].view(_Images)):
        got = model.predict(variant)
        np.testing.assert_array_equal(got.classes, plain.classes[: len(variant)])
        np.testing.assert_array_equal(got.exit_index, plain.exit_index[: len(variant)])
        np.testing.assert_array_equal(got.confidences, plain.confidences[: len(variant)])


class _Images(np.ndarray):
    """A numpy subclass: not the fast path's exact type, still a valid input."""


def test_a_bound_call_computes_what_session_run_computes(setup):
    model, x, _, _ = setup
    stage = model._pipeline.stages[0]
    names = stage.names_probs
    expected = stage.session.run(names, {stage.spec.input: x[:1]})
    image = np.ascontiguousarray(x[:1])
    call = BoundCall(stage.session, {stage.spec.input: image}, dict(zip(names, expected, strict=True)),
                     share_inputs=True)
    assert call.buffers[stage.spec.input] is image
    call()
    for name, want in zip(names, expected, strict=True):
        np.testing.assert_array_equal(call.buffers[name], want)
