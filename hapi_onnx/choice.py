"""Which exits a design keeps and their thresholds: one value type from the search to the runtime.

A design is a sequence of :class:`ExitChoice`: the kept intermediate exits in depth order, each
with its confidence threshold, then the final classifier with none. The same sequence is what
the search returns (:class:`~hapi_onnx.design.Design`), what ``design.json`` stores, what
the bundle writer turns into one stage per choice (each stage's ``name`` and ``threshold`` in
``manifest.json``) and what :class:`~hapi_onnx.runtime.EarlyExitModel` runs.

**The threshold rule** (here, and nowhere else): a threshold is a finite number ``>= 0``, held as
the float32 value it compares as (``float(np.float32(t))``, stored exactly in JSON). Confidences
are max-softmax probabilities, at most 1, so a threshold above 1 never fires.

**The comparison** (search and runtimes alike): a sample leaves at the first kept exit whose
confidence reaches the threshold in float32, ``float32(confidence) >= float32(threshold)``
(:func:`leaves`); the final classifier decides every sample still running (:func:`first_exit`).
The scorer's sorted forms (:func:`thresholds_reached`, :func:`confidences_staying`) count the
same comparison. This is the only place the comparison is written in Python; the JS runtime
mirrors it once (``leaves`` in ``runtime-js/src/manifest.mjs``).

Imports numpy and the standard library only: the runtime uses it on the edge device.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hapi_onnx.checks import finite_number
from hapi_onnx.errors import HapiError

_FLOAT32_MAX = float(np.finfo(np.float32).max)
FINAL = "final"
"""Name of the final classifier's exit in every trace, latency table, design and bundle."""


def check_threshold(value: Any, where: str = "threshold") -> float:
    """The float32 value of a threshold, after the one rule every step applies.

    Args:
        value: The threshold as given (a Python or numpy number).
        where (str): What it is, for the message. Defaults to "threshold".

    Returns:
        float: ``float(np.float32(value))``.

    Raises:
        HapiError: when it is not a finite number >= 0 (bools and strings are not numbers).
    """
    if not (finite_number(value) and 0.0 <= value <= _FLOAT32_MAX):
        raise HapiError(
            f"{where} must be a finite number >= 0 (a confidence in [0, 1]; above 1 never exits). "
            f"Got {value!r} instead."
        )
    return float(np.float32(value))


def leaves(confidence: Any, threshold: Any) -> Any:
    """Whether a sample with this confidence leaves at an exit with this threshold: float32 ``>=``.

    Elementwise with numpy broadcasting (scalars give a numpy bool). A NaN confidence never
    leaves; a NaN threshold is refused before it gets here (:func:`check_threshold`). The JS
    runtime's mirror is ``leaves`` in ``runtime-js/src/manifest.mjs``.
    """
    return np.greater_equal(np.asarray(confidence, dtype=np.float32), np.asarray(threshold, dtype=np.float32))


