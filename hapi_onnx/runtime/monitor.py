"""Label-free drift monitoring and online threshold control: keep a bundle's promise when the data drift.

The certificate of a bundle holds for data from the calibration distribution. Under drift the
early exits are the first to go wrong, so the monitor watches them, without labels, and moves the
thresholds along the bundle's certified path (:class:`~hapi_onnx.runtime.manifest.CertifiedPath`):
back towards the full model when the early answers disagree with the full model too often,
forward again, never past the shipped design, when they no longer do.

**Audit.** Each sample is picked for an audit with probability ``audit_rate`` (seeded; the gaps
between picks are geometric, so a sample that is not picked costs a counter). A picked sample
runs every stage off the caller's critical path, in a background thread fed by a bounded queue
(when the queue is full the audit is dropped and counted, and ``predict`` never waits). Its
*record* is every stage's class and confidence, which says, for **every** position ``k`` of the
path at once, whether the sample would have left early with an answer other than the final
classifier's (``x_k = 1``): one audit informs every position, and since the record does not depend
on the position in use, the audits are independent of the controller's decisions. At the full
model (position 0) every sample runs every stage anyway, so every sample is audited there, for
free (whether a sample is audited depends on the seed and the position, never on the sample).

**Bounds.** Position ``k``'s disagreement rate ``D_k`` is the share of samples that leave early
and disagree with the full model (position 0, the full model, has ``D_0 = 0``). Over the window of
the last ``window`` audits (``n`` of them, ``s_k`` disagreements), the Chernoff bound for the mean
of independent [0, 1] variables (Hoeffding 1963, Thm. 1: it holds for the *average* of
time-varying means, which is what a window of a drifting stream has) gives the lower and upper
bounds ``{q : n kl(s_k/n, q) <= log(1/delta_k,t)}``. They are made anytime-valid by a union bound
over times and positions: after audit ``t`` the rules may spend ``delta / (t (t + 1))``
(``delta = 1 - level``; these sum to ``delta`` over all times), half of it on the lower bound at
the shipped design and half split evenly among the upper bounds at positions ``1..K-1`` (without
trusting the certificate: split among the upper bounds at ``1..K``). So with probability
``>= level``, every bound the rules ever read holds, at every position and every time.

**Rules** (after each audit; ``K`` is the shipped design, ``B`` the budget):

- trusting the certificate (the default): at ``K`` the monitor stays until the lower bound at
  ``K`` passes ``B`` (anytime-valid evidence that the shipped design now breaks its budget), then
  steps back to the fastest position whose upper bound is within ``B`` (the full model when none
  is). While back, it moves to the fastest position whose upper bound is within ``B``, and returns
  to ``K`` once the lower bound at ``K`` is within ``B`` again and the window's estimate at ``K`` is
  too (hysteresis: leaving needs evidence, returning needs the estimate).
- ``trust_certificate=False``: always the fastest position (``<= K``) whose upper bound is within
  ``B``, ``K`` included; it starts at the full model. Every position it uses is then verified by
  the audits, which takes about ``log(1/delta_t) / kl(D_K, B)`` audits in the window (thousands
  for a rate at half the budget), so on a small audit rate it rarely reaches ``K``.

Why the default trusts the certificate at ``K``: the offline certificate already bounds ``D_K``
for data from the calibration distribution; what the stream must supply is evidence that the
distribution has moved, which a large shift gives within tens of audits, where verifying a small
rate from scratch takes thousands.

**Path and budget.** A bundle written from a certified design records its path and budget
(``manifest.path``). For an older bundle, a design without a certificate, or thresholds edited
after the search (the path no longer ends at them), the monitor derives
a path: :data:`DERIVED_STEPS` steps with every threshold ``t <= 1`` scaled toward 1,
``t + (1 - t)(S - i)/S`` for ``i = 1..S`` (after the full model); the budget is then the design's
``max_accuracy_drop`` when the manifest records one, or the one given. A ``labels`` budget bounds
losses (wrong where the full model is right), which disagreement over-counts, so against it the
monitor is conservative; a bundle searched with ``reference="final"`` is certified for
disagreement itself.

**Determinism and threads.** Which samples are audited depends only on the seed and the order
of samples; the controller is a function of the sequence of records; with ``background=False``
audits run inline and a whole run is reproducible. In the background, when a change takes effect
(and which audits a full queue drops) depends on timing. ``predict`` may be called from several
threads; picks, records and the controller share one lock, held for a few microseconds.
"""

