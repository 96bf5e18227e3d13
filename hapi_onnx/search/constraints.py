"""What the user asks of a design: one :class:`Constraints` value, validated once, at construction.

``hapi-onnx search``, ``hapi-onnx build`` (flags and config file) and the Python API all build
this value, and the CLI takes its choices from the constants here, so a bad constraint fails
before any work and every entry point accepts the same things.

- ``latency_sla_ms`` with ``percentile`` (``mean``, ``p50``, ``p90`` or ``p99``): the largest
  allowed value of that statistic of the predicted per-sample latency, in ms.
- ``min_accuracy``: an accuracy floor, a fraction in (0, 1].
- ``max_accuracy_drop``: the largest accuracy drop from the full model, in percentage points.
- ``bound_level``: accuracy constraints hold at this level (in [0.5, 1)), not only on the raw
  counts of the calibration data; 0 checks raw counts.
- ``guarantee``: how the level is kept. ``split`` (default): designs are searched on part of the
  calibration data and certified on the rest, testing them in a fixed order from the safest
  (Learn-then-Test fixed-sequence testing with exact binomial p-values,
  :mod:`hapi_onnx.search.guarantee`), so the accuracy constraints hold for the *chosen* design
  with probability at least ``bound_level``. ``per-design``: the older check, one bound per design
  on all the calibration data; it holds for a design fixed in advance, not for the fastest of
  thousands, and is kept for comparison.
- ``reference``: ``labels`` (accuracy against the true classes) or ``final`` (agreement with the
  full model, for unlabelled calibration data: the accuracy drop can never exceed the
  disagreement, so a disagreement budget bounds the drop).
- ``space``: ``global`` (HAPI's space: one threshold for every kept exit) or ``per-exit``.

The objective follows: with only an SLA, the most accurate design within it (``max-accuracy``);
with an accuracy floor or drop budget, the fastest design meeting every constraint
(``min-latency``).
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from hapi_onnx.checks import finite_number
from hapi_onnx.errors import HapiError

PERCENTILES = ("mean", "p50", "p90", "p99")
SPACES = ("global", "per-exit")
GUARANTEES = ("split", "per-design")
REFERENCES = ("labels", "final")
OBJECTIVES = ("max-accuracy", "min-latency")
DEFAULT_BOUND_LEVEL = 0.9
CERTIFY_FRACTION = 0.7
"""Share of the calibration samples that certify the chosen design (``guarantee="split"``); the rest
are searched on (:mod:`hapi_onnx.search.guarantee`). Here, not there, so ``--help`` reads it without scipy."""
CERTIFY_SHARE = round(100 * CERTIFY_FRACTION)
SEARCH_SHARE = 100 - CERTIFY_SHARE
"""The guarantee's split in percent, for the help texts."""


def _option(help: str, flag: str | None = None, choices: tuple[str, ...] | None = None, accuracy: bool = False,
            old: str | None = None) -> dict[str, Any]:
    """A field's option metadata, which ``search`` and ``build`` make their flags from.

    Args:
        help (str): The option's help text.
        flag (str | None): The flag's name without ``--``. Defaults to the field's, ``-`` for ``_``.
        choices (tuple[str, ...] | None): The values it takes (a text field), else a number.
        accuracy (bool): A fraction or a percentage (``0.985``, ``98.5``, ``98.5%``).
        old (str | None): The name the field had before 0.2 (still read, with a note).
    """
    return {"help": help, "flag": flag, "choices": choices, "accuracy": accuracy, "old": old}


