"""The Design artifact: which exits to ship, their thresholds, and what the search predicts.

``design.json`` (kind ``hapi-onnx design``, ``format_version`` 2). What the bundle step reads:

- ``exits``: the kept exits in depth order as ``{name, threshold}`` objects, the final classifier
  last with threshold null (:class:`~hapi_onnx.choice.ExitChoice`; the threshold rule and the
  comparison are in :mod:`hapi_onnx.choice`);
- ``policy``: ``max-softmax`` (the exit's confidence is its top-1 probability);
- ``predicted``: accuracy, ``mean_ms``, ``p50_ms``, ``p90_ms``, ``p99_ms`` (nearest-rank) of the
  predicted per-sample latency on the search data, ``exit_distribution`` (fraction of samples per
  kept exit, final last), ``speedup_vs_full`` (``reference.mean_ms / predicted.mean_ms``),
  ``accuracy_lower_bound`` (Wilson, a fraction) and ``accuracy_drop_bound_pp`` (paired upper bound
  of the drop) at ``constraints.bound_level`` (the raw values when it is 0; see
  :mod:`hapi_onnx.search.bounds`); and ``positions`` (optional in older designs): per kept exit, final
  last, the ``exit``, the ``mean_ms`` of leaving there, its distribution (``quantiles_ms``, 101
  quantiles) and its ``source`` (``pieces``: summed from the latency table's timed pieces;
  ``stages``: the design's own fused stages timed as the bundle runs them, with the ``runs`` timed,
  :mod:`hapi_onnx.search.stages`), from which ``evaluate`` re-computes the prediction on the test
  split's own exits (:func:`hapi_onnx.search.latency.mixture_stats`). Where stages were timed,
  ``search.stages`` records the ``rounds`` of timing and re-choosing, whether the choice was
  ``stable``, how many designs were ``timed`` and the chosen design's timed ``runs``.

Everything else records how the design was found: ``constraints``
(:class:`~hapi_onnx.search.constraints.Constraints`, which also give the objective, the latency
statistic and the threshold space), ``reference`` (the full model: the final classifier's accuracy
on the search data, the monolithic model's measured mean latency, and the predicted latency of the
staged model without early exits), the ``pareto_front`` of raw accuracy against latency it was
picked from (:class:`FrontPoint` by increasing latency; with bounds the chosen design need not be
on it), ``search`` (optimiser, grid size, number of search samples, candidate exits), the device,
and the fingerprints of the trace, latency table and model. A certified search also records, in
``search.guarantee.path``, the thresholds of every certified design from the full model (not
listed) to the chosen one, safest first: the bundle carries it for the runtime's drift monitor.
"""

from dataclasses import dataclass, field
from typing import Any

from hapi_onnx.artifact import JsonArtifact
from hapi_onnx.checks import finite_number
from hapi_onnx.choice import ExitChoice, check_choices
from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import QUANTILES
from hapi_onnx.search.constraints import Constraints

POLICIES = ("max-softmax",)
PREDICTED_KEYS = (
    "accuracy", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "exit_distribution", "speedup_vs_full",
    "accuracy_lower_bound", "accuracy_drop_bound_pp",
)
REFERENCE_KEYS = ("accuracy", "mean_ms", "no_exit_mean_ms", "no_exit_p90_ms")


@dataclass(frozen=True)
class FrontPoint:
    """One design on the Pareto front of the search data.

    Attributes:
        exits (tuple[ExitChoice, ...]): Its exits, final classifier last.
        accuracy (float): Raw accuracy on the search data.
        latency_ms (float): Predicted latency statistic (the constraints' ``percentile``).
        accuracy_lower_bound (float): Wilson lower bound of its accuracy at the bound level.
        accuracy_drop_bound_pp (float): Upper bound of its drop from the full model, in points.
        feasible (bool): Whether it meets every constraint, bounds included.
    """

    exits: tuple[ExitChoice, ...]
    accuracy: float
    latency_ms: float
    accuracy_lower_bound: float
    accuracy_drop_bound_pp: float
    feasible: bool

    def __post_init__(self):
        object.__setattr__(self, "exits", check_choices(self.exits))
        numbers = (self.accuracy, self.latency_ms, self.accuracy_lower_bound, self.accuracy_drop_bound_pp)
        if not all(finite_number(x) for x in numbers) or not isinstance(self.feasible, bool):
            raise HapiError(f"a front point needs numbers and a feasible flag. Got {self!r}.")