import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from hapi_onnx.choice import first_exit
from hapi_onnx.errors import HapiError
from hapi_onnx.runtime.manifest import Manifest
from hapi_onnx.runtime.model import NEVER, EarlyExitModel, Prediction

LOG = logging.getLogger("hapi_onnx.monitor")
DERIVED_STEPS = 16
"""Steps of the path derived for a bundle that records none (after the full model)."""
_AUDIT_BATCH = 32  # audits the background thread runs through the stages together at most


@dataclass(frozen=True)
class Monitor:
    """How to monitor a bundle: pass one to ``EarlyExitModel.load(path, monitor=Monitor(...))``.

    Attributes:
        audit_rate (float): Share of samples audited (run to the final stage in the background).
            Defaults to 0.1.
        budget (float | None): Largest acceptable disagreement rate of the early answers with the
            full model, a fraction. Defaults to None: the bundle's certified budget.
        level (float): Probability that every bound the monitor reads holds. Defaults to 0.9.
        window (int): Audits the bounds look back over. Defaults to 200.
        queue_size (int): Audits waiting at most; more are dropped. Defaults to 64.
        seed (int): Seed of the audit picks. Defaults to 0.
        background (bool): Run audits in a background thread (else inline, reproducibly).
            Defaults to True.
        trust_certificate (bool): Keep the shipped design until the audits show it breaks the
            budget (else use only positions the audits verify). Defaults to True.
    """

    audit_rate: float = 0.1
    budget: float | None = None
    level: float = 0.9
    window: int = 200
    queue_size: int = 64
    seed: int = 0
    background: bool = True
    trust_certificate: bool = True

    def __post_init__(self):
        def number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        checks = [
            ("audit_rate", number(self.audit_rate) and 0 < self.audit_rate <= 1, "a number in (0, 1]"),
            ("budget", self.budget is None or (number(self.budget) and 0 <= self.budget < 1),
             "a fraction in [0, 1) or None"),
            ("level", number(self.level) and 0 < self.level < 1, "a probability in (0, 1)"),
            ("window", _count(self.window), "a positive int"),
            ("queue_size", _count(self.queue_size), "a positive int"),
            ("seed", isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
             "an int >= 0"),
            ("background", isinstance(self.background, bool), "True or False"),
            ("trust_certificate", isinstance(self.trust_certificate, bool), "True or False"),
        ]
        for name, ok, what in checks:
            if not ok:
                raise HapiError(f"The {name!r} of Monitor must be {what}. Got {getattr(self, name)!r} instead.")

    def attach(self, model: EarlyExitModel) -> "MonitoredModel":
        """``model`` (its sessions shared, not copied) with this monitor on its predictions."""
        return MonitoredModel(model, self)


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def monitor_path(manifest: Manifest, budget: float | None = None) -> tuple[np.ndarray, float, bool]:
    """The positions the monitor moves along, the budget, and whether the path is the certified one.

    Args:
        manifest (Manifest): The bundle's manifest.
        budget (float | None): A budget (fraction) to use instead of the bundle's. Defaults to None.

    Returns:
        tuple: float32[P, S-1] thresholds per position (row 0 the full model, the last the shipped
        design), the budget, and True when the rows are the manifest's certified path.

    Raises:
        HapiError: when no budget is given and the bundle records none.
    """
    design = np.array([s.threshold for s in manifest.stages[:-1]], dtype=np.float64)
    path = manifest.path
    recorded = path.budget_pp if path is not None else (
        ((manifest.design or {}).get("constraints") or {}).get("max_accuracy_drop"))
    if path is not None and path.steps[-1] != tuple(design):
        path = None  # thresholds edited after the search: the certified path does not lead to them
    if path is not None:
        steps = np.array(path.steps, dtype=np.float64).reshape(len(path.steps), len(design))
    else:
        i = np.arange(1, DERIVED_STEPS + 1)[:, None]
        steps = np.where(design > 1, design, design + (1 - design) * (DERIVED_STEPS - i) / DERIVED_STEPS)
    if budget is None:
        if not isinstance(recorded, (int, float)) or isinstance(recorded, bool):
            raise HapiError(
                "This bundle records no accuracy-drop budget to monitor against: give one, e.g. "
                "Monitor(budget=0.01) (a fraction of samples), or --budget 1 (points) on the command line."
            )
        budget = float(recorded) / 100
    rows = np.vstack([np.full((1, len(design)), NEVER), steps]).astype(np.float32)
    rows = rows[np.r_[True, np.any(rows[1:] != rows[:-1], axis=1)]]  # repeats dropped, order kept
    return rows, float(budget), path is not None


