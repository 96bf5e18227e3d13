"""Pareto fronts of accuracy (more is better) against a latency statistic (less is better).

A point is on the front when no other point is at least as accurate and at least as fast, and
strictly better in one of the two. Points with identical accuracy and latency are one front
point: the first by the caller's tie-break keys stands for them.
"""

from collections.abc import Sequence

import numpy as np


def front_candidates(latency: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Indices of every point whose (latency, correct) pair is on the front, duplicates included.

    Runs in linear time (no sort of the points): a pair is on the front when its latency is the
    least among points with its correct count and below that of every point with a higher one.

    Args:
        latency (np.ndarray): int64[P] latency keys.
        correct (np.ndarray): int64[P] correct counts (non-negative).

    Returns:
        np.ndarray: int64 indices, in input order.
    """
    if len(latency) == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(correct.max())
    best = np.full(top + 2, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, correct, latency)
    best_above = np.minimum.accumulate(best[::-1])[::-1][1:]  # least latency with more correct
    keep = (latency == best[correct]) & (latency < best_above[correct])
    return np.flatnonzero(keep)


def pareto_indices(
    latency: np.ndarray, correct: np.ndarray, tiebreak: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """Indices of the front points, one per front pair, ordered by increasing latency.

    Args:
        latency (np.ndarray): int64[P] latency keys.
        correct (np.ndarray): int64[P] correct counts (non-negative).
        tiebreak (Sequence[np.ndarray]): Keys choosing among points with the same pair, most
            significant first; smallest wins. Defaults to (): the first index wins.

    Returns:
        np.ndarray: int64 indices of the chosen points; their latency and correct both increase.
    """
    latency, correct = np.asarray(latency, dtype=np.int64), np.asarray(correct, dtype=np.int64)
    cand = front_candidates(latency, correct)
    keys = [np.asarray(t)[cand] for t in tiebreak]
    order = np.lexsort(tuple(reversed([correct[cand], *keys, cand])))
    chosen = cand[order]
    first = np.ones(len(chosen), dtype=bool)
    first[1:] = correct[chosen[1:]] != correct[chosen[:-1]]
    return chosen[first]
