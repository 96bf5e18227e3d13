"""One search over several backbones (hapi_onnx.search.backbones), on synthetic traces and tables."""

from dataclasses import replace

import numpy as np
import pytest

from hapi_onnx.errors import HapiError
from hapi_onnx.search import Constraints, search
from hapi_onnx.search.backbones import Backbone, BackboneSearch, search_backbones
from hapi_onnx.search.guarantee import split_indices
from hapi_onnx.search.report import backbone_lines, joint_front_lines
from hapi_onnx.search.synthetic import synthetic_table, synthetic_trace

N = 1200
LABELS = np.random.default_rng(99).integers(0, 10, size=N).astype(np.int64)


def backbone(label: str, seed: int, backbone_ms: float, exits: int = 4, skill: float = 0.0) -> Backbone:
    """A synthetic backbone on the shared labels: its own right/wrong pattern, ``skill`` more samples right."""
    trace = synthetic_trace(exits, N, seed=seed)
    correct = trace.pred == trace.labels
    if skill:
        flip = np.random.default_rng(seed + 7).random(correct.shape) < skill
        correct = correct | flip
    pred = np.where(correct, LABELS[None, :], (LABELS[None, :] + 1) % 10)
    trace = replace(trace, labels=LABELS, pred=pred.astype(np.int64))
    table = synthetic_table(exits, seed=seed, backbone_ms=backbone_ms, model_fingerprint=trace.model_fingerprint)
    return Backbone(label, trace, table)


@pytest.fixture(scope="module")
def models():
    return [backbone("big", 1, 4.0, skill=0.25), backbone("mid", 2, 2.0, skill=0.1), backbone("small", 3, 1.0)]


def accuracy(b: Backbone) -> float:
    return float(np.mean(b.trace.pred[-1] == b.trace.labels))


def test_the_choice_is_the_chosen_backbones_own_certified_design_and_the_front_is_labelled(models):
    floor = min(accuracy(b) for b in models) - 0.05
    result = search_backbones(models, Constraints(min_accuracy=floor))
    chosen = next(b for b in models if b.label == result.chosen)
    assert result.design.model_fingerprint == chosen.trace.model_fingerprint
    assert result.summary(result.chosen).model_fingerprint == chosen.trace.model_fingerprint
    assert result.design.extra["backbone"] == result.chosen
    alone = search(chosen.trace, chosen.table, Constraints(min_accuracy=floor))  # same split, same path
    assert result.design.exits == alone.exits and result.design.predicted == alone.predicted
    assert result.selection["method"] == "search-part"
    # one front, every point labelled by a backbone, Pareto: faster points are less accurate
    assert {p.backbone for p in result.front} <= {b.label for b in models}
    assert len({p.backbone for p in result.front}) >= 2
    latency = [p.point.latency_ms for p in result.front]
    acc = [p.point.accuracy for p in result.front]
    assert latency == sorted(latency) and all(a < b for a, b in zip(acc, acc[1:], strict=False))
    starred = [line for line in joint_front_lines(result) if line.lstrip().startswith("*")]
    assert len(starred) == 1 and starred[0].split()[1] == result.chosen
    text = "\n".join(backbone_lines(result))
    assert all(b.label in text for b in models) and "chosen" in text


def test_the_backbone_is_chosen_without_the_certify_part(models):
    floor = min(accuracy(b) for b in models) - 0.05
    first = search_backbones(models, Constraints(min_accuracy=floor))
    _, certify = split_indices(N)
    # every other model made perfect on the certify part only: the choice must not move
    changed = []
    for b in models:
        if b.label != first.chosen:
            pred = b.trace.pred.copy()
            pred[:, certify] = LABELS[certify]
            b = replace(b, trace=replace(b.trace, pred=pred))
        changed.append(b)
    again = search_backbones(changed, Constraints(min_accuracy=floor))
    assert again.chosen == first.chosen and again.design.exits == first.design.exits


def test_sla_only_takes_the_most_accurate_design_of_every_backbone_within_it(models):
    sla = 0.6
    result = search_backbones(models, Constraints(latency_sla_ms=sla))
    assert result.selection["method"] == "all-samples"
    singles = []
    for b in models:
        try:
            singles.append(search(b.trace, b.table, Constraints(latency_sla_ms=sla)).predicted["accuracy"])
        except HapiError:
            pass
    assert result.design.predicted["accuracy"] == max(singles)
    assert result.design.predicted["mean_ms"] <= sla
    assert [b.best is None and "latency <= 0.6 ms" in b.note for b in result.backbones] == [True, True, False]


def test_a_drop_budget_with_several_models_is_refused_and_names_the_most_accurate(models):
    with pytest.raises(HapiError, match=r"drop budget.*--min-accuracy.*'big'") as err:
        search_backbones(models, Constraints(max_accuracy_drop=1.0))
    assert "\n" not in str(err.value)
    with pytest.raises(HapiError, match="--reference final"):
        search_backbones(models, Constraints(min_accuracy=0.5, reference="final"))
    one = search_backbones(models[:1], Constraints(max_accuracy_drop=1.0))  # one model: its own full model
    assert one.chosen == "big"


def test_models_of_other_classes_or_samples_are_refused_in_one_line(models):
    big, mid = models[0], models[1]
    nine = replace(mid, trace=replace(mid.trace, num_classes=9, pred=mid.trace.pred % 9, labels=LABELS % 9))
    with pytest.raises(HapiError, match="'mid' has 9 classes but 'big' has 10") as err:
        search_backbones([big, nine], Constraints(min_accuracy=0.5))
    assert "\n" not in str(err.value)
    shuffled = replace(mid, trace=replace(mid.trace, labels=LABELS[::-1].copy()))
    with pytest.raises(HapiError, match="other samples or labels"):
        search_backbones([big, shuffled], Constraints(min_accuracy=0.5))
    with pytest.raises(HapiError, match="distinct"):
        search_backbones([big, replace(mid, label="big")], Constraints(min_accuracy=0.5))


def test_no_model_meeting_the_constraints_says_why_for_each():
    models = [backbone("a", 1, 2.0), backbone("b", 2, 1.0)]
    with pytest.raises(HapiError, match=r"no model meets the constraints: 'a': .*; 'b': "):
        search_backbones(models, Constraints(latency_sla_ms=0.01))


def test_the_result_round_trips(models, tmp_path):
    result = search_backbones(models, Constraints(min_accuracy=0.5))
    result.save(tmp_path / "front.json")
    back = BackboneSearch.load(tmp_path / "front.json")
    assert back == result