def disagreements(thresholds: np.ndarray, classes: np.ndarray, confidences: np.ndarray) -> np.ndarray:
    """For each audited sample and each position, whether it leaves early with another answer than the final one.

    Args:
        thresholds (np.ndarray): float32[P, S-1] thresholds per position.
        classes (np.ndarray): int[N, S] every stage's class per sample.
        confidences (np.ndarray): float32[N, S] every stage's confidence per sample.

    Returns:
        np.ndarray: bool[N, P].
    """
    where = first_exit(confidences[:, :-1].T, thresholds)  # [P, N]: the one exit rule
    answer = classes[np.arange(len(classes)), where]
    return ((where < thresholds.shape[1]) & (answer != classes[:, -1])).T


def kl_bounds(count: np.ndarray, n: int, log_term: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chernoff (KL) lower and upper bounds of a mean from ``count`` ones in ``n`` [0, 1] observations.

    The set ``{q : n kl(count/n, q) <= log_term}`` (bisection, to 1e-9); ``[0, 1]`` when ``n`` is 0.
    """
    count = np.asarray(count, dtype=np.float64)
    if n == 0:
        return np.zeros_like(count), np.ones_like(count)
    p = count / n

    def inside(q):
        q = np.clip(q, 1e-15, 1 - 1e-15)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(p > 0, p * np.log(p / q), 0.0) + np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
        return n * kl <= log_term

    lo, hi = np.zeros_like(p), p.copy()  # lower bound: the smallest q inside, in [0, p]
    up_lo, up_hi = p.copy(), np.ones_like(p)  # upper bound: the largest q inside, in [p, 1]
    for _ in range(34):
        mid = (lo + hi) / 2
        ok = inside(mid)
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
        mid = (up_lo + up_hi) / 2
        ok = inside(mid)
        up_lo, up_hi = np.where(ok, mid, up_lo), np.where(ok, up_hi, mid)
    return np.where(inside(np.zeros_like(p)), 0.0, hi), np.where(inside(np.ones_like(p)), 1.0, up_lo)


class Controller:
    """The monitor's state machine: audit records in, a position on the path out.

    Deterministic and not thread-safe (:class:`MonitoredModel` holds a lock around it); the
    rules are in the module docstring. Position 0 is the full model, ``positions - 1`` the
    shipped design.

    Args:
        positions (int): Positions on the path, the full model included.
        budget (float): Largest acceptable disagreement rate.
        level (float): Probability that every bound read holds.
        window (int): Audits the bounds look back over.
        trust_certificate (bool): Start at and keep the shipped design until evidence against it.
    """

    def __init__(self, positions: int, budget: float, level: float, window: int, trust_certificate: bool = True):
        self.last = positions - 1
        self.budget, self.delta, self.trust = budget, 1.0 - level, trust_certificate
        self.position = self.last if trust_certificate else 0
        self.audits = 0
        self._window: deque[np.ndarray] = deque(maxlen=window)
        self._counts = np.zeros(positions, dtype=np.int64)

    def log_terms(self) -> np.ndarray:
        """``log(1 / delta_k,t)`` of each position's bound after the audits so far (the union bound)."""
        t = max(self.audits, 1)
        now = self.delta / (t * (t + 1))
        if not self.trust:
            return np.full(self.last + 1, math.log(max(self.last, 1) / now))
        terms = np.full(self.last + 1, math.log(2 * max(self.last - 1, 1) / now))
        terms[-1] = math.log(2 / now)
        return terms

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The window's estimate, lower and upper bound of every position's disagreement rate."""
        n = len(self._window)
        lower, upper = kl_bounds(self._counts, n, self.log_terms())
        estimate = self._counts / n if n else np.zeros(len(self._counts))
        lower[0] = upper[0] = 0.0  # the full model never disagrees with itself
        return estimate, lower, upper

    def update(self, record: np.ndarray) -> int:
        """Take one audit's record (bool per position) and return the position to use now."""
        record = np.asarray(record, dtype=bool)
        if record.shape != self._counts.shape:
            raise HapiError(f"an audit record needs one flag per position ({len(self._counts)}). Got {record.shape}.")
        if len(self._window) == self._window.maxlen:
            self._counts -= self._window[0]
        self._window.append(record)
        self._counts += record
        self.audits += 1
        # Each rule compares a bound with the budget b: the bounds are the ends of the interval
        # {q : n kl(p, q) <= L} around the estimate p, so "upper <= b" is "p <= b and n kl(p, b) >= L"
        # (b outside, above), and "lower > b" is "p > b and n kl(p, b) > L"; no bound is solved for.
        b, k, n = self.budget, self.last, len(self._window)
        p = self._counts / n
        evidence = n * _kl(p, b) - self.log_terms()
        below = (p <= b) & (evidence >= 0)  # upper bound <= b
        below[0] = True
        verified = int(np.flatnonzero(below[:k]).max(initial=0))  # fastest verified position below K
        above_k = p[k] > b and evidence[k] > 0  # lower bound at K > b
        if not self.trust:
            self.position = k if below[k] else verified
        elif self.position == k:
            self.position = verified if above_k else k
        else:
            self.position = k if not above_k and p[k] <= b else verified
        return self.position


def _kl(p: np.ndarray, q: float) -> np.ndarray:
    """Bernoulli relative entropy kl(p, q) for each p (q in (0, 1); 0 log 0 = 0)."""
    q = min(max(q, 1e-15), 1 - 1e-15)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.where(p > 0, p * np.log(p / q), 0.0)
                + np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0))


