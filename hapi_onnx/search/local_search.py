"""Scalable optimiser for any number of candidate exits: local search from a thinned exact optimum.

The exact optimiser (:func:`~hapi_onnx.search.optimise.optimise_fast`) scores all ``2^E`` subsets
of the candidate exits, which stops being affordable past about 16-20 candidates (DenseNet-121
offers 66, a MobileNetV2 23). This one searches the same global-threshold space, with the same
constraints, objective, accuracy bounds, tie-break order and kind of Pareto front
(:mod:`hapi_onnx.search.optimise`), for any E, with the same interface:

1. **Seed.** Thin the candidates to ``seed_candidates`` (default 12) spread evenly over the
   backbone's cost (:func:`thinned`) and solve that smaller problem *exactly* with the subset-sum
   optimiser: its optimum and its Pareto front. (With E <= 12 this is the whole, exact answer.)
2. **Descend** from the best ``starts`` (4) seeds, in the order below: take the best of the
   designs one *move* away while it beats the current one. A design is its kept exits ``S`` and
   global threshold ``t``; moves, each size tried only when the smaller ones fail:

   - a single move: *add* one candidate to ``S``, *drop* one kept exit, *shift* one kept exit to
     another candidate between its kept neighbours (all at ``t``), or *retune* ``t`` to any grid
     value (same ``S``);
   - a block move: any change of ``S`` within a run of ``BLOCK`` (8) consecutive candidates (runs
     every 4), at ``t`` or one grid step either side;
   - a window move: the exact optimum over ``window`` (12) candidates around ``S`` (its exits, their
     neighbours, others spread evenly), at every threshold, when ``S`` has fewer exits than that.

   Designs are ordered by the full tie-break order, infeasible ones behind feasible ones by how far
   they miss the constraints (relative shortfall of right answers plus relative SLA excess), so a
   descent from an infeasible seed first walks towards feasibility.
3. **Front.** Every design scored on the way enters a Pareto archive (the least latency per count
   of right answers, ties by the tie-break order). Then the single-move neighbourhoods of up to
   ``front_points`` (32) front points, evenly spread, are scored, for ``front_rounds`` (4) rounds
   (Pareto local search); if that found a better feasible design, the descent resumes from it.
4. The best feasible design ever scored and the archive's front are returned.

**Cost.** A whole neighbourhood is scored at once, exactly, with the samples as bit sets (64 to a
word): the samples each candidate would take over, per current exit position, and their right and
discordant answers are popcounts of ANDs (``O(E * m * N / 64)`` for all adds, drops and shifts, m
kept exits); a retune costs ``O(N * m)`` (sample n leaves at kept exit j for the thresholds in
``(max(conf before j), conf_j]``, one run of grid indices); a block scores its ``2^8`` designs on
the samples that reach it. Every count and latency is the integer
:func:`~hapi_onnx.search.score.score_problem` computes for that design (tested). Measured here
(``bench/bench_search.py``): under a second to a few seconds for E = 66 to 100, 10,000 samples and
100 thresholds.

**What it guarantees.** Every design it reports is scored exactly, and the chosen one meets every
constraint (bounds included). The result is never worse, by the tie-break order, than the exact
optimum over the thinned candidates, and no single, block or window move improves it (a local
optimum of those moves). It is *not* proven optimal over all ``2^E`` subsets, and its front is the
Pareto front of the designs it scored, not proven to be the whole space's. Checked against the
exact optimiser on random traces with E = 14 and 16 (``tests/test_search_local.py``, 184 searches
of 300 samples: the same design in 182, an equally accurate but 9% slower one in the other 2, both
max-accuracy; on 552 searches of 1,000 samples and 50 thresholds: the same design or the same
accuracy and latency in 96%, a latency within 0.5% or the same accuracy in 1.6% more, and in the
remaining 2.2% a latency up to a few % higher or 1-2 fewer right answers in 1,000).
``bench/bench_search.py`` prints the ratio to the exact optimum at E = 16 and 20.
"""

from dataclasses import dataclass, replace

import numpy as np

from hapi_onnx.choice import thresholds_reached
from hapi_onnx.search.optimise import Candidate, GlobalResult, Goal, optimise_fast
from hapi_onnx.search.pareto import pareto_indices
from hapi_onnx.search.problem import NS_PER_MS, SearchProblem, percentile_rank

