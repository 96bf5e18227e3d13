"""Every exit subset at once for a batch of global thresholds, by subset-sum (zeta) transforms.

With one threshold ``t`` shared by the kept exits, sample ``n`` is *confident* at candidate ``k``
when ``conf[k, n] >= t``; call its set of confident candidates ``C_n`` (a bit mask). Under a kept
subset ``S`` it leaves at the first exit of ``S & C_n``, or reaches the final classifier. With
``low_k`` the candidates below ``k`` and ``P`` any set of candidates::

    reach[P]  = #{n : C_n & P = {}}                       (not left at any exit of P)
    gain_k[P] = #{n : k in C_n, right at k, final classifier wrong, C_n & low_k & P = {}}
    loss_k[P] = #{n : k in C_n, wrong at k, final classifier right, C_n & low_k & P = {}}

Each is a subset-sum (zeta) transform of a histogram of the masks, read at the complement of
``P``: ``E * 2^E`` additions for ``reach``, ``k * 2^k`` for ``gain_k`` and ``loss_k`` (whose
histograms hold only the few samples where exit ``k`` and the final classifier disagree).
Then, for every subset ``S`` at once (built bit by bit, ``O(2^E)`` per quantity):

- gains ``G = sum(gain_k[S & low_k] for k in S)``, losses ``L`` likewise; right answers
  ``C_final - L + G`` and discordant samples ``L + G`` (for the accuracy bounds of
  :mod:`hapi_onnx.search.bounds`);
- total latency: backbone block ``i`` (segments up to candidate ``i``, or to the final
  classifier) is run by ``reach[S & low_i]`` samples, head ``k`` plus its call by
  ``reach[S & low_k]`` and the final call by ``reach[S]``;
- a nearest-rank percentile: latency grows with the exit position, so it is the cost of the
  first kept exit ``k`` after which at most ``N - rank`` samples remain
  (``reach[S & low_{k+1}]``), else the final classifier's cost.

Per threshold this costs ``O(N * E + E * 2^E)`` instead of ``O(2^E * N * E)`` for scoring each
subset separately, and it is exact: the same integer counts and costs as
:func:`hapi_onnx.search.score.batch_metrics`. Subsets are bit masks over the problem's
candidates (bit ``i`` = ``problem.candidates[i]``).
"""

import numpy as np

from hapi_onnx.choice import thresholds_reached
from hapi_onnx.errors import HapiError
from hapi_onnx.search.problem import NS_PER_MS, SearchProblem, check_stat, percentile_rank

MAX_CANDIDATES = 20
_BLOCK_BYTES = 1 << 18  # rows transformed together in the low-bit passes (about L2-sized)