@dataclass(frozen=True)
class PositionChange:
    """One move of the monitor along the path (each is logged once, to ``hapi_onnx.monitor``).

    Attributes:
        sample (int): Samples predicted when it took effect.
        audit (int): Audits taken when it was decided.
        old (int): Position before (0 is the full model).
        new (int): Position after.
        estimate (float): The window's disagreement estimate at the shipped design.
        lower (float): Its lower bound.
        upper (float): The upper bound at the new position.
    """

    sample: int
    audit: int
    old: int
    new: int
    estimate: float
    lower: float
    upper: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MonitorState:
    """What the monitor knows now (:meth:`MonitoredModel.monitor_state`).

    Attributes:
        position (int): Current position (0 is the full model, ``positions - 1`` the shipped design).
        positions (int): Positions on the path.
        thresholds (tuple[float, ...]): The thresholds in use.
        certified_path (bool): Whether the path is the bundle's certified one (else derived).
        budget (float): The disagreement budget, a fraction.
        estimate (float): The window's disagreement estimate at the current position.
        lower (float): Its anytime-valid lower bound.
        upper (float): Its anytime-valid upper bound.
        window (int): Audits in the window.
        audits_done (int): Audits taken into account.
        audits_dropped (int): Audits dropped because the queue was full.
        audits_pending (int): Audits picked but not yet done.
        audit_seconds (float): Time the audits took (completing samples, reading records).
        samples (int): Samples predicted.
        changes (int): Moves along the path so far.
    """

    position: int
    positions: int
    thresholds: tuple[float, ...]
    certified_path: bool
    budget: float
    estimate: float
    lower: float
    upper: float
    window: int
    audits_done: int
    audits_dropped: int
    audits_pending: int
    audit_seconds: float
    samples: int
    changes: int

    def to_dict(self) -> dict:
        return asdict(self)


