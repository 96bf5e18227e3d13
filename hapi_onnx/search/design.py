"""The Design artifact: which exits to ship, their thresholds, and what the search predicts.

``design.json`` (kind ``hapi-onnx design``, ``format_version`` 1). What the bundle step reads:

- ``exits``: names of the kept exits in depth order, the final classifier last;
- ``exit_indices``: their indices in the trace / latency table (same order, final last);
- ``thresholds``: one max-softmax threshold per kept *intermediate* exit (``len(exits) - 1``);
  a sample leaves at the first kept exit whose top-1 probability is ``>= threshold``. Each value
  is a float32 (stored exactly in JSON): compare in float32 to reproduce the search's decisions;
- ``policy``: ``max-softmax``;
- ``predicted``: accuracy, ``mean_ms``, ``p50_ms``, ``p90_ms``, ``p99_ms`` (nearest-rank) of the
  predicted per-sample latency on the search data, ``exit_distribution`` (fraction of samples per
  kept exit, final last) and ``speedup_vs_full`` (``reference.mean_ms / predicted.mean_ms``);
  designs searched with accuracy bounds also record ``accuracy_lower_bound`` (Wilson, a fraction)
  and ``accuracy_drop_bound_pp`` (paired upper bound of the drop) at ``constraints.confidence``
  (both the raw values when the confidence is 0; see :mod:`hapi_onnx.search.bounds`).

Everything else records how the design was found: ``reference`` (the full model: the final
classifier's accuracy on the search data, the monolithic model's measured mean latency, and the
predicted latency of the staged model without early exits), ``constraints`` (with the
``confidence`` of the accuracy bounds), ``objective``, ``latency_stat``, the ``pareto_front`` of
raw accuracy against latency it was picked from (points by increasing latency: accuracy,
latency_ms of ``latency_stat``, exits, thresholds, and in newer files ``accuracy_lower_bound``,
``accuracy_drop_bound_pp`` and ``feasible``: whether the point meets every constraint, bounds
included; with bounds the chosen design need not be on this front), ``search`` (space ``global``/``per-exit``,
optimiser, grid size, number of search samples, candidate exits), the device, and the
fingerprints of the trace, latency table and model.
"""

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from hapi_onnx.artifact import load_json, save_json
from hapi_onnx.errors import HapiError

KIND = "hapi-onnx design"
FORMAT_VERSION = 1
POLICIES = ("max-softmax",)
PREDICTED_KEYS = ("accuracy", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "exit_distribution", "speedup_vs_full")
BOUND_KEYS = ("accuracy_lower_bound", "accuracy_drop_bound_pp")  # optional: older designs lack them


