"""Accuracy constraints that hold for the design the search *chooses*: search on one part, certify on the other.

**Why.** A bound at level 0.9 holds for one design fixed in advance. The search looks at thousands
of designs and keeps the fastest one whose bound passes, so it keeps the designs whose calibration
noise was lucky: re-split 20 times, a 1 pt budget "at 90%" was exceeded on held-out data in half
of the splits. The level has to survive the selection.

**Method** (Learn-then-Test, Angelopoulos et al. 2021, with fixed-sequence testing along a path
as CALM, Schuster et al. 2022, does for early-exit thresholds):

1. The calibration samples are split at random (seeded) into a *search* part and a *certify* part
   (:data:`CERTIFY_FRACTION` of them: the path is one-dimensional, so certifying it is where the
   samples pay most; on the demo, 70% gave up less speed than 50% at 1 and 2 pt budgets).
2. On the search part alone, the optimiser chooses the exits to keep (the usual search, with the
   per-design bounds, on those samples), and the *path* is fixed: the design that keeps no exit
   (the full model itself), then those exits with their threshold lowered step by step, from one
   no sample reaches down through every value of the search part's threshold grid (with
   ``space="per-exit"``: from there in a straight line to the refined thresholds, in
   :data:`PATH_STEPS` steps), keeping the steps within the latency SLA. A lower threshold lets more
   samples leave early, so the path runs from safe to fast, as CALM calibrates its exits.
3. On the certify part, the designs are tested in that order, each at level ``1 - bound_level``:
   the null hypothesis of a design is that it breaks an accuracy constraint; it is rejected (the
   design *certified*) when every constraint's exact p-value is at most the level. The walk stops
   at the first design that is not certified. Because the order was fixed before the certify part
   was seen, fixed-sequence testing controls the family-wise error: with probability at least
   ``bound_level``, *every* certified design meets the constraints.
4. The objective picks among the certified designs (the fastest, predicted on all the
   calibration samples). The full model is always certified for a drop budget (its drop is 0).

**Guarantee** (what ``--help`` and the README state): with probability at least ``bound_level``
over the calibration samples, the chosen design meets the accuracy floor on new data from the
same distribution, and its accuracy drop from the full model is at most the drop budget (with the
``loss`` test below, even the share of new samples it *loses*, wrong where the full model is
right, is). With ``reference="final"`` a loss is any disagreement with the full model, as in
CALM's consistency risk; no labels are needed.

**Two exact tests**, both finite-sample (no normal approximation), ``delta = 1 - bound_level``:

- ``loss``: a design's losses on the certify part are binomial with the loss rate ``p_L``, so the
  null "``p_L >= b``" has the p-value ``P(Binom(n, b) <= losses)``. Gains are not credited.
- ``net``: credits gains. The drop is ``p_L - p_G`` (a sample's loss minus its gain is in
  {-1, 0, 1}); the null "``p_L - p_G >= b``" is tested exactly by conditioning on the discordant
  count ``D = L + G`` (Berger and Boos, 1994, for the nuisance rate ``p_D = p_L + p_G``): given
  ``D``, the losses are ``Binom(D, p_L / p_D)``, and under the null ``p_L / p_D >= 1/2 + b / (2 p_D)``.
  With ``U`` the exact upper bound of ``p_D`` at level ``1 - gamma`` (:data:`NUISANCE_SHARE` of
  ``delta``), the null is rejected when ``U <= b`` (then ``p_D >= p_L >= b`` is unlikely) or
  ``P(Binom(D, 1/2 + b / (2U)) <= L) <= delta - gamma``. Its error is at most ``gamma`` (``p_D > U``)
  plus ``delta - gamma`` (the conditional test, whose null rate is at least the one tested when
  ``p_D <= U``): at most ``delta``. It gains power where the exits fix many of the full model's
  errors, and loses some where they fix none (it spends ``gamma`` and judges L among D).

Which of the two tests a design of the path gets is chosen on the *search part* (it may depend
on anything but the certify part; each design's hypothesis is then tested at ``delta`` by a test
fixed in advance, which is all fixed-sequence testing needs): the one whose bound is tighter when
the search part's loss and gain counts, scaled to the certify part's size, are taken as the
certify part's (:func:`choose_tests`); ties go to ``loss``. With ``reference="final"`` there are
no gains (the full model agrees with itself), so ``loss`` is chosen. The floor is tested on the errors alike,
``P(Binom(n, 1 - a) <= errors)``, for every design on the path.

The price of honesty is that the path is chosen on fewer samples and certified on fewer still;
``bench/bench_guarantee.py`` measures it (the share of the hindsight-best speed-up kept) and the
exceedance rate over re-splits.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from hapi_onnx.search.constraints import CERTIFY_FRACTION
from hapi_onnx.search.optimise import Candidate, Goal
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.score import score_problem

SPLIT_SEED = 0
PATH_STEPS = 32
TESTS = ("loss", "net")
NUISANCE_SHARE = 0.1  # gamma / delta: the share of the error the net test spends bounding p_D
STATEMENT = (
    "with probability >= {level:g} over the calibration data, the chosen design meets its {what} "
    "constraints on new data from the same distribution (search on {search} samples, certified on "
    "{certify} held-out samples by fixed-sequence testing, {test})"
)
TEST_TEXT = {"loss": "losses counted, gains not credited", "net": "net drop: gains credited"}


@dataclass(frozen=True)
class Certified:
    """One design of the path and what the certify part says of it.

    Attributes:
        design (Candidate): The design (scored on the search part).
        certified (bool): Whether it was certified (every earlier design was too).
        drop_bound (float): Exact upper bound at the level of what the test bounds (its loss rate
            or its drop), a fraction: a bound on its drop from the full model.
        accuracy_bound (float): Exact (Clopper-Pearson) lower bound of its accuracy at the level.
        test (str): The test of its drop, ``loss`` or ``net``.
    """

    design: Candidate
    certified: bool
    drop_bound: float
    accuracy_bound: float
    test: str = "loss"


def split_indices(num_samples: int, fraction: float = CERTIFY_FRACTION, seed: int = SPLIT_SEED):
    """Seeded random split of ``range(num_samples)`` into (search, certify) index arrays, each sorted."""
    order = np.random.default_rng(seed).permutation(num_samples)
    certify = int(round(num_samples * fraction))
    return np.sort(order[certify:]), np.sort(order[:certify])


def tail_p_value(count, n: int, rate: float):
    """Exact p-value of the null "the event's rate >= ``rate``" after ``count`` events in ``n`` samples.

    ``P(Binom(n, rate) <= count)``: the binomial tail, largest at the null's boundary. Works on
    arrays of counts too.
    """
    return np.zeros_like(count, dtype=np.float64) if rate >= 1.0 else binom.cdf(count, n, rate)


def rate_upper_bound(count, n, level: float):
    """Clopper-Pearson upper bound of an event's rate at one-sided ``level`` (the smallest rate
    :func:`tail_p_value` rejects at ``1 - level``); 1 where ``count >= n``. Works on arrays too."""
    count, n = np.asarray(count), np.asarray(n)
    full = count >= n
    bound = np.where(full, 1.0, beta_dist.ppf(level, count + 1, np.where(full, 1, n - count)))
    return float(bound) if bound.ndim == 0 else bound


def certification_path(part: SearchProblem, chosen: Candidate | None, grid: np.ndarray, goal: Goal,
                       per_exit: bool) -> Iterator[Candidate]:
    """The designs to certify, safest first (see the module docstring), scored on ``part``.

    Args:
        part (SearchProblem): The search part (the only samples the path may depend on).
        chosen (Candidate | None): The design the search chose on ``part`` (its exits are kept).
        grid (np.ndarray): The search part's threshold grid.
        goal (Goal): The constraints on ``part`` (its SLA filters the steps).
        per_exit (bool): Whether ``chosen`` has per-exit thresholds.
    """
    def scored(exits: tuple[int, ...], thresholds: tuple[float, ...]) -> Candidate:
        s = score_problem(part, exits, thresholds)
        return Candidate(exits, thresholds, s.correct, s.latency_key(goal.stat), s.discordant)

    yield scored((), ())
    if chosen is None or not chosen.exits:
        return
    top = float(np.max(grid))
    if per_exit:
        end = np.asarray(chosen.thresholds, dtype=np.float64)
        steps = [tuple(float(np.float32(top + (t - top) * k / PATH_STEPS)) for t in end)
                 for k in range(PATH_STEPS + 1)]
    else:
        steps = [(float(t),) * len(chosen.exits) for t in np.sort(grid)[::-1]]
    for thresholds in dict.fromkeys(steps):  # in order, repeats dropped
        point = scored(chosen.exits, thresholds)
        if goal.max_latency_key is None or point.latency_key <= goal.max_latency_key:
            yield point


def net_rejects(losses, gains, n: int, budget: float, delta: float):
    """The exact net-drop test (module docstring): whether "``p_L - p_G >= budget``" is rejected at ``delta``."""
    return net_upper_bound(losses, gains, n, 1.0 - delta) <= budget


def net_upper_bound(losses, gains, n: int, level: float):
    """Smallest budget the net test rejects at ``1 - level``: an upper bound of the drop ``p_L - p_G``.

    With ``U`` the upper bound of ``p_D`` at ``1 - gamma`` and ``t`` the exact upper bound of
    ``p_L / p_D`` from L of D at ``1 - (delta - gamma)``, the test rejects the budget ``b`` when
    ``U <= b`` or ``1/2 + b / (2U) >= t``: so the bound is ``max(0, (2t - 1) U)`` (``t <= 1``).
    Works on arrays of counts too.
    """
    delta = 1.0 - level
    gamma = NUISANCE_SHARE * delta
    losses, discordant = np.asarray(losses), np.add(losses, gains)
    u = rate_upper_bound(discordant, n, 1.0 - gamma)
    t = rate_upper_bound(losses, discordant, 1.0 - (delta - gamma))  # 1 where D = 0
    bound = np.maximum(0.0, (2.0 * t - 1.0) * u)
    return float(bound) if bound.ndim == 0 else bound


def drop_upper_bound(test: str, losses: int, gains: int, n: int, level: float) -> float:
    """What ``test`` bounds at ``level``: the loss rate (``loss``) or the drop (``net``), a fraction."""
    return rate_upper_bound(losses, n, level) if test == "loss" else net_upper_bound(losses, gains, n, level)


def passes(test: str, losses, gains, errors, n: int, goal: Goal, full: bool = False):
    """Whether a design with these counts on ``n`` certify samples is certified; ``full``: it is
    the full model (its drop is exactly 0, only the floor is tested). Works on arrays of counts too."""
    c = goal.constraints
    delta = 1.0 - c.bound_level
    ok = np.ones(np.shape(losses), dtype=bool)
    if c.max_accuracy_drop is not None and not full:
        b = c.max_accuracy_drop / 100
        ok &= tail_p_value(losses, n, b) <= delta if test == "loss" else net_rejects(losses, gains, n, b, delta)
    if c.min_accuracy is not None:
        ok &= tail_p_value(errors, n, 1.0 - c.min_accuracy) <= delta
    return bool(ok) if ok.ndim == 0 else ok


def walk(tests: str | Sequence[str], counts: Iterable[tuple[int, int, int]], n: int, goal: Goal) -> list[bool]:
    """Fixed-sequence testing on counts: ``(losses, gains, errors)`` per design, path order, the
    first the full model (no drop; only its floor is tested), each design by its test (one for
    all, or one each). The verdicts up to the first failure."""
    verdicts = []
    for k, (losses, gains, errors) in enumerate(counts):
        test = tests if isinstance(tests, str) else tests[k]
        ok = passes(test, losses, gains, errors, n, goal, full=k == 0)
        verdicts.append(ok)
        if not ok:
            break
    return verdicts


def choose_tests(part: SearchProblem, path: list[Candidate], certify_samples: int, goal: Goal) -> list[str]:
    """Each design's test: the one whose bound is tighter when the search part's counts, scaled to
    ``certify_samples``, stand for the certify part's (ties: ``loss``). Uses the search part only,
    so each design's test is fixed before the certify part is seen."""
    if goal.constraints.max_accuracy_drop is None:
        return ["loss"] * len(path)  # the floor alone: the two tests are one
    scale, level = certify_samples / part.num_samples, goal.constraints.bound_level
    tests = []
    for design in path:
        s = score_problem(part, design.exits, design.thresholds)
        losses, gains = (int(round(scale * x)) for x in (s.losses, s.gains))
        net = net_upper_bound(losses, gains, certify_samples, level) < rate_upper_bound(losses, certify_samples, level)
        tests.append("net" if net else "loss")
    return tests