@dataclass(frozen=True)
class Constraints:
    """The user's constraints on a design (see the module docstring).

    Attributes:
        latency_sla_ms (float | None): Largest allowed ``percentile`` latency, in ms.
        percentile (str): Latency statistic of the SLA and the Pareto front. Defaults to "mean".
        min_accuracy (float | None): Accuracy floor, a fraction in (0, 1].
        max_accuracy_drop (float | None): Largest drop from the full model, in points (0..100).
        bound_level (float): Level the accuracy constraints hold at, in [0.5, 1); 0 = raw counts.
            Defaults to 0.9.
        space (str): Threshold space, ``global`` or ``per-exit``. Defaults to "global".
        guarantee (str): ``split`` (certified on held-out calibration samples) or ``per-design``.
            Defaults to "split".
        reference (str): ``labels`` or ``final`` (agreement with the full model). Defaults to "labels".

    Raises:
        HapiError: when no constraint is given or a value is of the wrong type or out of range.
    """

    latency_sla_ms: float | None = field(default=None, metadata=_option(
        "Largest allowed latency statistic (--percentile), in ms.", flag="latency-sla"))
    percentile: str = field(default="mean", metadata=_option(
        "Latency statistic the SLA and the Pareto front use: p50/p90/p99 are predicted with the device's jitter "
        "(the backbone's measured distributions) and the SLA is checked on that prediction.", choices=PERCENTILES))
    min_accuracy: float | None = field(default=None, metadata=_option(
        "Accuracy floor: a fraction (0.985) or a percentage (98.5 or 98.5%).", accuracy=True))
    max_accuracy_drop: float | None = field(default=None, metadata=_option(
        "Largest accuracy drop from the full model, in percentage points."))
    bound_level: float = field(default=DEFAULT_BOUND_LEVEL, metadata=_option(
        "With probability at least this (in [0.5, 1)), the chosen design meets the accuracy constraints on "
        "new data from the calibration data's distribution; 0 checks raw counts.", old="confidence"))
    space: str = field(default="global", metadata=_option(
        "Thresholds: one for all kept exits (HAPI's space), or refined per exit.", choices=SPACES, old="thresholds"))
    guarantee: str = field(default="split", metadata=_option(
        f"split: search on {SEARCH_SHARE}% of the calibration data, certify on the other {CERTIFY_SHARE}% by exact "
        "tests the floor and the accuracy drop (gains credited where that bounds it tighter) of the chosen design; "
        "per-design: one bound per design on all of it (does not survive the selection; for comparison).",
        choices=GUARANTEES))
    reference: str = field(default="labels", metadata=_option(
        "labels: accuracy against the true classes; final: agreement with the full model, for an unlabelled "
        "calibration set (a disagreement budget bounds the drop).", choices=REFERENCES))

    def __post_init__(self):
        _check_choice("percentile", self.percentile, PERCENTILES)
        _check_choice("space", self.space, SPACES)
        _check_choice("guarantee", self.guarantee, GUARANTEES)
        _check_choice("reference", self.reference, REFERENCES)
        if self.latency_sla_ms is not None and not (finite_number(self.latency_sla_ms) and self.latency_sla_ms > 0):
            _fail("latency_sla_ms", "a positive number of milliseconds", self.latency_sla_ms)
        if self.min_accuracy is not None and not (finite_number(self.min_accuracy) and 0 < self.min_accuracy <= 1):
            percent = finite_number(self.min_accuracy) and 1 < self.min_accuracy <= 100
            hint = f" (a fraction: {self.min_accuracy:g}% is {self.min_accuracy / 100:g})" if percent else ""
            _fail("min_accuracy", f"a fraction in (0, 1]{hint}", self.min_accuracy)
        if self.max_accuracy_drop is not None and not (
            finite_number(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100
        ):
            _fail("max_accuracy_drop", "a number of percentage points in [0, 100]", self.max_accuracy_drop)
        if not (finite_number(self.bound_level) and (self.bound_level == 0 or 0.5 <= self.bound_level < 1)):
            _fail("bound_level", "a number in [0.5, 1) such as 0.9, or 0 to check raw counts", self.bound_level)
        if self.latency_sla_ms is None and self.min_accuracy is None and self.max_accuracy_drop is None:
            raise HapiError(
                "A search needs at least one constraint: a latency SLA (--latency-sla MS), an accuracy "
                "floor (--min-accuracy A) or a largest accuracy drop (--max-accuracy-drop PP)."
            )
        for name in ("latency_sla_ms", "min_accuracy", "max_accuracy_drop", "bound_level"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))

    @property
    def has_accuracy_constraint(self) -> bool:
        """Whether an accuracy floor or a drop budget is set."""
        return self.min_accuracy is not None or self.max_accuracy_drop is not None

    @property
    def objective(self) -> str:
        """``min-latency`` with an accuracy constraint, else ``max-accuracy``."""
        return "min-latency" if self.has_accuracy_constraint else "max-accuracy"

    @property
    def uses_bounds(self) -> bool:
        """Whether accuracy constraints are checked on statistical bounds (not raw counts)."""
        return self.has_accuracy_constraint and self.bound_level > 0.5

    @property
    def certified(self) -> bool:
        """Whether the design is certified on held-out calibration samples (``split`` with bounds)."""
        return self.uses_bounds and self.guarantee == "split"

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Constraints":
        """Read :meth:`to_dict`'s form back.

        Raises:
            HapiError: when ``data`` is not an object of known fields, or the values are invalid.
        """
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not set(data) <= known:
            got = sorted(set(data) - known) if isinstance(data, dict) else data
            raise HapiError(f"constraints must be an object with fields {sorted(known)}. Got {got!r} instead.")
        return cls(**data)


def flag(name: str) -> str:
    """The CLI flag of constraint field ``name`` (``--latency-sla`` for ``latency_sla_ms``)."""
    meta = next(f for f in fields(Constraints) if f.name == name).metadata
    return "--" + (meta["flag"] or name.replace("_", "-"))


RENAMED = {f.metadata["old"]: f.name for f in fields(Constraints) if f.metadata["old"]}
"""Constraint names before 0.2 and the fields they are now (still read, with a note)."""


def take_constraints(values: dict[str, Any], note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Take the constraint fields out of flat options (a config file's keys or a command's flags).

    A name from before 0.2 (:data:`RENAMED`) is read as its field, with one line to ``note``;
    when both are given, the current name wins. ``None`` means not given.

    Args:
        values (dict): The options; the constraint keys (old and current) are removed from it.
        note (Callable | None): Where to say that an old name was used. Defaults to None.

    Returns:
        dict: The given constraint fields, for :class:`Constraints`.
    """
    for old, name in RENAMED.items():
        value = values.pop(old, None)
        if value is not None:
            if note is not None:
                note(f"warning: {old!r} is deprecated; use {name!r} ({flag(name)}) instead.")
            if values.get(name) is None:
                values[name] = value
    taken = {f.name: values.pop(f.name, None) for f in fields(Constraints)}
    return {name: value for name, value in taken.items() if value is not None}


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, f"one of {', '.join(allowed)}", value)


def _fail(name: str, expected: str, value: Any) -> None:
    raise HapiError(f"The constraint {name!r} must be {expected}. Got {value!r} instead.")