@dataclass(frozen=True)
class Design(JsonArtifact):
    """Chosen exits and thresholds with predicted accuracy and latency (see the module docstring).

    Attributes:
        exits (tuple[ExitChoice, ...]): Kept exits in depth order, final classifier last.
        constraints (Constraints): What the design was searched for.
        predicted (dict): Predicted metrics on the search data.
        reference (dict): ``accuracy``, ``mean_ms`` (measured monolithic), ``no_exit_mean_ms``,
            ``no_exit_p90_ms`` (predicted, staged model without early exits).
        pareto_front (tuple[FrontPoint, ...]): The front, by increasing latency.
        search (dict): ``optimiser``, ``exact`` (whether that optimiser's answer is the exact
            optimum), ``optimality`` (what it guarantees), ``grid_size``, ``num_samples``,
            ``candidates``.
        device (str): Device preset of the latency table.
        trace_fingerprint (str): Of the trace searched on.
        latency_fingerprint (str): Of the latency table used.
        model_fingerprint (str): Of the over-provisioned model both were taken on.
        policy (str): Exit policy, ``max-softmax``.
        extra (dict): Free-form notes.
    """

    KIND = "hapi-onnx design"
    FORMAT_VERSION = 2

    exits: tuple[ExitChoice, ...]
    constraints: Constraints
    predicted: dict[str, Any]
    reference: dict[str, Any]
    pareto_front: tuple[FrontPoint, ...]
    search: dict[str, Any]
    device: str
    trace_fingerprint: str
    latency_fingerprint: str
    model_fingerprint: str
    policy: str = "max-softmax"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "exits", check_choices(self.exits))
        object.__setattr__(self, "pareto_front", tuple(self.pareto_front))
        _validate(self)

    @property
    def exit_names(self) -> list[str]:
        """Names of the kept exits, final classifier last."""
        return [c.name for c in self.exits]

    @property
    def objective(self) -> str:
        """``max-accuracy`` or ``min-latency`` (from the constraints)."""
        return self.constraints.objective

    @property
    def latency_stat(self) -> str:
        """The latency statistic of the constraints and the front."""
        return self.constraints.percentile

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Design":
        data = dict(data)
        data["exits"] = check_choices(data["exits"])
        data["constraints"] = Constraints.from_dict(data["constraints"])
        data["pareto_front"] = tuple(
            FrontPoint(**{**point, "exits": check_choices(point["exits"])}) for point in data["pareto_front"]
        )
        return cls(**data)


def _validate(d: Design) -> None:
    """Raise HapiError when a design is inconsistent (wrong types, lengths or values)."""
    if not isinstance(d.constraints, Constraints):
        raise HapiError(f"constraints must be a Constraints value. Got {d.constraints!r}.")
    if d.policy not in POLICIES:
        raise HapiError(f"policy must be one of {', '.join(POLICIES)}. Got {d.policy!r}.")
    if not isinstance(d.predicted, dict) or any(k not in d.predicted for k in PREDICTED_KEYS):
        raise HapiError(f"predicted must hold {', '.join(PREDICTED_KEYS)}. Got {d.predicted!r}.")
    dist = d.predicted["exit_distribution"]
    if not isinstance(dist, list) or len(dist) != len(d.exits) or not all(finite_number(x) for x in dist):
        raise HapiError(f"predicted exit_distribution must hold one fraction per exit. Got {dist!r}.")
    if not all(finite_number(d.predicted[k]) for k in PREDICTED_KEYS if k != "exit_distribution"):
        raise HapiError(f"predicted metrics must be numbers. Got {d.predicted!r}.")
    positions = d.predicted.get("positions")
    if positions is not None and not valid_positions(positions, len(d.exits)):
        raise HapiError(
            f"predicted positions must hold, per exit, its mean_ms and {QUANTILES} non-decreasing quantiles_ms. "
            f"Got {positions!r}."
        )
    if not isinstance(d.reference, dict) or not all(finite_number(d.reference.get(k)) for k in REFERENCE_KEYS):
        raise HapiError(f"reference must hold the numbers {', '.join(REFERENCE_KEYS)}. Got {d.reference!r}.")
    if not all(isinstance(p, FrontPoint) for p in d.pareto_front):
        raise HapiError("pareto_front must be a list of front points.")
    if not isinstance(d.search, dict) or not isinstance(d.extra, dict):
        raise HapiError("search and extra must be objects.")
    samples = d.search.get("num_samples")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise HapiError(f"search must record num_samples, the number of samples searched on. Got {samples!r}.")
    optimiser, candidates = d.search.get("optimiser", ""), d.search.get("candidates", [])
    names = isinstance(candidates, list) and all(isinstance(c, str) for c in candidates)
    if not isinstance(optimiser, str) or not names:
        raise HapiError(
            f"search optimiser must be a name and candidates a list of exit names. Got {optimiser!r}, {candidates!r}."
        )
    if not isinstance(d.search.get("exact", True), bool) or not isinstance(d.search.get("optimality", ""), str):
        raise HapiError(f"search 'exact' must be true or false and 'optimality' a text. Got {d.search!r}.")
    guarantee = d.search.get("guarantee")
    if guarantee is not None and not (
        isinstance(guarantee, dict) and isinstance(guarantee.get("statement"), str)
        and isinstance(guarantee.get("certified"), int) and not isinstance(guarantee.get("certified"), bool)
    ):
        raise HapiError(f"search guarantee must hold its statement and the number certified. Got {guarantee!r}.")
    for name in ("device", "trace_fingerprint", "latency_fingerprint", "model_fingerprint"):
        if not isinstance(getattr(d, name), str):
            raise HapiError(f"{name} must be a string. Got {getattr(d, name)!r}.")


def valid_positions(positions: Any, num_exits: int) -> bool:
    """Whether ``positions`` are a design's per-exit latency records (see the module docstring)."""
    def ok(p: Any) -> bool:
        q = p.get("quantiles_ms") if isinstance(p, dict) else None
        return (finite_number(p.get("mean_ms")) and isinstance(q, list) and len(q) == QUANTILES
                and all(finite_number(v) for v in q) and all(a <= b for a, b in zip(q, q[1:], strict=False)))

    return isinstance(positions, list) and len(positions) == num_exits and all(ok(p) for p in positions)
