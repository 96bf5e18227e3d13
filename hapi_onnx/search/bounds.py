"""One-sided statistical bounds that keep accuracy constraints from overfitting the search data.

Among millions of designs, the fastest one that *barely* meets an accuracy floor on ~1,000 search
samples is mostly lucky: on new data it falls short. So with a ``confidence`` c (default 0.9) the
search checks accuracy constraints on one-sided bounds at level c (the ``bound_level`` of
:class:`~hapi_onnx.search.constraints.Constraints`) instead of on raw counts, with ``z`` the
standard normal quantile of c (``statistics.NormalDist``; c = 0 means raw counts, and c = 0.5
gives z = 0, the same thing):

- **Accuracy drop** (paired, McNemar-style). Against the final classifier on the same samples, a
  design *loses* L samples (wrong where the final classifier is right) and *gains* G (the
  reverse); the others agree, and cancel. The drop is ``(L - G) / N``; its upper bound is::

      (L - G + z * sqrt(L + G + 1)) / N

  The ``+ 1`` is one pseudo-disagreement: with it, a design that happens to agree with the final
  classifier on every search sample (L + G = 0) is not taken as certain (bound ``z / N``, not 0),
  and small discordant counts get a little more caution; for large L + G it vanishes. Only the
  design that keeps no intermediate exit *is* the final classifier, so its drop is exactly 0.
  Since ``L - G = C_final - C`` (C: samples right), a design is judged by two counts: C and the
  discordant count ``D = L + G``; the budget gives, for each D, the fewest right answers allowed
  (:func:`min_correct_for_drop`), non-decreasing in D.
- **Accuracy floor**: the Wilson score lower bound of ``C / N`` (well behaved near 100%, where
  the normal approximation is not), which grows with C, so the floor is a fewest number of right
  answers (:func:`min_correct_for_accuracy`).

Every limit is an exact integer computed once, so every optimiser applies the same rule. A higher
level only raises the limits: it never admits a design a lower level refused.
"""

import math
from statistics import NormalDist

import numpy as np

_EPS = 1e-9  # a limit hit to within float rounding counts as met


def z_score(level: float) -> float:
    """One-sided standard normal quantile of a bound ``level`` (validated by ``Constraints``); 0 for raw counts."""
    return float(NormalDist().inv_cdf(level)) if level else 0.0


def drop_upper_bound(
    final_correct: int, correct, discordant, num_samples: int, z: float, *, reference=False
):
    """Upper bound of the accuracy drop (a fraction) from the final classifier's.

    Args:
        final_correct (int): Samples the final classifier gets right.
        correct (int | np.ndarray): Samples the design gets right (C).
        discordant (int | np.ndarray): Samples where the design and the final classifier differ
            in being right (D = L + G).
        num_samples (int): N.
        z (float): From :func:`z_score`; 0 gives the raw drop.
        reference (bool | np.ndarray): The design keeps no intermediate exit (drop exactly 0).
            Defaults to False.

    Returns:
        float | np.ndarray: ``(C_final - C + z * sqrt(D + 1)) / N``, or the raw drop when z = 0.
    """
    raw = np.subtract(final_correct, correct, dtype=np.float64)
    spread = z * np.sqrt(np.asarray(discordant, dtype=np.float64) + 1.0) if z else 0.0
    bound = np.where(reference, 0.0, (raw + spread) / num_samples)
    return float(bound) if bound.ndim == 0 else bound


def accuracy_lower_bound(correct, num_samples: int, z: float):
    """Wilson score lower bound of the accuracy ``correct / num_samples`` (the accuracy when z = 0).

    Returns:
        float | np.ndarray: The bound, a fraction in [0, 1].
    """
    p = np.asarray(correct, dtype=np.float64) / num_samples
    if not z:
        return float(p) if p.ndim == 0 else p
    n, z2 = float(num_samples), z * z
    centre = p + z2 / (2 * n)
    spread = z * np.sqrt(np.maximum(p * (1 - p), 0.0) / n + z2 / (4 * n * n))
    bound = np.maximum((centre - spread) / (1 + z2 / n), 0.0)
    return float(bound) if bound.ndim == 0 else bound


def min_correct_for_accuracy(min_accuracy: float, num_samples: int, z: float) -> int:
    """Fewest right answers whose accuracy bound reaches ``min_accuracy`` (N + 1 when none does)."""
    if not z:
        return math.ceil(min_accuracy * num_samples - _EPS)
    bounds = accuracy_lower_bound(np.arange(num_samples + 1), num_samples, z)
    return int(np.searchsorted(bounds, min_accuracy - _EPS, side="left"))


def min_correct_for_drop(max_drop_pp: float, final_correct: int, num_samples: int, z: float) -> np.ndarray:
    """int64[N+1]: for each discordant count D, the fewest right answers whose drop bound is within
    ``max_drop_pp`` percentage points (may exceed N: then no design with that D qualifies)."""
    n = num_samples
    floor = (final_correct / n - max_drop_pp / 100.0) * n  # raw: as many right as this
    spread = z * np.sqrt(np.arange(n + 1, dtype=np.float64) + 1.0) if z else np.zeros(n + 1)
    return np.ceil(floor + spread - _EPS).astype(np.int64)
