"""Predict what will run: time a design's own fused stages as the bundle runs them.

The latency table times pieces (segments, heads, cuts, one call); a design's prediction sums them
(:meth:`~hapi_onnx.search.problem.SearchProblem.position_costs`). The bundle runs fused stages, and
pieces do not add up to them (the first stage, where most samples leave, runs faster fused). So,
after the search's first choice, :func:`choose_on_stages` builds the stages of the chosen design and
of its closest rivals on the front, times them with :class:`StageTimer`, re-scores those designs on
the measured numbers and repeats until the choice no longer changes (at most ``rounds`` rounds).

:class:`StageTimer` times each position of a design (leaving at kept exit ``j``: stages ``0..j`` and
their decisions) in one stream of batch-1 ``predict`` calls through the runtime
(:class:`~hapi_onnx.runtime.EarlyExitModel`, the device preset's session options), on the
calibration split's inputs: each call is forced to leave at a position drawn from the design's own
exit mix on the search data (mixed with a uniform share, so every position is timed), after a
warm-up. Each position keeps its distribution (:data:`~hapi_onnx.profile.table.QUANTILES`
quantiles and the mean) and records ``source: "stages"``; a position timed on fewer than
``MIN_RUNS`` calls keeps the table's numbers (``source: "pieces"``).
"""

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapi_onnx.choice import ExitChoice
from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import QUANTILES

MIN_RUNS = 30  # timed calls a position needs before its stage numbers replace the pieces'
UNIFORM_SHARE = 0.4  # of the timed stream spread evenly over the positions, the rest by the design's exit mix
RIVALS = 3  # closest rivals on the front timed with the choice, each round
ROUNDS = 3  # rounds of timing and re-scoring at most

Positions = list[dict]
"""One record per position, final classifier last: ``exit``, ``mean_ms``, ``quantiles_ms``, ``source``."""


@dataclass
class StageTimer:
    """Times designs' fused stages on one device (see the module docstring).

    Attributes:
        ee_model: The over-provisioned model (path or ``onnx.ModelProto``) the design is searched on.
        inputs (np.ndarray): Model inputs of the calibration split, the first axis the samples.
        device (str): Device preset name or file (its providers and session options).
        runs (int): Timed ``predict`` calls per design. Defaults to 2000.
        warmup (int): Untimed calls first. Defaults to 100.
        seed (int): Of the order of positions and inputs. Defaults to 0.
    """

    ee_model: object
    inputs: np.ndarray
    device: str = "cpu-1t"
    runs: int = 2000
    warmup: int = 100
    seed: int = 0
    _model: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        from hapi_onnx.graph.load import load_model

        if len(self.inputs) < 1 or self.runs < MIN_RUNS or self.warmup < 0:
            raise HapiError(f"timing stages needs inputs and at least {MIN_RUNS} runs. Got {len(self.inputs)} "
                            f"inputs, {self.runs} runs.")
        self._model = load_model(self.ee_model)

    @classmethod
    def from_files(cls, ee_model, data, device: str, max_inputs: int = 2000, **options) -> "StageTimer":
        """A timer of ``ee_model`` on (at most ``max_inputs`` of) the calibration split ``data`` (a
        path, read with the preprocessing attach recorded, or a :class:`~hapi_onnx.data.DataSource`)."""
        from hapi_onnx.data import DataSource, open_dataset
        from hapi_onnx.exits.input_record import InputRecord
        from hapi_onnx.graph.load import load_model

        model = load_model(ee_model)
        spec = None if isinstance(data, DataSource) else InputRecord.from_model(model).preprocessing
        x = open_dataset(data, spec).to_memory().x
        return cls(model, x[:max_inputs], device, **options)

    @property
    def model_fingerprint(self) -> str:
        """Of the model whose stages are timed (the trace's must be the same)."""
        from hapi_onnx.graph.load import model_fingerprint

        return model_fingerprint(self._model)

    def __call__(self, exits: Sequence[ExitChoice], fractions: Sequence[float]) -> list[dict | None]:
        """Per position of the design keeping ``exits`` (final classifier last), its measured record
        (``mean_ms``, ``quantiles_ms``, ``runs``) or None where it was timed fewer than ``MIN_RUNS``
        times; ``fractions`` is the design's exit mix (one per position)."""
        from hapi_onnx.bundle import write_bundle
        from hapi_onnx.profile.presets import load_preset
        from hapi_onnx.runtime import EarlyExitModel
        from hapi_onnx.runtime.model import NEVER

        preset = load_preset(self.device)
        with tempfile.TemporaryDirectory() as scratch:
            bundle = write_bundle(self._model, exits, Path(scratch) / "model.hapi")
            model = EarlyExitModel.load(bundle, providers=preset.provider_names,
                                        session_options=preset.session_options(),
                                        provider_options=preset.provider_options)
        m = len(exits)
        forced = [model.with_thresholds([NEVER] * j + [0.0] * (m - 1 - j)) for j in range(m)]
        mix = np.asarray(fractions, dtype=np.float64)
        mix = (1 - UNIFORM_SHARE) * mix / mix.sum() + UNIFORM_SHARE / m
        rng = np.random.default_rng(self.seed)
        order = rng.choice(m, size=self.warmup + self.runs, p=mix)
        samples = rng.integers(0, len(self.inputs), size=len(order))
        times = timed_stream(forced, order, samples, self.inputs)[self.warmup:]
        order = order[self.warmup:]
        out = []
        for j in range(m):
            t = times[order == j]
            out.append(None if len(t) < MIN_RUNS else {
                "mean_ms": float(t.mean()),
                "quantiles_ms": [round(float(v), 7) for v in np.quantile(t, np.linspace(0, 1, QUANTILES))],
                "runs": int(len(t)),
            })
        return out