class MonitoredModel(EarlyExitModel):
    """An :class:`EarlyExitModel` whose thresholds follow the drift monitor (see the module docstring).

    Made by ``EarlyExitModel.load(path, monitor=Monitor(...))`` or ``Monitor(...).attach(model)``;
    ``predict`` uses the thresholds of the current position and picks samples to audit. The
    other methods are the model's (``with_thresholds`` gives an unmonitored variant).
    """

    def __init__(self, model: EarlyExitModel, monitor: Monitor):
        rows, budget, certified = monitor_path(model.manifest, monitor.budget)
        super().__init__(model.manifest, model._pipeline, model.exits)
        self._settings = monitor
        self._rows, self._certified = rows, certified
        self._variants = [model.with_thresholds([float(t) for t in row]) for row in rows]
        self._controller = Controller(len(rows), budget, monitor.level, monitor.window, monitor.trust_certificate)
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(monitor.seed)
        self._next_pick = int(self._rng.geometric(monitor.audit_rate)) - 1
        self._samples = self._done = self._dropped = 0
        self._audit_seconds = 0.0
        self._changes: list[PositionChange] = []
        self._queue: queue.Queue = queue.Queue(maxsize=monitor.queue_size)
        self._worker: threading.Thread | None = None

    @property
    def monitor(self) -> Monitor:
        """The monitor's settings."""
        return self._settings

    @property
    def exits(self):
        """The exit and threshold in use at every stage (the current position's)."""
        return self._variants[self._controller.position].exits

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Confidence thresholds of the intermediate stages in use (the current position's)."""
        return self._variants[self._controller.position].thresholds

    def predict(self, x: np.ndarray, return_probs: bool = False) -> Prediction:
        """As :meth:`EarlyExitModel.predict`, at the current position; picked samples are audited.

        At the full model (position 0) every sample runs every stage anyway, so every sample is
        audited, for free. Never waits for an audit in the background: when the queue is full,
        the audit is dropped.
        """
        position = self._controller.position
        if position == 0:
            pred, classes, confidences = self._full_path(x, return_probs)
        else:
            pred = self._variants[position].predict(x, return_probs)
        n = len(pred)
        with self._lock:
            start = self._samples
            self._samples += n
            picks = []
            while self._next_pick < self._samples:  # drawn at every position: the picks depend on the seed only
                picks.append(self._next_pick - start)
                self._next_pick += int(self._rng.geometric(self._settings.audit_rate))
        if position == 0:
            self._submit((None, classes, confidences))
        elif picks:
            self._submit((np.array(x[picks], dtype=np.float32), None, None))  # a copy: the caller may reuse x
        return pred

    def _full_path(self, x: np.ndarray, return_probs: bool) -> tuple[Prediction, np.ndarray, np.ndarray]:
        """The full model's prediction and every stage's classes and confidences, [N, S] each."""
        full = self._variants[0]
        if isinstance(x, np.ndarray) and x.ndim > 0 and len(x) == 1 and self._pipeline.bind_batch1:
            pred = full.predict(x, return_probs)
            plan = self._pipeline.plan_for(x)  # this thread's buffers, just run through every stage
            return pred, np.array([[c[0] for c in plan.classes]]), np.array([[c[0] for c in plan.confs]])
        stages = list(full.progressive(x))
        last = stages[-1]
        pred = Prediction(last.classes, last.confidences, last.exit_index, last.probs if return_probs else None)
        return pred, np.stack([p.classes for p in stages], 1), np.stack([p.confidences for p in stages], 1)

    def _submit(self, item: tuple) -> None:
        if not self._settings.background:
            self._audit([item])
            return
        self._start_worker()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self._dropped += len(item[0] if item[0] is not None else item[1])

    def monitor_state(self) -> MonitorState:
        """The monitor's state now (thread-safe)."""
        with self._lock:
            c = self._controller
            estimate, lower, upper = c.bounds()
            k = c.position
            return MonitorState(
                position=k, positions=len(self._rows), thresholds=tuple(float(t) for t in self._rows[k]),
                certified_path=self._certified, budget=c.budget, estimate=float(estimate[k]),
                lower=float(lower[k]), upper=float(upper[k]), window=len(c._window), audits_done=self._done,
                audits_dropped=self._dropped,
                audits_pending=self._pending(), audit_seconds=self._audit_seconds, samples=self._samples,
                changes=len(self._changes),
            )

    def position_changes(self) -> tuple[PositionChange, ...]:
        """Every move along the path so far, in order."""
        with self._lock:
            return tuple(self._changes)

    def drain(self) -> None:
        """Wait until every audit queued so far is done."""
        if self._worker is not None:
            self._queue.join()

    def close(self) -> None:
        """Finish the queued audits and stop the background thread (predicting restarts it)."""
        worker = self._worker
        if worker is not None:
            self._queue.put(None)
            worker.join()
            self._worker = None

    def _pending(self) -> int:
        return sum(len(i[0] if i[0] is not None else i[1]) for i in list(self._queue.queue) if i is not None)

    def _start_worker(self) -> None:
        if self._worker is None:
            with self._lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work, name="hapi-onnx-audit", daemon=True)
                    self._worker.start()

    def _work(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < _AUDIT_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            work = [i for i in items if i is not None]
            try:
                if work:
                    self._audit(work)
            finally:
                for _ in items:
                    self._queue.task_done()
            if len(work) < len(items):
                return

    def _audit(self, items: list[tuple]) -> None:
        """Complete the samples to audit (``(x, None, None)``: run every stage) or take their records
        (``(None, classes, confidences)``), and feed each sample's record to the controller, in order."""
        start = time.perf_counter()
        classes, confidences = [], []
        for x, c, f in items:
            if x is not None:  # sample by sample: this thread's bound batch-1 buffers, as predict runs
                runs = [self._full_path(x[i : i + 1], False) for i in range(len(x))]
                c, f = np.concatenate([r[1] for r in runs]), np.concatenate([r[2] for r in runs])
            classes.append(c)
            confidences.append(f)
        classes, confidences = np.concatenate(classes), np.concatenate(confidences)
        records = disagreements(self._rows, classes, confidences)
        elapsed = time.perf_counter() - start
        with self._lock:
            self._audit_seconds += elapsed
            c = self._controller
            for record in records:
                old = c.position
                new = c.update(record)
                self._done += 1
                if new != old:
                    estimate, lower, upper = c.bounds()
                    change = PositionChange(self._samples, c.audits, old, new, float(estimate[c.last]),
                                            float(lower[c.last]), float(upper[new]))
                    self._changes.append(change)
                    LOG.info("monitor: position %d -> %d of %d after %d audits (sample %d; disagreement at the "
                             "shipped design %.4f, lower bound %.4f; budget %.4f)", old, new, c.last,
                             c.audits, self._samples, change.estimate, change.lower, c.budget)