SEED_CANDIDATES = 12
STARTS = 4
BLOCK = 8
BLOCK_THRESHOLDS = 1
WINDOW = 12
WINDOW_TRIES = 2
FRONT_ROUNDS = 4
FRONT_POINTS = 32

Design = tuple[tuple[int, ...], int]  # (kept local candidate indices, grid index)


def optimise_local(
    problem: SearchProblem,
    grid: np.ndarray,
    goal: Goal,
    *,
    seed_candidates: int = SEED_CANDIDATES,
    starts: int = STARTS,
    window: int = WINDOW,
    front_rounds: int = FRONT_ROUNDS,
    front_points: int = FRONT_POINTS,
) -> GlobalResult:
    """Optimum and Pareto front of the global-threshold space by local search (see the module docstring).

    Same interface as :func:`~hapi_onnx.search.optimise.optimise_fast`. With at most
    ``seed_candidates`` candidates the seed is the whole problem: the exact answer is returned.

    Args:
        problem (SearchProblem): The search data.
        grid (np.ndarray): The global threshold grid.
        goal (Goal): Constraints and objective, resolved on ``problem``.
        seed_candidates (int): Candidates of the thinned problem solved exactly. Defaults to 12.
        starts (int): Descents, from the best seeds. Defaults to 4.
        window (int): Candidates of a window solved exactly. Defaults to 12.
        front_rounds (int): Rounds of front exploration after the descents (0: the front of the
            designs the descents scored). Defaults to 4.
        front_points (int): Front points explored per round, evenly spread. Defaults to 32.

    Returns:
        GlobalResult: The best feasible design found (None when none was) and the front.
    """
    grid = np.asarray(grid, dtype=np.float32)
    thin = thinned(problem, seed_candidates)
    seeded = optimise_fast(replace(problem, candidates=thin), grid, goal)
    if thin == problem.candidates:
        return seeded
    space = _Space(problem, grid, goal)
    archive = _Archive(space)
    seeds = space.scored(seeded)
    archive.add([seeds])
    designs, _, correct, disc, latency, within = seeds
    within = [None] * len(designs) if within is None else within.tolist()
    orders = {d: archive.order(d, c, dd, lat, w)
              for d, c, dd, lat, w in zip(designs, correct, disc, latency, within, strict=True)}
    for design in sorted(orders, key=orders.get)[:starts]:
        _descend(space, archive, design, orders[design], window)
    reached = archive.best_order
    explored: set[Design] = set()
    for _ in range(front_rounds):
        todo = [d for d in archive.front_designs() if d not in explored]
        if not todo:
            break
        if len(todo) > front_points:
            todo = [todo[int(i)] for i in np.unique(np.linspace(0, len(todo) - 1, front_points).round())]
        for design in todo:
            explored.add(design)
            archive.add(space.neighbours(space.state(*design)))
    if archive.best_order != reached:  # the front's neighbourhoods held a better design: descend from it
        _descend(space, archive, archive.best_design, archive.best_order, window)
    return GlobalResult(archive.best, archive.front())


def thinned(problem: SearchProblem, size: int) -> tuple[int, ...]:
    """At most ``size`` of the problem's candidates, spread evenly over the backbone's cumulative cost.

    The shallowest and deepest candidates are always kept; the others are the ones nearest to
    evenly spaced costs between them.
    """
    cand = problem.candidates
    if len(cand) <= size:
        return cand
    depth = np.cumsum(problem.seg_ns)[list(cand)].astype(np.float64)
    free = np.ones(len(cand), dtype=bool)
    free[[0, -1]] = False  # the ends, even where segments of no cost tie them with their neighbours
    for target in np.linspace(depth[0], depth[-1], size)[1:-1]:
        free[int(np.argmin(np.where(free, np.abs(depth - target), np.inf)))] = False
    return tuple(c for c, f in zip(cand, free, strict=True) if not f)