def timed_stream(models: Sequence, order: np.ndarray, samples: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """float64 ms of each batch-1 ``models[order[i]].predict(inputs[samples[i]])``, in one stream."""
    import time

    clock = time.perf_counter_ns
    out = np.empty(len(order), dtype=np.float64)
    for i, (j, s) in enumerate(zip(order, samples, strict=True)):
        x = inputs[s : s + 1]
        t0 = clock()
        models[j].predict(x)
        out[i] = clock() - t0
    return out / 1e6


def measured_positions(pieces: Positions, measured: Sequence[dict | None]) -> Positions:
    """A design's position records with the stage measurements in place of the pieces' numbers
    where there are any (``source: "stages"``, ``runs``); the others stay ``pieces``."""
    out = []
    for record, m in zip(pieces, measured, strict=True):
        out.append(dict(record) if m is None else {"exit": record["exit"], **m, "source": "stages"})
    return out


@dataclass
class StageChoice:
    """Outcome of :func:`choose_on_stages`.

    Attributes:
        chosen (int): Index of the chosen design among the ones given.
        positions (dict[int, Positions]): Measured position records of each design timed, by index.
        rounds (int): Rounds of timing run.
        stable (bool): Whether the choice stopped changing (else the rounds ran out).
    """

    chosen: int
    positions: dict[int, Positions]
    rounds: int
    stable: bool


def choose_on_stages(
    count: int,
    first: int,
    pieces: Callable[[int], Positions],
    measure: Callable[[int], Positions],
    statistic: Callable[[int, Positions], float],
    allowed: Callable[[int, float], bool],
    better: Callable[[int, float], tuple],
    rival: Callable[[int], bool],
    *,
    rivals: int = RIVALS,
    rounds: int = ROUNDS,
) -> StageChoice:
    """Re-choose among ``count`` designs (the search's choice ``first`` and its front) on timed stages.

    Each round times the current choice and its ``rivals`` closest designs (by the statistic) not
    timed yet among those that may be (``rival``: an SLA's neighbours on either side of it),
    re-scores every design (timed ones on their stages, the rest on their pieces) and chooses again;
    it stops when the choice was timed and did not change (stable), or after ``rounds``.

    Args:
        count (int): Designs to choose among.
        first (int): The search's choice (on pieces).
        pieces (Callable): Design index -> its position records from the pieces.
        measure (Callable): Design index -> its position records with stage measurements.
        statistic (Callable): (index, positions) -> the latency statistic (ms) the goal ranks on.
        allowed (Callable): (index, statistic) -> whether the design meets every constraint.
        better (Callable): (index, statistic) -> a sort key, least best.
        rival (Callable): Design index -> whether it may be timed as a rival (it meets the
            constraints other than the latency SLA, which its stages may then meet).
        rivals (int): Rivals timed with the choice each round. Defaults to RIVALS.
        rounds (int): Rounds at most. Defaults to ROUNDS.
    """
    timed: dict[int, Positions] = {}

    def score(i: int) -> float:
        return statistic(i, timed[i] if i in timed else pieces(i))

    choice, done = first, 0
    for done in range(1, rounds + 1):
        here = score(choice)
        near = sorted((i for i in range(count) if i not in timed and i != choice and rival(i)),
                      key=lambda i: abs(score(i) - here))
        for i in [choice, *near[:rivals]]:
            if i not in timed:
                timed[i] = measure(i)
        ok = [i for i in range(count) if allowed(i, score(i))]
        previous, choice = choice, (min(ok, key=lambda i: better(i, score(i))) if ok else first)
        if choice in timed and choice == previous:
            return StageChoice(choice, timed, done, True)
    if choice not in timed:  # the rounds ran out on a design not timed: the best timed one instead
        ok = [i for i in timed if allowed(i, score(i))]
        choice = min(ok, key=lambda i: better(i, score(i))) if ok else first
    return StageChoice(choice, timed, done, False)