def samples_to_certify(test: str, counts: tuple[int, int, int], n: int, goal: Goal, most: int = 1_000_000):
    """Roughly how many certify samples would certify a design with these ``(losses, gains,
    errors)`` among ``n`` samples: the fewest (in steps of 5%) with which its counts at those rates
    pass ``test``, so about even odds. None when no number up to ``most`` does (its rates break
    the constraint: more samples cannot help)."""
    sizes = np.unique(np.geomspace(1, most, 300).astype(np.int64))
    rates = np.asarray(counts, dtype=np.float64) / n
    expected = [np.floor(r * sizes).astype(np.int64) for r in rates]
    ok = np.flatnonzero(passes(test, *expected, sizes, goal))
    return int(sizes[ok[0]]) if len(ok) else None


def certify(
    certify_part: SearchProblem, path: Iterable[Candidate], goal: Goal, tests: str | Sequence[str] = "loss"
) -> list[Certified]:
    """Fixed-sequence testing of ``path`` (safest first) on the certify part, at ``1 - bound_level``.

    Args:
        certify_part (SearchProblem): The held-out calibration samples.
        path (Iterable[Candidate]): Designs in the fixed order, chosen without the certify part;
            consumed only up to the first design that is not certified.
        goal (Goal): The constraints (its ``constraints`` give the budget, floor and level).
        tests (str | Sequence[str]): ``loss`` or ``net`` (module docstring), for all the designs
            or one per design, chosen without the certify part. Defaults to loss.

    Returns:
        list[Certified]: The designs tested, in path order; all certified but maybe the last.
    """
    level, n = goal.constraints.bound_level, certify_part.num_samples
    results = []
    for k, design in enumerate(path):
        test = tests if isinstance(tests, str) else tests[k]
        score = score_problem(certify_part, design.exits, design.thresholds)
        counts = (score.losses, score.gains, n - score.correct) if design.exits else (0, 0, n - score.correct)
        ok = passes(test, *counts, n, goal, full=not design.exits)
        drop_bound = drop_upper_bound(test, counts[0], counts[1], n, level) if design.exits else 0.0
        results.append(Certified(design, ok, drop_bound, 1.0 - rate_upper_bound(counts[2], n, level), test))
        if not ok:
            break
    return results


def statement(level: float, reference: str, search: int, certify_samples: int, test: str = "loss") -> str:
    """The guarantee in one sentence, with its numbers."""
    what = "agreement-with-the-full-model" if reference == "final" else "accuracy and accuracy-drop"
    return STATEMENT.format(level=level, what=what, search=search, certify=certify_samples, test=TEST_TEXT[test])