def first_exit(confidence: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Where each sample leaves: the first kept exit it :func:`leaves` at, else the final classifier.

    Args:
        confidence (np.ndarray): float[m, N], each sample's confidence at the m kept exits.
        thresholds (np.ndarray): float[..., m], one threshold per kept exit (a batch of designs
            sharing their kept exits when it has leading axes).

    Returns:
        np.ndarray: int64[..., N] exit position per sample, ``0..m`` (``m`` is the final classifier).
    """
    conf = np.asarray(confidence, dtype=np.float32)
    thr = np.asarray(thresholds, dtype=np.float32)
    m, n = conf.shape
    confident = np.empty((*thr.shape[:-1], m + 1, n), dtype=bool)
    np.greater_equal(conf, thr[..., None], out=confident[..., :m, :])
    confident[..., m, :] = True
    return np.argmax(confident, axis=-2)


def thresholds_reached(ascending_thresholds: np.ndarray, confidence: Any) -> np.ndarray:
    """How many of the ascending float32 thresholds each confidence :func:`leaves` at.

    For confidences a trace holds (probabilities: never NaN, which ``searchsorted`` sorts last).
    """
    ascending = np.asarray(ascending_thresholds, dtype=np.float32)
    return np.searchsorted(ascending, np.asarray(confidence, dtype=np.float32), side="right")


def confidences_staying(ascending_confidences: np.ndarray, thresholds: Any) -> np.ndarray:
    """How many of the ascending float32 confidences (never NaN) do not :func:`leave <leaves>` at each threshold."""
    ascending = np.asarray(ascending_confidences, dtype=np.float32)
    return np.searchsorted(ascending, np.asarray(thresholds, dtype=np.float32), side="left")


@dataclass(frozen=True)
class ExitChoice:
    """One exit a design keeps.

    Attributes:
        name (str): The exit (``exit<k>``, or :data:`FINAL` for the final classifier).
        threshold (float | None): Leave here when the confidence reaches it (see the module
            docstring); None for the final classifier, which decides every remaining sample.
    """

    name: str
    threshold: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise HapiError(f"An exit's name must be a non-empty string. Got {self.name!r} instead.")
        if self.threshold is not None:
            object.__setattr__(self, "threshold", check_threshold(self.threshold, f"threshold of {self.name!r}"))

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "threshold": ...}`` (threshold null for the final classifier)."""
        return {"name": self.name, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Any) -> "ExitChoice":
        """Read :meth:`to_dict`'s form back.

        Raises:
            HapiError: when ``data`` is not an object with exactly ``name`` and ``threshold``.
        """
        if not isinstance(data, dict) or set(data) != {"name", "threshold"}:
            raise HapiError(f"An exit must be an object {{name, threshold}}. Got {data!r} instead.")
        return cls(data["name"], data["threshold"])


def check_choices(choices: Iterable[Any]) -> tuple[ExitChoice, ...]:
    """Validate a design's exits: kept intermediate exits with thresholds, the final one last without.

    Args:
        choices (Iterable[ExitChoice | dict]): The exits in depth order (dicts are read with
            :meth:`ExitChoice.from_dict`).

    Returns:
        tuple[ExitChoice, ...]: The same exits.

    Raises:
        HapiError: when the sequence is empty, a name repeats, an intermediate exit has no
            threshold, or the last exit has one.
    """
    if isinstance(choices, (str, bytes, dict)) or not isinstance(choices, Iterable):
        raise HapiError(f"A design's exits must be a list of exits, the final one last. Got {choices!r} instead.")
    result = tuple(c if isinstance(c, ExitChoice) else ExitChoice.from_dict(c) for c in choices)
    if not result:
        raise HapiError("A design keeps at least the final classifier. Got no exits.")
    names = [c.name for c in result]
    if len(set(names)) != len(names):
        raise HapiError(f"A design's exits must be distinct. Got {names!r} instead.")
    if result[-1].threshold is not None:
        raise HapiError(
            f"The last exit of a design is the final classifier and has no threshold. Got {result[-1]!r} instead."
        )
    missing = [c.name for c in result[:-1] if c.threshold is None]
    if missing:
        raise HapiError(f"Every intermediate exit needs a threshold; {missing!r} have none.")
    return result


def choices_from(names: Sequence[str], thresholds: Sequence[Any]) -> tuple[ExitChoice, ...]:
    """Pair intermediate exit ``names`` with ``thresholds`` and append the final classifier.

    Raises:
        HapiError: when the counts differ, or anything :func:`check_choices` refuses.
    """
    names, thresholds = list(names), list(thresholds)
    if names and names[-1] == FINAL:
        names = names[:-1]
    if len(names) != len(thresholds):
        raise HapiError(
            f"Give one threshold per kept intermediate exit {names!r}. Got {len(thresholds)}: {thresholds!r}."
        )
    if FINAL in names:
        raise HapiError(f"{FINAL!r} must be the last exit. Got {names!r}.")
    return check_choices([*map(ExitChoice, names, thresholds), ExitChoice(FINAL)])