class SubsetSpace:
    """Scores all ``2^E`` subsets of a problem's ``E`` candidate exits, a batch of thresholds at a time.

    Args:
        problem (SearchProblem): The search data.

    Raises:
        HapiError: when there are more than ``MAX_CANDIDATES`` candidate exits.
    """

    def __init__(self, problem: SearchProblem):
        e = len(problem.candidates)
        if e > MAX_CANDIDATES:
            raise HapiError(
                f"The exact optimiser scores all 2^E subsets of the candidate exits; E = {e} is more than "
                f"{MAX_CANDIDATES}. Use the local search (--optimiser local, or auto, the default), or restrict "
                f"the candidates to at most {MAX_CANDIDATES} (hapi-onnx search --candidates, or --exits / "
                "--max-candidates on attach and build)."
            )
        cand = list(problem.candidates)
        self.problem = problem
        self.num_candidates = e
        self.size = 1 << e
        self._conf = problem.conf[cand]  # [E, N] float32
        final = problem.correct[-1]
        self._final_total = int(final.sum())
        self._disagree = problem.correct[cand] != final[None, :]  # [E, N] exit k right != final right
        self._gain = problem.correct[cand] & ~final[None, :]  # [E, N] right at k, final wrong
        self._weights = (np.int64(1) << np.arange(e, dtype=np.int64))[:, None]
        cumseg = np.cumsum(problem.seg_ns)
        step = problem.step_ns[cand]  # a kept exit adds its head and one call
        self._heads = _subset_sums(step)  # [2^E] sum over kept exits of head + call
        self._steps = step
        self._entry = problem.entry_ns[cand]  # not paid by the samples leaving at the exit
        self._exit_rows = [problem.leave_ns[c] + step[k] + self._heads[: 1 << k] for k, c in enumerate(cand)]
        # Backbone blocks: block k ends at candidate k (run by samples not left before it), the last
        # one at the final classifier.
        bounds = [-1, *cand, problem.num_exits - 1]
        self._blocks = np.array(
            [cumseg[b] - (cumseg[a] if a >= 0 else 0) for a, b in zip(bounds, bounds[1:], strict=False)],
            dtype=np.int64,
        )
        self._final_cost = problem.final_ns + self._heads
        self._limit = None  # (limit_ms, per-candidate and final draws within it), for the last limit asked

    @property
    def chunk_size(self) -> int:
        """Thresholds per :meth:`metrics` call that keep its arrays about cache-sized."""
        return int(min(64, max(1, (1 << 21) // self.size)))

    def masks(self, thresholds: np.ndarray) -> np.ndarray:
        """int64[N, G] bit mask of the candidates each sample is confident at, per threshold.

        A bit turns off once the threshold passes the sample's confidence, so the masks are built
        from where each bit turns off: ``O(E * N + N * G)`` instead of a comparison per bit.
        """
        thr = np.asarray(thresholds, dtype=np.float32)
        n, g = self.problem.num_samples, len(thr)
        order = np.argsort(thr, kind="stable")
        off = thresholds_reached(thr[order], self._conf)  # [E, N] first column it is off
        bits = np.broadcast_to(self._weights, off.shape)
        rows = np.broadcast_to(np.arange(n, dtype=np.int64), off.shape)
        delta = np.bincount((rows * (g + 1) + off).ravel(), weights=bits.ravel(), minlength=n * (g + 1))
        mask = (
            (1 << self.num_candidates)
            - 1
            - np.cumsum(delta.reshape(n, g + 1)[:, :g], axis=1).astype(np.int64)
        )
        out = np.empty_like(mask)
        out[:, order] = mask
        return out

    def metrics(
        self, thresholds: np.ndarray, stat: str, limit_ms: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Correct and discordant counts and latency key of every subset under a few global thresholds.

        Memory is about ``6 * 2^E * G`` int64 values: pass thresholds in chunks for large E.

        Args:
            thresholds (np.ndarray): float[G] thresholds, each shared by all kept exits (compared
                in float32).
            stat (str): ``mean`` (key = total ns) or ``p50``/``p90``/``p99`` (key = that latency).
            limit_ms (float | None): A latency limit: also count each design's latency draws within it
                (:meth:`hapi_onnx.search.latency.LatencyModel.within`; needs the problem's latency
                model). Defaults to None.

        Returns:
            tuple: int32[2^E, G] correct counts, int32[2^E, G] discordant counts (samples right
            where the final classifier is wrong, or the reverse), int64[2^E, G] latency keys, and
            int64[2^E, G] draws within ``limit_ms`` (None without it), indexed by subset mask and
            threshold.
        """
        check_stat(stat)
        e, n, size = self.num_candidates, self.problem.num_samples, self.size
        g = len(thresholds)
        shift = max(g - 1, 0).bit_length()  # columns padded to 2^shift: (mask, column) packs in one int
        mask = self.masks(thresholds)
        column = np.arange(g, dtype=np.int64)[None, :]
        flat = (mask << shift) | column
        # reach[P] = samples confident at none of the exits in P: a zeta transform of the masks' histogram.
        hist = np.bincount(flat.ravel(), minlength=size << shift).astype(np.int32)  # counts: N < 2^31
        reach = _zeta(hist.reshape(size, 1 << shift), e)[::-1, :g]
        # Gains and losses are built bit by bit: rows [2^k, 2^(k+1)) are the subsets whose highest
        # kept exit is k, i.e. rows [0, 2^k) with bit k added. Only samples where exit k and the
        # final classifier disagree count, each in channel 1 (gain) or 0 (loss).
        gains = np.empty((size, g), dtype=np.int32)
        losses = np.empty((size, g), dtype=np.int32)
        gains[0] = losses[0] = 0
        for k in range(e):
            disagree = self._disagree[k]
            rows = flat[disagree]  # samples exit k and the final classifier disagree on
            gain = np.broadcast_to(self._gain[k, disagree][:, None].astype(np.int64), rows.shape)
            at_k = (rows >> (shift + k)) & 1 == 1
            # Pack (gain?, bits below k, column) into one int.
            here = (rows[at_k] & (((1 << k) << shift) - 1)) | (gain[at_k] << (k + shift))
            counts = np.bincount(here, minlength=2 << (k + shift)).astype(np.int32).reshape(2, 1 << k, 1 << shift)
            lost = _zeta(counts[0], k)[::-1, :g]  # lost at k given the kept exits below k
            gained = _zeta(counts[1], k)[::-1, :g]
            np.add(losses[: 1 << k], lost, out=losses[1 << k : 2 << k])
            np.add(gains[: 1 << k], gained, out=gains[1 << k : 2 << k])
        correct = gains - losses
        correct += self._final_total
        discordant = np.add(gains, losses, out=gains)
        within = None if limit_ms is None else self._within(reach, limit_ms)
        if stat == "mean":
            total = np.empty((size, g), dtype=np.int64)
            total[0] = self._blocks[0] * reach[0]
            for k in range(e):
                np.add(total[: 1 << k], self._steps[k] * reach[: 1 << k], out=total[1 << k : 2 << k])
                # samples leaving at k (reaching it, not past it) skip its cut's next-segment side
                total[1 << k : 2 << k] -= self._entry[k] * (reach[: 1 << k] - reach[1 << k : 2 << k])
                total[: 2 << k] += self._blocks[k + 1] * reach[: 2 << k]
            total += self.problem.overhead_ns * reach
            return correct, discordant, total, within
        # The latency of the sample at this rank: the first kept exit after which at most n - rank
        # samples remain (latency grows with the exit position), else the final classifier.
        remain = n - percentile_rank(stat, n)
        value = np.empty((size, g), dtype=np.int64)
        value[0] = -1
        for k in range(e):
            before = value[: 1 << k]
            at_k = np.where(reach[1 << k : 2 << k] <= remain, self._exit_rows[k][:, None], -1)
            np.copyto(value[1 << k : 2 << k], np.where(before >= 0, before, at_k))
        return correct, discordant, np.where(value >= 0, value, self._final_cost[:, None]), within

    def _within(self, reach: np.ndarray, limit_ms: float) -> np.ndarray:
        """int64[2^E, G] each design's latency draws within ``limit_ms``: samples leaving at a position
        times that position's draws within it, summed (built bit by bit as the mean's total).

        A position's draws are its exit's backbone jitter shifted by its mean cost, which depends only on
        the kept exits before it: ``2^k`` lookups for candidate k, ``2^E`` for the final classifier.
        """
        model, cand = self.problem.latency_model, self.problem.candidates
        if self._limit is None or self._limit[0] != limit_ms:
            exits = [model.within(c, self._exit_rows[k] / NS_PER_MS, limit_ms) for k, c in enumerate(cand)]
            final = model.within(self.problem.num_exits - 1, self._final_cost / NS_PER_MS, limit_ms)
            self._limit = (limit_ms, exits, final)
        _, exits, final = self._limit
        reach = reach.astype(np.int64)
        out = np.empty_like(reach)
        out[0] = 0
        for k in range(self.num_candidates):
            leave = reach[: 1 << k] - reach[1 << k : 2 << k]  # samples leaving at k, given the exits below it
            np.add(out[: 1 << k], leave * exits[k][:, None], out=out[1 << k : 2 << k])
        out += reach * final[:, None]
        return out

    def exits(self, subset: int) -> tuple[int, ...]:
        """Trace indices of the candidates in ``subset``."""
        return tuple(c for i, c in enumerate(self.problem.candidates) if subset >> i & 1)

    def preference_rank(self) -> np.ndarray:
        """int64[2^E] rank of each subset in the tie-break order: fewer exits, then lexicographically
        smallest exit indices.

        For equal sizes the lexicographically smaller index tuple holds the lowest differing index,
        so its bit-reversed mask is the larger one.
        """
        masks = np.arange(self.size, dtype=np.int64)
        count = np.zeros(self.size, dtype=np.int64)
        reverse = np.zeros(self.size, dtype=np.int64)
        for i in range(self.num_candidates):
            bit = (masks >> i) & 1
            count += bit
            reverse |= bit << (self.num_candidates - 1 - i)
        order = np.lexsort((-reverse, count))
        rank = np.empty(self.size, dtype=np.int64)
        rank[order] = np.arange(self.size)
        return rank


def _zeta(a: np.ndarray, bits: int) -> np.ndarray:
    """Subset-sum transform in place over the first axis: ``a[U] <- sum(a[B] for B ⊆ U)``.

    The passes over the low bits run block by block on cache-sized runs of rows, so the array is
    streamed from memory about ``1 + bits - low`` times instead of ``bits`` times.
    """
    rest = a.shape[1:]
    row_bytes = a.itemsize * int(np.prod(rest, dtype=np.int64))
    low = min(bits, max(0, (_BLOCK_BYTES // max(row_bytes, 1)).bit_length() - 1))
    blocks = [a] if low == bits else list(a.reshape(-1, 1 << low, *rest))
    for block in blocks:
        for i in range(low):
            view = block.reshape(-1, 2, 1 << i, *rest)
            view[:, 1] += view[:, 0]
    for i in range(low, bits):
        view = a.reshape(-1, 2, 1 << i, *rest)
        view[:, 1] += view[:, 0]
    return a


def _subset_sums(values: np.ndarray) -> np.ndarray:
    """int64[2^E] sum of ``values[i]`` over the bits ``i`` of each subset."""
    sums = np.zeros(1, dtype=np.int64)
    for v in values:
        sums = np.concatenate([sums, sums + v])
    return sums