@dataclass(frozen=True)
class Design:
    """Chosen exits and thresholds with predicted accuracy and latency.

    Attributes:
        exits (list[str]): Kept exit names in depth order, final classifier last.
        exit_indices (list[int]): Their indices in the trace and latency table.
        thresholds (list[float]): One per kept intermediate exit.
        policy (str): Exit policy, ``max-softmax``.
        predicted (dict): See the module docstring.
        reference (dict): ``accuracy``, ``mean_ms`` (measured monolithic), ``no_exit_mean_ms``,
            ``no_exit_p90_ms`` (predicted, staged model without early exits).
        constraints (dict): ``latency_sla_ms``, ``percentile``, ``min_accuracy``, ``max_accuracy_drop``,
            ``confidence``.
        objective (str): ``max-accuracy`` or ``min-latency``.
        latency_stat (str): Statistic of the constraints and the front: mean, p50, p90 or p99.
        pareto_front (list[dict]): Points ``{accuracy, latency_ms, exits, thresholds}`` (and
            ``accuracy_lower_bound``, ``accuracy_drop_bound_pp``, ``feasible``).
        search (dict): ``space``, ``optimiser``, ``grid_size``, ``num_samples``, ``candidates``.
        device (str): Device preset of the latency table.
        trace_fingerprint (str): Of the trace searched on.
        latency_fingerprint (str): Of the latency table used.
        model_fingerprint (str): Of the over-provisioned model both were taken on.
    """

    exits: list[str]
    exit_indices: list[int]
    thresholds: list[float]
    policy: str
    predicted: dict[str, Any]
    reference: dict[str, Any]
    constraints: dict[str, Any]
    objective: str
    latency_stat: str
    pareto_front: list[dict[str, Any]]
    search: dict[str, Any]
    device: str
    trace_fingerprint: str
    latency_fingerprint: str
    model_fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _validate(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the design as JSON, atomically."""
        save_json(asdict(self), path, KIND, FORMAT_VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Design":
        """Read a design written by :meth:`save`.

        Raises:
            HapiError: when the file is missing, malformed, or not a design of this version.
        """
        data = load_json(path, KIND, FORMAT_VERSION)
        data = {k: v for k, v in data.items() if k not in ("kind", "format_version")}
        try:
            return cls(**data)
        except TypeError as err:
            raise HapiError(f"{str(path)!r} is a malformed {KIND}: {err}.") from None
        except HapiError as err:
            raise HapiError(f"{str(path)!r} is a malformed {KIND}: {err}") from None


def _validate(d: Design) -> None:
    """Raise HapiError when a design is inconsistent (wrong types, lengths or values)."""
    if not isinstance(d.exits, list) or not d.exits or not all(isinstance(e, str) for e in d.exits):
        raise HapiError(
            f"exits must be a non-empty list of exit names, final classifier last. Got {d.exits!r}."
        )
    if not isinstance(d.exit_indices, list) or len(d.exit_indices) != len(d.exits):
        raise HapiError(
            f"exit_indices must list one index per exit ({len(d.exits)}). Got {d.exit_indices!r}."
        )
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in d.exit_indices) or any(
        a >= b for a, b in zip(d.exit_indices, d.exit_indices[1:], strict=False)
    ):
        raise HapiError(f"exit_indices must be increasing non-negative integers. Got {d.exit_indices!r}.")
    if not isinstance(d.thresholds, list) or len(d.thresholds) != len(d.exits) - 1:
        raise HapiError(
            f"thresholds must hold one value per kept intermediate exit ({len(d.exits) - 1}). "
            f"Got {d.thresholds!r}."
        )
    if not all(_number(t) and 0.0 <= t <= 1.0 for t in d.thresholds):
        raise HapiError(f"thresholds must be numbers in [0, 1]. Got {d.thresholds!r}.")
    if d.policy not in POLICIES:
        raise HapiError(f"policy must be one of {', '.join(POLICIES)}. Got {d.policy!r}.")
    if not isinstance(d.predicted, dict) or any(k not in d.predicted for k in PREDICTED_KEYS):
        raise HapiError(f"predicted must hold {', '.join(PREDICTED_KEYS)}. Got {d.predicted!r}.")
    dist = d.predicted["exit_distribution"]
    if not isinstance(dist, list) or len(dist) != len(d.exits) or not all(_number(x) for x in dist):
        raise HapiError(f"predicted exit_distribution must hold one fraction per exit. Got {dist!r}.")
    numbers = [k for k in PREDICTED_KEYS + BOUND_KEYS if k != "exit_distribution" and k in d.predicted]
    if not all(_number(d.predicted[k]) for k in numbers):
        raise HapiError(f"predicted metrics must be numbers. Got {d.predicted!r}.")
    if not isinstance(d.reference, dict) or not all(
        _number(d.reference.get(k)) for k in ("accuracy", "mean_ms")
    ):
        raise HapiError(f"reference must hold the full model's accuracy and mean_ms. Got {d.reference!r}.")
    if d.objective not in ("max-accuracy", "min-latency"):
        raise HapiError(f"objective must be max-accuracy or min-latency. Got {d.objective!r}.")
    if d.latency_stat not in ("mean", "p50", "p90", "p99"):
        raise HapiError(f"latency_stat must be mean, p50, p90 or p99. Got {d.latency_stat!r}.")
    if not isinstance(d.pareto_front, list) or not all(
        isinstance(p, dict) and {"accuracy", "latency_ms", "exits", "thresholds"} <= set(p)
        for p in d.pareto_front
    ):
        raise HapiError("pareto_front must be a list of points {accuracy, latency_ms, exits, thresholds}.")
    if not isinstance(d.constraints, dict) or not isinstance(d.search, dict):
        raise HapiError("constraints and search must be objects.")
    for name in ("device", "trace_fingerprint", "latency_fingerprint", "model_fingerprint"):
        if not isinstance(getattr(d, name), str):
            raise HapiError(f"{name} must be a string. Got {getattr(d, name)!r}.")


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
