"""One search over several backbones: which model, with which exits, on this device.

Every design of every backbone (each model's full classifier included) is one design space, and
:func:`search_backbones` chooses in it under the same :class:`Constraints` as :func:`search`:

- Constraints that compare across models: ``min_accuracy`` and ``latency_sla_ms``. A drop
  budget (``max_accuracy_drop``) is relative to *one* full model and ``reference="final"`` is
  agreement with one full model, so with several backbones both are refused (with the most
  accurate full model's accuracy, so that a floor can be given instead).
- With a certified guarantee (``guarantee="split"`` and an accuracy floor), picking the backbone
  is a selection like picking the design's exits, so it is made on data the certificate does not
  use: every backbone is searched on the *search part* of the calibration samples (the same seeded
  split for all, :func:`~hapi_onnx.search.guarantee.split_indices`), its certification is
  *rehearsed* there (its path, from the full model down, tested on the search part itself:
  :attr:`~hapi_onnx.search.design_search.PartSearch.rehearsal`), the backbone whose rehearsal
  passes the fastest design is chosen, and only its path is certified on the *certify part*
  (fixed-sequence testing, :mod:`hapi_onnx.search.guarantee`). The rehearsal, not the
  search-part optimum, is compared because the path starts at the full model: a backbone whose
  full model misses the floor cannot certify anything, however good its exits look. The path and the backbone are both
  fixed before the certify part is read, so the statement holds for the whole selection:
  with probability at least ``bound_level``, the chosen design meets the floor on new data.
  (When no backbone passes its rehearsal, the one whose full model is most accurate on the search
  part is certified: with more samples it may pass.)
- Without a certificate (only an SLA, ``per-design`` or raw counts) each backbone is searched on
  every calibration sample and the best design by the objective wins, as in one search.

The result, :class:`BackboneSearch`, holds the chosen :class:`Design`, the joint Pareto front of
every backbone's designs (raw accuracy against latency on all calibration samples, each point
labelled by its backbone) and, per backbone, its best design under the constraints or why none.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from hapi_onnx.artifact import JsonArtifact
from hapi_onnx.choice import check_choices
from hapi_onnx.design import Design, FrontPoint
from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.search.constraints import Constraints
from hapi_onnx.search.design_search import (
    certify_searched,
    front_points,
    search,
    search_part,
    setup,
)
from hapi_onnx.search.optimise import GRID_SIZE, threshold_grid
from hapi_onnx.trace import Trace

SELECTION = (
    "the model was chosen among {count} on the {search} search-part samples only (the fastest design passing "
    "the certification rehearsed there); only its designs were certified, on the {certify} held-out samples"
)


@dataclass(frozen=True)
class Backbone:
    """One candidate model's search data.

    Attributes:
        label (str): Its name in the front and the summaries.
        trace (Trace): Its early-exit model's trace on the (shared) calibration data.
        table (LatencyTable): Its latency table on the (shared) device.
    """

    label: str
    trace: Trace
    table: LatencyTable


@dataclass(frozen=True)
class LabelledPoint:
    """A point of the joint front and the backbone it belongs to."""

    backbone: str
    point: FrontPoint


@dataclass(frozen=True)
class BackboneSummary:
    """One backbone's outcome.

    Attributes:
        label (str): The backbone.
        model_fingerprint (str): Its early-exit model's fingerprint (the bundle's, when chosen).
        full_accuracy (float | None): Its full model's accuracy on every calibration sample (None: no labels).
        full_ms (float): Its full model's measured mean latency on the device.
        best (FrontPoint | None): Its best design under the constraints (certified for the chosen
            backbone; for the others, its search-part optimum with the search part's numbers);
            None when none meets them.
        note (str): Why it was or was not chosen, in words.
    """

    label: str
    model_fingerprint: str
    full_accuracy: float | None
    full_ms: float
    best: FrontPoint | None
    note: str


@dataclass(frozen=True)
class BackboneSearch(JsonArtifact):
    """The outcome of :func:`search_backbones` (see the module docstring).

    Attributes:
        chosen (str): The chosen backbone's label.
        design (Design): The chosen design (of the chosen backbone's early-exit model).
        front (tuple[LabelledPoint, ...]): The joint Pareto front, by increasing latency.
        backbones (tuple[BackboneSummary, ...]): One per backbone, in the order given.
        selection (dict): How the backbone was chosen: ``method`` (``search-part`` or
            ``all-samples``) and, for ``search-part``, ``statement``.
    """

    KIND = "hapi-onnx backbone search"
    FORMAT_VERSION = 1

    chosen: str
    design: Design
    front: tuple[LabelledPoint, ...]
    backbones: tuple[BackboneSummary, ...]
    selection: dict[str, Any]

    def __post_init__(self):
        labels = [b.label for b in self.backbones]
        if self.chosen not in labels or any(p.backbone not in labels for p in self.front):
            raise HapiError(f"a backbone search names backbones {labels}; its choice and front must be among them.")
        if self.summary(self.chosen).model_fingerprint != self.design.model_fingerprint:
            raise HapiError(f"the chosen design was not searched on the chosen backbone {self.chosen!r}.")

    def summary(self, label: str) -> BackboneSummary:
        """The summary of the backbone called ``label``."""
        return next(b for b in self.backbones if b.label == label)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["design"] = self.design.to_dict()
        data["front"] = [{"backbone": p.backbone, **asdict(p.point)} for p in self.front]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BackboneSearch":
        def point(value: dict) -> FrontPoint:
            return FrontPoint(**{**value, "exits": check_choices(value["exits"])})

        front = tuple(
            LabelledPoint(p["backbone"], point({k: v for k, v in p.items() if k != "backbone"})) for p in data["front"]
        )
        backbones = tuple(
            BackboneSummary(**{**b, "best": None if b["best"] is None else point(b["best"])}) for b in data["backbones"]
        )
        return cls(chosen=data["chosen"], design=Design.from_dict(data["design"]), front=front,
                   backbones=backbones, selection=data["selection"])


def check_joint_constraints(constraints: Constraints, count: int, accuracies: dict[str, float] | None = None) -> None:
    """Refuse constraints that name one full model when there are ``count`` > 1 backbones.

    Args:
        constraints (Constraints): The constraints.
        count (int): How many backbones.
        accuracies (dict[str, float] | None): Full-model accuracies by label, to suggest a floor.

    Raises:
        HapiError: for a drop budget or ``reference="final"`` with several backbones.
    """
    if count < 2:
        return
    hint = ""
    if accuracies:
        best = max(accuracies, key=accuracies.get)
        hint = f" (the most accurate full model, {best!r}, is {100 * accuracies[best]:.2f}% on the calibration data)"
    if constraints.max_accuracy_drop is not None:
        raise HapiError(
            f"a drop budget (--max-accuracy-drop) is relative to one full model, and {count} models were given: "
            f"give an accuracy floor (--min-accuracy) instead, e.g. the most accurate model's accuracy minus the "
            f"budget{hint}."
        )
    if constraints.reference == "final":
        raise HapiError(
            f"--reference final measures agreement with one full model, and {count} models were given: "
            "search against the labels (--reference labels) with an accuracy floor or an SLA."
        )


def search_backbones(
    backbones: Sequence[Backbone],
    constraints: Constraints,
    *,
    optimiser: str = "auto",
    grid_size: int = GRID_SIZE,
    front: bool = True,
) -> BackboneSearch:
    """Choose a backbone and its design in one design space (see the module docstring).

    Args:
        backbones (Sequence[Backbone]): The candidate models, each with its trace on the same
            calibration samples (same labels, same order) and its latency table on the same device.
        constraints (Constraints): The constraints (no drop budget with several backbones).
        optimiser (str): As :func:`~hapi_onnx.search.search`'s, for every backbone. Defaults to auto.
        grid_size (int): As :func:`~hapi_onnx.search.search`'s. Defaults to 100.
        front (bool): Work out the joint front (one more search of every backbone on every sample).
            Defaults to True; False leaves it empty (for re-split studies that only need the choice).

    Returns:
        BackboneSearch: The chosen backbone and design, the joint front and one summary per backbone.

    Raises:
        HapiError: when the backbones do not share their classes, samples or device, a constraint
            names one full model, or no backbone meets the constraints.
    """
    backbones = list(backbones)
    _check_backbones(backbones)
    accuracies = {b.label: float(b.trace.accuracy[-1]) for b in backbones if b.trace.labels is not None}
    check_joint_constraints(constraints, len(backbones), accuracies)
    setups = [setup(b.trace, b.table, constraints, None, optimiser) for b in backbones]
    if constraints.certified:
        chosen, design, summaries, selection = _choose_on_search_part(backbones, setups, grid_size)
    else:
        chosen, design, summaries, selection = _choose_on_all(backbones, constraints, optimiser, grid_size)
    joint = _joint_front(backbones, setups, grid_size) if front else ()
    design = replace(design, extra={**design.extra, "backbone": backbones[chosen].label})
    return BackboneSearch(backbones[chosen].label, design, joint, tuple(summaries), selection)


def _check_backbones(backbones: list[Backbone]) -> None:
    if not backbones or not all(isinstance(b, Backbone) for b in backbones):
        raise HapiError(f"a backbone search needs a list of Backbone values. Got {backbones!r} instead.")
    labels = [b.label for b in backbones]
    if not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise HapiError(f"backbone labels must be distinct non-empty names. Got {labels!r} instead.")
    first = backbones[0]
    for b in backbones[1:]:
        if b.trace.num_classes != first.trace.num_classes:
            raise HapiError(
                f"model {b.label!r} has {b.trace.num_classes} classes but {first.label!r} has "
                f"{first.trace.num_classes}: a joint search needs models of the same task (same classes)."
            )
        a, z = first.trace.labels, b.trace.labels
        if (a is None) != (z is None) or a is not None and not np.array_equal(a, z):
            raise HapiError(
                f"model {b.label!r} was calibrated on other samples or labels than {first.label!r}: a joint "
                "search needs every model's trace on the same labelled calibration data, in the same order."
            )
        if b.table.device != first.table.device:
            raise HapiError(
                f"model {b.label!r} was profiled on {b.table.device!r} but {first.label!r} on "
                f"{first.table.device!r}: profile every model on the same device preset."
            )


def _choose_on_search_part(backbones: list[Backbone], setups: list, grid_size: int):
    """Search every backbone on the search part, choose there, certify only the chosen one."""
    parts = [search_part(problem, goal, optimise, grid_size=grid_size) for problem, goal, optimise, _ in setups]
    found = [i for i, p in enumerate(parts) if p.rehearsal[0] is not None]

    def part_accuracy(i: int) -> int:
        return int(parts[i].part.correct[-1].sum())

    if found:  # the objective is min-latency here (certified needs an accuracy floor): fastest, then most accurate
        chosen = min(found, key=lambda i: (parts[i].rehearsal[1], -parts[i].rehearsal[0].correct, i))
    else:  # as a single search: certify the most accurate full model's path (it may pass on more samples)
        chosen = max(range(len(parts)), key=lambda i: (part_accuracy(i), -i))
    label = backbones[chosen].label
    try:
        design = certify_searched(parts[chosen], optimiser=setups[chosen][3], grid_size=grid_size)
    except HapiError as err:
        raise HapiError(f"model {label!r}, chosen on the search part: {err}") from None
    summaries = []
    for i, (b, p) in enumerate(zip(backbones, parts, strict=True)):
        n = p.part.num_samples
        rehearsed, ms = p.rehearsal
        if i == chosen:
            best = _design_point(design)
            note = "chosen: " + ("fastest in the certification rehearsed on the search part; certified" if found else
                                 "no model passes the certification rehearsed on the search part; its full model is "
                                 "the most accurate there and was certified")
        elif rehearsed is None:
            best, note = None, (f"no design passes the certification rehearsed on the {n} search-part samples "
                                f"(full model {100 * part_accuracy(i) / n:.2f}% there)")
        else:
            best = replace(front_points(p.part, p.goal_part, [rehearsed])[0], latency_ms=ms)
            note = (f"not chosen: in the certification rehearsed on the {n} search-part samples its best design "
                    f"takes {ms:.3f} ms, the chosen model's ({label}) {parts[chosen].rehearsal[1]:.3f} ms "
                    "(numbers on the search part)")
        summaries.append(_summary(b, best, note))
    held = parts[chosen].held.num_samples
    selection = {
        "method": "search-part",
        "search_samples": parts[chosen].part.num_samples,
        "certify_samples": held,
        "statement": SELECTION.format(search=parts[chosen].part.num_samples, count=len(parts), certify=held),
    }
    return chosen, design, summaries, selection


def _choose_on_all(backbones: list[Backbone], constraints: Constraints, optimiser: str, grid_size: int):
    """No certificate to keep: every backbone searched on every sample, the best design by the objective."""
    designs: list[Design | None] = []
    reasons: list[str] = []
    for b in backbones:
        try:
            designs.append(search(b.trace, b.table, constraints, optimiser=optimiser, grid_size=grid_size))
            reasons.append("")
        except HapiError as err:
            designs.append(None)
            reasons.append(str(err))
    found = [i for i, d in enumerate(designs) if d is not None]
    if not found:
        raise HapiError("no model meets the constraints: " + "; ".join(
            f"{b.label!r}: {r}" for b, r in zip(backbones, reasons, strict=True)))
    stat = f"{constraints.percentile}_ms"

    def order(i: int) -> tuple:
        p = designs[i].predicted
        fast = (p[stat], -p["accuracy"])
        return (*(fast if constraints.has_accuracy_constraint else fast[::-1]), i)

    chosen = min(found, key=order)
    summaries = []
    for i, (b, d) in enumerate(zip(backbones, designs, strict=True)):
        if d is None:
            summaries.append(_summary(b, None, reasons[i]))
            continue
        fast = constraints.has_accuracy_constraint
        best, better = ("fastest", "faster") if fast else ("most accurate", "more accurate")
        note = (f"chosen: the {best} design" if i == chosen
                else f"not chosen: the chosen model's ({backbones[chosen].label}) design is {better}")
        summaries.append(_summary(b, _design_point(d), note))
    return chosen, designs[chosen], summaries, {"method": "all-samples"}


def _joint_front(backbones: list[Backbone], setups: list, grid_size: int) -> tuple[LabelledPoint, ...]:
    """Every backbone's Pareto front on all calibration samples, merged into one (labelled)."""
    points = []
    for b, (problem, goal, optimise, _) in zip(backbones, setups, strict=True):
        front = optimise(problem, threshold_grid(problem, grid_size), goal).front
        points += [LabelledPoint(b.label, q) for q in front_points(problem, goal, front)]
    points.sort(key=lambda p: (p.point.latency_ms, -p.point.accuracy))
    kept, best = [], -1.0
    for p in points:
        if p.point.accuracy > best:
            kept.append(p)
            best = p.point.accuracy
    return tuple(kept)


def _design_point(design: Design) -> FrontPoint:
    p = design.predicted
    return FrontPoint(design.exits, p["accuracy"], p[f"{design.latency_stat}_ms"], p["accuracy_lower_bound"],
                      p["accuracy_drop_bound_pp"], True)


def _summary(b: Backbone, best: FrontPoint | None, note: str) -> BackboneSummary:
    accuracy = None if b.trace.labels is None else float(b.trace.accuracy[-1])
    return BackboneSummary(b.label, b.trace.model_fingerprint, accuracy, float(b.table.monolithic.mean_ms), best, note)