def _pack(bits: np.ndarray) -> np.ndarray:
    """bool[..., N] as uint64[..., ceil(N / 64)] bit sets."""
    packed = np.packbits(bits, axis=-1, bitorder="little")
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), dtype=np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def _count(bits: np.ndarray) -> np.ndarray:
    """Set bits along the last axis."""
    return np.bitwise_count(bits).sum(axis=-1, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class _State:
    """One design with every sample's exit position, scored, and its samples as bit sets.

    Positions ``0 .. m-1`` are the kept exits, ``m`` the final classifier.
    """

    kept: tuple[int, ...]
    g: int
    counts: np.ndarray  # int64[m+1] samples leaving at each position
    costs: np.ndarray  # int64[m+1] latency of leaving at each position
    correct: int
    discordant: int
    latency: int
    within: int | None  # latency draws within the SLA, where the goal checks it on them
    at: np.ndarray  # uint64[m+1, W] samples leaving at each position
    then: np.ndarray  # uint64[m+1, W] samples whose next confident position (current one dropped) is p
    right: np.ndarray  # uint64[W] right where they leave
    disc: np.ndarray  # uint64[W] right where they leave != final classifier right
    right_next: np.ndarray  # uint64[W] right at the next confident position
    disc_next: np.ndarray  # uint64[W]


class _Space:
    """The search data in local candidate indices (``0 .. E-1``; ``E`` is the final classifier),
    with samples as bit sets, and the scoring of designs and whole neighbourhoods."""

    def __init__(self, problem: SearchProblem, grid: np.ndarray, goal: Goal):
        cand = list(problem.candidates)
        self.problem, self.grid, self.goal = problem, grid, goal
        self.num_candidates, self.num_samples = len(cand), problem.num_samples
        self.cand = np.asarray(cand, dtype=np.int64)
        self.grid_order = np.argsort(grid, kind="stable")
        self.grid_place = np.argsort(self.grid_order)  # grid index -> place in ascending order
        # level[k, n]: how many grid values sample n's confidence at candidate k reaches (conf >= t).
        self.level = thresholds_reached(grid[self.grid_order], problem.conf[cand]).astype(np.int32)
        final = problem.correct[-1]
        self.correct = np.concatenate([problem.correct[cand], final[None, :]])  # bool[E+1, N]
        self.disc = self.correct != final[None, :]
        self.correct_bits, self.disc_bits = _pack(self.correct), _pack(self.disc)
        self.step = problem.step_ns[self.cand]  # a kept exit adds its head and a call
        self.leave = problem.leave_ns[self.cand]  # leaving at candidate k, the kept heads apart
        self.samples = np.arange(self.num_samples)
        self.rank = None if goal.stat == "mean" else percentile_rank(goal.stat, self.num_samples)
        self.limit = goal.constraints.latency_sla_ms if goal.within_need is not None else None
        self.ends = np.append(self.cand, problem.num_exits - 1)  # local index -> trace exit (E: the final)
        self.grid_index = {float(t): i for i, t in enumerate(grid)}
        self._masks: dict[int, np.ndarray] = {}
        self._retuned: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def design(self, point: Candidate) -> Design:
        """A scored design of the problem as (local kept, grid index)."""
        kept = tuple(int(i) for i in np.searchsorted(self.cand, point.exits))
        g = self.grid_index[point.thresholds[0]] if point.thresholds else int(self.grid_order[-1])
        return kept, g

    def scored(self, result: GlobalResult) -> tuple[list[Design], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """An exact optimiser's best design and front as one batch of distinct scored designs."""
        points: dict[Design, Candidate] = {}
        for point in ([result.best] if result.best is not None else []) + result.front:
            points.setdefault(self.design(point), point)
        values = [np.array([getattr(p, f) for p in points.values()], dtype=np.int64)
                  for f in ("correct", "discordant", "latency_key")]
        within = None if self.limit is None else np.array([p.within for p in points.values()], dtype=np.int64)
        return list(points), np.array([len(d[0]) for d in points], dtype=np.int64), *values, within

    def window(self, kept: tuple[int, ...], size: int, turn: int) -> tuple[int, ...] | None:
        """``size`` candidates around a design (trace indices), or None when its exits do not fit.

        The design's exits, then their nearest candidates on either side, then candidates spread
        evenly over the rest (shifted by ``turn``, so successive windows differ).
        """
        if len(kept) >= size:
            return None
        chosen = list(kept)
        beside = {k + d for k in kept for d in (-1, 1) if 0 <= k + d < self.num_candidates} - set(kept)
        chosen += sorted(beside)[: size - len(chosen)]
        rest = [k for k in range(self.num_candidates) if k not in chosen]
        want = size - len(chosen)
        if want > 0 and rest:
            step = len(rest) / want
            chosen += sorted({rest[int((i + (turn % 2) / 2) * step) % len(rest)] for i in range(want)})
        return self.exits(tuple(sorted(set(chosen))))

    def exits(self, kept: tuple[int, ...]) -> tuple[int, ...]:
        """Trace exit indices of local candidate indices."""
        return tuple(int(self.cand[k]) for k in kept)

    def confident(self, g: int) -> np.ndarray:
        """uint64[E, W]: the samples confident at each candidate at grid threshold ``g``."""
        bits = self._masks.get(g)
        if bits is None:
            bits = self._masks[g] = _pack(self.level > self.grid_place[g])
        return bits

    def within(self, counts: np.ndarray, costs: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
        """int64[B] latency draws within the SLA of designs with these samples, costs and local exits
        per position ([B, P] each, ``ends`` broadcastable), or None when the SLA is not checked on draws."""
        if self.limit is None:
            return None
        model = self.problem.latency_model
        return (counts * model.within(self.ends[ends], costs / NS_PER_MS, self.limit)).sum(axis=1)

    def keys(self, counts: np.ndarray, costs: np.ndarray) -> np.ndarray:
        """int64[B] latency keys of designs with these samples and costs per position ([B, P] each)."""
        if self.rank is None:
            return (counts * costs).sum(axis=1)
        first = np.argmax(np.cumsum(counts, axis=1) >= self.rank, axis=1)
        return costs[np.arange(len(costs)), first]

    def state(self, kept: tuple[int, ...], g: int) -> _State:
        """Score design (``kept``, grid threshold ``g``) from scratch: ``O(N * m)``."""
        m, rows = len(kept), list(kept)
        confident = np.ones((m + 1, self.num_samples), dtype=bool)
        confident[:m] = self.level[rows] > self.grid_place[g]
        pos = np.argmax(confident, axis=0)
        confident[pos, self.samples] = False
        confident[m] = True
        nxt = np.argmax(confident, axis=0)
        ext = np.asarray(rows + [self.num_candidates])
        here, there = ext[pos], ext[nxt]
        right, disc = self.correct[here, self.samples], self.disc[here, self.samples]
        positions = np.arange(m + 1)[:, None]
        counts = np.bincount(pos, minlength=m + 1)
        costs = self.problem.position_costs(self.exits(kept))
        within = self.within(counts[None], costs[None], ext)
        return _State(
            kept, g, counts, costs, int(right.sum()), int(disc.sum()), int(self.keys(counts[None], costs[None])[0]),
            None if within is None else int(within[0]),
            _pack(pos[None, :] == positions), _pack(nxt[None, :] == positions), _pack(right), _pack(disc),
            _pack(self.correct[there, self.samples]), _pack(self.disc[there, self.samples]),
        )

    def neighbours(self, st: _State) -> list[tuple[list[Design], np.ndarray, np.ndarray, np.ndarray]]:
        """Every design one move from ``st``, scored: batches of (designs, right, discordant, latency)."""
        kept, g, m = st.kept, st.g, len(st.kept)
        kept_arr = np.asarray(kept, dtype=np.int64)
        ext = np.append(kept_arr, self.num_candidates)  # local exit of each position
        free = np.setdiff1d(np.arange(self.num_candidates), kept_arr)
        confident = self.confident(g)
        reach = np.bitwise_or.accumulate(st.at[::-1], axis=0)[::-1]  # reach[p]: samples at positions >= p
        before = np.concatenate([[0], np.cumsum(self.step[kept_arr])])  # heads and calls before position p
        # Drops: the samples at position j move on to their next confident position.
        drop_right = _count(st.at[:m] & st.right_next) - _count(st.at[:m] & st.right)
        drop_disc = _count(st.at[:m] & st.disc_next) - _count(st.at[:m] & st.disc)
        moves_on = _count(st.at[:m, None, :] & st.then[None, :, :])  # [m, m+1]
        batches = []
        q = np.searchsorted(kept_arr, free)  # each free candidate's slot among the kept exits
        if len(free):
            # Adds: k takes the samples reaching its slot q that are confident at k.
            take = confident[free] & reach[q]
            right = st.correct + _count(take & self.correct_bits[free]) - _count(take & st.right)
            disc = st.discordant + _count(take & self.disc_bits[free]) - _count(take & st.disc)
            moved = _count(take[:, None, :] & st.at[None, :, :])  # [r, m+1]
            slot = self.leave[free] + before[q] + self.step[free]
            counts, costs = _insert_slot(st, q, moved.sum(axis=1), slot, -moved, self.step[free])
            idx = np.arange(m + 2)[None, :]
            ends = np.where(idx == q[:, None], free[:, None], ext[np.minimum(idx - (idx > q[:, None]), m)])
            designs = [(tuple(sorted(kept + (int(k),))), g) for k in free]
            batches.append((designs, np.full(len(free), m + 1), right, disc, self.keys(counts, costs),
                            self.within(counts, costs, ends)))
        if m:
            j = np.arange(m)
            counts, costs = _remove_slot(st, j, moves_on[j], self.step[kept_arr])
            idx = np.arange(m)[None, :]
            ends = ext[idx + (idx >= j[:, None])]
            designs = [(kept[:i] + kept[i + 1 :], g) for i in range(m)]
            batches.append((designs, np.full(m, m - 1), st.correct + drop_right, st.discordant + drop_disc,
                            self.keys(counts, costs), self.within(counts, costs, ends)))
            # Shifts: kept exit j replaced by a free candidate k between its kept neighbours.
            pairs = [(int(k), int(i)) for k, p in zip(free, q, strict=True) for i in (p - 1, p) if 0 <= i < m]
            if pairs:
                k, j = (np.array(v, dtype=np.int64) for v in zip(*pairs, strict=True))
                take = confident[k] & reach[j]
                left = st.at[j] & ~take  # samples at j not confident at k: they move on
                right = (st.correct + _count(take & self.correct_bits[k]) - _count(take & st.right)
                         + _count(left & st.right_next) - _count(left & st.right))
                disc = (st.discordant + _count(take & self.disc_bits[k]) - _count(take & st.disc)
                        + _count(left & st.disc_next) - _count(left & st.disc))
                moved = _count(take[:, None, :] & st.at[None, :, :]) - _count(left[:, None, :] & st.then[None, :, :])
                slot = self.leave[k] + before[j] + self.step[k]
                counts, costs = _replace_slot(st, j, _count(take), slot, -moved, self.step[k] - self.step[kept_arr[j]])
                idx = np.arange(m + 1)[None, :]
                ends = np.where(idx == j[:, None], k[:, None], ext[None, :])
                designs = [(kept[:i] + (kk,) + kept[i + 1 :], g) for kk, i in pairs]
                batches.append((designs, np.full(len(pairs), m), right, disc, self.keys(counts, costs),
                                self.within(counts, costs, ends)))
        retuned = self._retuned.get(kept)  # the same designs whatever the current threshold
        if retuned is None:
            retuned = self._retuned[kept] = self.retune(st)
        batches.append(([(kept, i) for i in range(len(self.grid))], np.full(len(self.grid), m), *retuned))
        return batches

    def blocks(self, st: _State, size: int) -> list[tuple[list[Design], np.ndarray, np.ndarray, np.ndarray]]:
        """Every design that differs from ``st`` only within a run of ``size`` consecutive candidates
        (runs starting every ``size // 2``), at its threshold: ``2^size`` designs per run.

        Samples leaving before the run do so in every one of them, and a sample passing the run
        leaves where the kept exits after it send it whatever the run holds; so only the run's own
        exits are scored design by design (bit sets, one row per design).
        """
        e, kept = self.num_candidates, np.asarray(st.kept, dtype=np.int64)
        size = min(size, e)
        stride = max(1, size // 2)
        rows = np.arange(1 << size)
        confident = self.confident(st.g)
        batches = []
        for start in sorted(set(range(0, e - size + 1, stride)) | {e - size}):
            block = np.arange(start, start + size)
            q0, q1 = np.searchsorted(kept, [start, start + size])
            before, after = kept[:q0], kept[q1:]
            remain0 = np.bitwise_or.reduce(st.at[q0:], axis=0)  # reaching the run: the same in every design
            # Where each sample reaching the run leaves after it: the kept exits after it, or the final.
            passing, leave_after = remain0.copy(), []
            for k in after:
                leave_after.append(passing & confident[k])
                passing &= ~confident[k]
            leave_after = np.array(leave_after + [passing])
            ends = np.append(after, e)
            right_after = np.bitwise_or.reduce(leave_after & self.correct_bits[ends], axis=0)
            disc_after = np.bitwise_or.reduce(leave_after & self.disc_bits[ends], axis=0)
            use = (rows[:, None] >> np.arange(size)) & 1 == 1  # [2^size, size] run exits kept in design r
            remain = np.repeat(remain0[None, :], len(rows), axis=0)
            counts = np.zeros((len(rows), q0 + size + len(ends)), dtype=np.int64)
            counts[:, :q0] = st.counts[:q0]
            right = np.full(len(rows), st.correct - int(_count(remain0 & st.right)), dtype=np.int64)
            disc = np.full(len(rows), st.discordant - int(_count(remain0 & st.disc)), dtype=np.int64)
            for i, k in enumerate(block):
                leave = remain & np.where(use[:, i : i + 1], confident[k], np.uint64(0))
                counts[:, q0 + i] = _count(leave)
                right += _count(leave & self.correct_bits[k])
                disc += _count(leave & self.disc_bits[k])
                remain &= ~leave
            counts[:, q0 + size :] = _count(remain[:, None, :] & leave_after[None, :, :])
            right += _count(remain & right_after)
            disc += _count(remain & disc_after)
            order = np.concatenate([before, block, after])
            steps = np.concatenate([np.broadcast_to(self.step[before], (len(rows), q0)),
                                    np.where(use, self.step[block], 0),
                                    np.broadcast_to(self.step[after], (len(rows), len(after)))], axis=1)
            heads = np.cumsum(steps, axis=1)
            costs = np.empty_like(counts)
            costs[:, :-1] = self.leave[order] + heads
            costs[:, -1] = self.problem.final_ns + heads[:, -1]
            fixed = tuple(int(k) for k in before), tuple(int(k) for k in after)
            designs = _Designs(len(rows), lambda r, fixed=fixed, block=block, use=use, g=st.g: (
                fixed[0] + tuple(int(k) for k in block[use[r]]) + fixed[1], g))
            ends = np.append(order, self.num_candidates)[None, :]  # a run exit not kept takes no samples
            batches.append((designs, q0 + use.sum(axis=1) + len(after), right, disc, self.keys(counts, costs),
                            self.within(counts, costs, ends)))
        return batches

    def retune(self, st: _State) -> tuple[np.ndarray, ...]:
        """Right answers, discordant counts, latency keys and draws within the SLA (or None) of
        ``st.kept`` at every grid threshold.

        Sample n leaves at kept exit j for the thresholds in ``(max(conf before j), conf_j]``: in
        ascending grid order, the places ``[max(level before j), level_j)``; ``O(N * m)``.
        """
        kept, m, size = list(st.kept), len(st.kept), len(self.grid)
        levels = self.level[kept]
        lo = np.zeros((m + 1, self.num_samples), dtype=np.int32)
        np.maximum.accumulate(levels, axis=0, out=lo[1:])
        hi = np.full((m + 1, self.num_samples), size, dtype=np.int32)
        hi[:m] = levels
        where, n = np.nonzero(hi > lo)  # the (exit, sample) pairs with a non-empty run: few per sample
        lo, hi = lo[where, n].astype(np.int64), hi[where, n].astype(np.int64)
        width, cells = m + 1, (size + 1) * (m + 1)
        counts = np.bincount(lo * width + where, minlength=cells) - np.bincount(hi * width + where, minlength=cells)
        counts = np.cumsum(counts.reshape(size + 1, width), axis=0)[:size]
        rows = np.asarray(kept + [self.num_candidates])[where]
        out = []
        for values in (self.correct, self.disc):
            w = values[rows, n]
            total = np.bincount(lo[w], minlength=size + 1) - np.bincount(hi[w], minlength=size + 1)
            out.append(np.cumsum(total)[:size])
        costs = np.broadcast_to(st.costs, counts.shape)
        keys = self.keys(counts, costs)
        within = self.within(counts, costs, np.asarray(kept + [self.num_candidates])[None, :])
        place = self.grid_place
        return out[0][place], out[1][place], keys[place], None if within is None else within[place]


class _Designs:
    """A batch's designs, made only when asked for (a run of blocks holds thousands)."""

    def __init__(self, size: int, make):
        self.size, self.make = size, make

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Design:
        return self.make(int(i))


def _insert_slot(st: _State, q, taken, slot_cost, change, extra):
    """Counts and costs by position of designs with a new exit at position q (one per row).

    Positions before q keep theirs; q gets ``taken`` samples at ``slot_cost``; old positions p >= q
    move to p + 1 with ``change[:, p]`` samples more and ``extra`` more cost.
    """
    m = len(st.kept)
    idx = np.arange(m + 2)[None, :]
    q = np.asarray(q)[:, None]
    src = np.minimum(idx - (idx > q), m)
    after = idx > q
    counts = st.counts[src] + np.where(after, np.take_along_axis(change, src, axis=1), 0)
    costs = st.costs[src] + np.where(after, np.asarray(extra)[:, None], 0)
    counts = np.where(idx == q, np.asarray(taken)[:, None], counts)
    costs = np.where(idx == q, np.asarray(slot_cost)[:, None], costs)
    return counts, costs


def _remove_slot(st: _State, j, change, saved):
    """Counts and costs by position of designs with kept exit j dropped (one per row): old positions
    p > j move to p - 1 with ``change[:, p]`` samples more and ``saved[j]`` less cost."""
    m = len(st.kept)
    idx = np.arange(m)[None, :]
    j = np.asarray(j)[:, None]
    src = idx + (idx >= j)
    after = idx >= j
    counts = st.counts[src] + np.where(after, np.take_along_axis(change, src, axis=1), 0)
    costs = st.costs[src] - np.where(after, np.asarray(saved)[j], 0)
    return counts, costs


def _replace_slot(st: _State, j, taken, slot_cost, change, extra):
    """Counts and costs by position of designs with kept exit j replaced (one per row): position j
    gets ``taken`` samples at ``slot_cost``; positions p > j get ``change[:, p]`` samples and
    ``extra`` cost more."""
    m = len(st.kept)
    idx = np.arange(m + 1)[None, :]
    j = np.asarray(j)[:, None]
    after = idx > j
    counts = st.counts[None, :] + np.where(after, change, 0)
    costs = st.costs[None, :] + np.where(after, np.asarray(extra)[:, None], 0)
    counts = np.where(idx == j, np.asarray(taken)[:, None], counts)
    costs = np.where(idx == j, np.asarray(slot_cost)[:, None], costs)
    return counts, costs


class _Archive:
    """What every scored design contributes: the best feasible one, and the least-latency design per
    count of right answers (the Pareto archive), both by the tie-break order."""

    def __init__(self, space: _Space):
        self.space, self.goal = space, space.goal
        self.latency = np.full(space.num_samples + 1, np.iinfo(np.int64).max, dtype=np.int64)
        self.held: dict[int, tuple] = {}  # correct -> (latency, tiebreak, design, discordant)
        self.best: Candidate | None = None
        self.best_design: Design | None = None
        self.best_order: tuple | None = None

    def tiebreak(self, design: Design) -> tuple:
        """Fewer exits, then the smallest exit indices, then the higher threshold."""
        kept, g = design
        return len(kept), kept, -int(self.space.grid_place[g])

    def order(self, design: Design, correct: int, discordant: int, latency: int, within: int | None) -> tuple:
        """(violation, objective keys, tie-break) of one design: smaller is better."""
        primary, secondary = (int(x) for x in self.goal.metric_order(correct, latency))
        violation = float(_violation(self.goal, correct, discordant, latency, not design[0], within))
        return violation, primary, secondary, *self.tiebreak(design)

    def add(self, batches) -> tuple[tuple, Design] | None:
        """Record batches of scored designs; returns the order and design of the best of them."""
        best = None
        for designs, sizes, correct, disc, latency, within in batches:
            self._archive(designs, correct, disc, latency, within)
            reference = np.asarray(sizes) == 0
            violation = _violation(self.goal, correct, disc, latency, reference, within)
            primary, secondary = self.goal.metric_order(correct, latency)
            top = np.lexsort((secondary, primary, violation))[0]
            tied = np.flatnonzero((violation == violation[top]) & (primary == primary[top])
                                  & (secondary == secondary[top]))
            i = int(min(tied, key=lambda i: self.tiebreak(designs[i])))
            scored = (designs[i], int(correct[i]), int(disc[i]), int(latency[i]),
                      None if within is None else int(within[i]))
            order = self.order(*scored)
            if best is None or order < best[0]:
                best = (order, designs[i])
            if order[0] == 0 and (self.best_order is None or order < self.best_order):
                self.best_order, self.best_design, self.best = order, designs[i], self.candidate(*scored)
        return best

    def _archive(self, designs, correct, disc, latency, within) -> None:
        for i in np.flatnonzero(latency <= self.latency[correct]):
            c, lat, tie = int(correct[i]), int(latency[i]), self.tiebreak(designs[i])
            held = self.held.get(c)
            if held is None or (lat, tie) < held[:2]:
                self.latency[c] = lat
                self.held[c] = (lat, tie, designs[i], int(disc[i]), None if within is None else int(within[i]))

    def candidate(self, design: Design, correct: int, discordant: int, latency: int, within: int | None) -> Candidate:
        kept, g = design
        exits = self.space.exits(kept)
        return Candidate(exits, (float(self.space.grid[g]),) * len(exits), correct, latency, discordant, within)

    def _front(self) -> list[int]:
        counts = np.array(sorted(self.held), dtype=np.int64)
        return [int(counts[i]) for i in pareto_indices(self.latency[counts], counts)]

    def front_designs(self) -> list[Design]:
        return [self.held[c][2] for c in self._front()]

    def front(self) -> list[Candidate]:
        out = []
        for c in self._front():
            lat, _, design, disc, within = self.held[c]
            out.append(self.candidate(design, c, disc, lat, within))
        return out


def _violation(goal: Goal, correct, discordant, latency, reference, within=None):
    """How far designs miss the constraints: relative shortfall of right answers plus relative SLA
    excess (for a percentile SLA on draws: relative shortfall of draws within it; exactly 0 when feasible)."""
    short = np.maximum(goal.required_correct(discordant, reference) - np.asarray(correct), 0) / goal.num_samples
    if goal.within_need is not None:
        return short + np.maximum(goal.within_need - np.asarray(within), 0) / goal.within_need
    if goal.max_latency_key is None:
        return short
    return short + np.maximum(np.asarray(latency) - goal.max_latency_key, 0) / max(goal.max_latency_key, 1)


def _descend(space: _Space, archive: _Archive, design: Design, current: tuple, window: int) -> None:
    """From ``design`` (of order ``current``), move while a move beats the current design.

    Moves, larger ones tried only when the smaller fail: the best single move
    (:meth:`_Space.neighbours`); the best change within a run of ``BLOCK`` consecutive candidates at
    the design's threshold or ``BLOCK_THRESHOLDS`` grid steps either side (:meth:`_Space.blocks`);
    the exact optimum over a window of ``window`` candidates around it (:meth:`_Space.window`,
    ``WINDOW_TRIES`` windows, when its exits fit).
    """
    while True:
        st = space.state(*design)
        order, best = archive.add(space.neighbours(st))
        if not order < current:
            place = int(space.grid_place[design[1]])
            nearby = range(max(0, place - BLOCK_THRESHOLDS), min(len(space.grid), place + BLOCK_THRESHOLDS + 1))
            states = [st if p == place else space.state(design[0], int(space.grid_order[p])) for p in nearby]
            order, best = archive.add([batch for s in states for batch in space.blocks(s, BLOCK)])
        for turn in range(WINDOW_TRIES):
            if order < current:
                break
            candidates = space.window(design[0], window, turn)
            if candidates is None:
                break
            result = optimise_fast(replace(space.problem, candidates=candidates), space.grid, space.goal)
            order, best = archive.add([space.scored(result)])
        if not order < current:
            return
        current, design = order, best
