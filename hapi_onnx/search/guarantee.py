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
same distribution, and the share of new samples it *loses* (gets wrong where the full model is
right) is at most the drop budget, so its accuracy drop is at most the budget too. With
``reference="final"`` a loss is any disagreement with the full model, as in CALM's consistency
risk; no labels are needed.

**Exact p-values** (finite-sample, no normal approximation): a design's losses on the certify
part are binomial with the loss rate ``p_L``, so the null "``p_L >= b``" has the p-value
``P(Binom(n, b) <= losses)``; the errors likewise for the floor, ``P(Binom(n, 1 - a) <= errors)``.
Gains (right where the full model is wrong) are not credited: a test of ``p_L - p_G`` needs the
unknown ``p_G`` and, taken at its worst case, loses far more power than the gains bring.

The price of honesty is that the path is chosen on fewer samples and certified on fewer still;
``bench/bench_guarantee.py`` measures it (speed-up given up against the per-design bound) and the
exceedance rate over re-splits.
"""

from collections.abc import Iterable, Iterator
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
STATEMENT = (
    "with probability >= {level:g} over the calibration data, the chosen design meets its {what} "
    "constraints on new data from the same distribution (search on {search} samples, certified on "
    "{certify} held-out samples by fixed-sequence testing)"
)


@dataclass(frozen=True)
class Certified:
    """One design of the path and what the certify part says of it.

    Attributes:
        design (Candidate): The design (scored on the search part).
        certified (bool): Whether it was certified (every earlier design was too).
        drop_bound (float): Exact (Clopper-Pearson) upper bound of its loss rate at the level, a
            fraction: a bound on its drop from the full model.
        accuracy_bound (float): Exact (Clopper-Pearson) lower bound of its accuracy at the level.
    """

    design: Candidate
    certified: bool
    drop_bound: float
    accuracy_bound: float


def split_indices(num_samples: int, fraction: float = CERTIFY_FRACTION, seed: int = SPLIT_SEED):
    """Seeded random split of ``range(num_samples)`` into (search, certify) index arrays, each sorted."""
    order = np.random.default_rng(seed).permutation(num_samples)
    certify = int(round(num_samples * fraction))
    return np.sort(order[certify:]), np.sort(order[:certify])


def tail_p_value(count: int, n: int, rate: float) -> float:
    """Exact p-value of the null "the event's rate >= ``rate``" after ``count`` events in ``n`` samples.

    ``P(Binom(n, rate) <= count)``: the binomial tail, largest at the null's boundary.
    """
    return 0.0 if rate >= 1.0 else float(binom.cdf(count, n, rate))


def rate_upper_bound(count: int, n: int, level: float) -> float:
    """Clopper-Pearson upper bound of an event's rate at one-sided ``level`` (the smallest rate
    :func:`tail_p_value` rejects at ``1 - level``)."""
    return 1.0 if count >= n else float(beta_dist.ppf(level, count + 1, n - count))


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


def certify(certify_part: SearchProblem, path: Iterable[Candidate], goal: Goal) -> list[Certified]:
    """Fixed-sequence testing of ``path`` (safest first) on the certify part, at ``1 - bound_level``.

    Args:
        certify_part (SearchProblem): The held-out calibration samples.
        path (Iterable[Candidate]): Designs in the fixed order, chosen without the certify part;
            consumed only up to the first design that is not certified.
        goal (Goal): The constraints (its ``constraints`` give the budget, floor and level).

    Returns:
        list[Certified]: The designs tested, in path order; all certified but maybe the last.
    """
    c = goal.constraints
    level, n = c.bound_level, certify_part.num_samples
    delta = 1.0 - level
    results = []
    for design in path:
        score = score_problem(certify_part, design.exits, design.thresholds)
        errors = n - score.correct
        losses = score.losses if design.exits else 0  # the full model loses nothing to itself
        ok = True
        if c.max_accuracy_drop is not None and design.exits:  # the full model's drop is exactly 0
            ok &= tail_p_value(losses, n, c.max_accuracy_drop / 100) <= delta
        if c.min_accuracy is not None:
            ok &= tail_p_value(errors, n, 1.0 - c.min_accuracy) <= delta
        drop_bound = rate_upper_bound(losses, n, level) if design.exits else 0.0
        results.append(Certified(design, ok, drop_bound, 1.0 - rate_upper_bound(errors, n, level)))
        if not ok:
            break
    return results


def statement(level: float, reference: str, search: int, certify_samples: int) -> str:
    """The guarantee in one sentence, with its numbers."""
    what = "agreement-with-the-full-model" if reference == "final" else "accuracy and accuracy-drop"
    return STATEMENT.format(level=level, what=what, search=search, certify=certify_samples)
