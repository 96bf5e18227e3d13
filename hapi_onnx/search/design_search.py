"""``search``: from a trace and a latency table to a :class:`Design`, in one call.

The CLI's ``hapi-onnx search`` is this function; see :mod:`hapi_onnx.search.optimise` for the
space, the objective and the tie-breaking, and :mod:`hapi_onnx.search.problem` for the cost model.
"""

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from hapi_onnx.choice import ExitChoice
from hapi_onnx.design import Design, FrontPoint
from hapi_onnx.errors import HapiError, InfeasibleError
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.search.constraints import CERTIFY_FRACTION, Constraints
from hapi_onnx.search.guarantee import (
    TESTS,
    certification_path,
    certify,
    choose_tests,
    rate_upper_bound,
    samples_to_certify,
    split_indices,
    statement,
    tail_p_value,
)
from hapi_onnx.search.latency import mixture_stats, needed_weight
from hapi_onnx.search.local_search import SEED_CANDIDATES, optimise_local
from hapi_onnx.search.optimise import (
    GRID_SIZE,
    Candidate,
    Goal,
    optimise_exhaustive,
    optimise_fast,
    resolve_goal,
    threshold_grid,
)
from hapi_onnx.search.pareto import pareto_indices
from hapi_onnx.search.problem import NS_PER_MS, SearchProblem
from hapi_onnx.search.refine import refine_per_exit
from hapi_onnx.search.score import Score, score_problem
from hapi_onnx.search.stages import ROUNDS, Positions, StageTimer, choose_on_stages, measured_positions
from hapi_onnx.trace import Trace

OPTIMISERS = ("auto", "fast", "local", "exhaustive")
BISECTION_ROUNDS = 16  # halvings of a percentile SLA closing in on the least predicted percentile
EXACT_CANDIDATES = 16  # auto: the exact subset-sum optimiser up to here (2^16 subsets, under a second)
LOCAL_OPTIMALITY = (
    f"local search, not proven optimal: never worse than the exact optimum over {SEED_CANDIDATES} thinned "
    "candidates, and no single-exit, block or window move improves it (hapi_onnx.search.local_search)"
)


def search(
    trace: Trace,
    table: LatencyTable,
    constraints: Constraints,
    *,
    candidates: Sequence[str | int] | None = None,
    optimiser: str = "auto",
    grid_size: int = GRID_SIZE,
    stages: StageTimer | None = None,
) -> Design:
    """Choose exits and thresholds for the user's constraints.

    Objective: with only a latency SLA, the most accurate design within it; with an accuracy
    floor or drop budget, the fastest design meeting every constraint. Accuracy constraints are
    checked on one-sided bounds at ``constraints.bound_level``, so the choice holds on new data
    and not only on the search samples (:mod:`hapi_onnx.search.bounds`); the SLA is checked on the
    predicted latency statistic.

    Args:
        trace (Trace): Trace of the over-provisioned model on the calibration (search) split.
        table (LatencyTable): Latency table of the same model on the target device.
        constraints (Constraints): SLA, accuracy floor / drop budget, bound level, threshold space.
        candidates (Sequence[str | int] | None): Intermediate exits the search may keep. Defaults
            to None: all.
        optimiser (str): ``fast`` (exact, by subset sums; up to 20 candidates), ``local`` (local
            search from a thinned exact optimum, any number of candidates; see
            :mod:`hapi_onnx.search.local_search`), ``exhaustive`` (exact reference, small problems
            only) or ``auto``: ``fast`` up to ``EXACT_CANDIDATES`` (16) candidates, else ``local``.
            Defaults to auto. The design records which ran and whether its answer is exact.
        grid_size (int): Quantile levels of the global threshold grid. Defaults to 100.
        stages (StageTimer | None): Time the fused stages of the choice and its closest rivals on
            the front, re-score them on those numbers and choose again until the choice is stable
            (:mod:`hapi_onnx.search.stages`; with the split guarantee only the choice is timed, for
            its prediction). Defaults to None: the prediction is summed from the table's pieces.

    Returns:
        Design: The chosen design with its predictions and the Pareto front.

    Raises:
        InfeasibleError: when no design meets the constraints (the message names the closest
            achievable design).
        HapiError: when the artifacts disagree or an argument is invalid.
    """
    problem, goal, optimise, optimiser = setup(trace, table, constraints, candidates, optimiser)
    if stages is not None and stages.model_fingerprint != problem.model_fingerprint:
        raise HapiError(
            f"The model whose stages would be timed (fingerprint {stages.model_fingerprint[:12]}...) is not the "
            f"one the trace was taken on ({problem.model_fingerprint[:12]}...). Give the same early-exit model."
        )
    if constraints.certified:
        return _certified_search(problem, goal, optimise, optimiser=optimiser, grid_size=grid_size, stages=stages)
    grid = threshold_grid(problem, grid_size)
    result = optimise(problem, grid, goal)
    if result.best is None:
        accurate = None  # the fastest design meeting the accuracy constraints, ignoring the SLA
        if goal.has_accuracy_constraint and goal.has_sla:
            accurate = optimise(problem, grid, goal.without_sla()).best
        fastest = None  # the least percentile of any design (the front's fastest need not have it)
        if goal.within_need is not None:
            anything = replace(goal, min_correct=np.zeros_like(goal.min_correct), reference_min_correct=0)
            start = min(result.front, key=lambda p: _predicted_ms(problem, goal, p))
            fastest = _least_predicted(problem, grid, anything, optimise, start)
        raise InfeasibleError(infeasible_message(problem, goal, result.front, accurate, fastest))
    chosen, front = result.best, result.front
    if goal.stat != "mean" and goal.has_accuracy_constraint and problem.latency_model is not None:
        chosen = _least_predicted(problem, grid, goal, optimise, chosen)  # min-latency: on the prediction
    if constraints.space == "per-exit":
        chosen = refine_per_exit(problem, chosen, goal, grid, grid_size=grid_size)
    if stages is not None:
        return _design_on_stages(problem, goal, chosen, front, stages, optimiser=optimiser, grid_size=grid_size)
    return _design(problem, goal, chosen, front, optimiser=optimiser, grid_size=grid_size)


def _timed_positions(problem: SearchProblem, point: Candidate, timer: StageTimer) -> Positions:
    """A design's position records with its stages timed in place of the pieces where they ran."""
    ev = score_problem(problem, point.exits, point.thresholds)
    return measured_positions(problem.position_records(point.exits),
                              timer(_choices(problem, point), ev.exit_distribution))


def _stage_statistic(problem: SearchProblem, goal: Goal, point: Candidate, positions: Positions) -> float:
    """The goal's latency statistic of a design from its position records: the pieces' prediction
    itself where none was timed, else the mixture of the records on its exit counts."""
    if all(p["source"] == "pieces" for p in positions):
        return _predicted_ms(problem, goal, point)
    counts = score_problem(problem, point.exits, point.thresholds).exit_counts
    return mixture_stats(positions, counts)[f"{goal.stat}_ms"]


def _design_on_stages(problem: SearchProblem, goal: Goal, chosen: Candidate, front: list[Candidate],
                      timer: StageTimer, *, optimiser: str, grid_size: int) -> Design:
    """The design chosen again among the choice and its front on their timed stages, its prediction
    from them (:func:`_choose_on_stages`)."""
    pool, seen = [], set()
    for point in [chosen, *front]:
        if (point.exits, point.thresholds) not in seen:
            seen.add((point.exits, point.thresholds))
            pool.append(point)
    accurate = goal.accurate(np.array([p.correct for p in pool]), np.array([p.discordant for p in pool]),
                             reference=np.array([not p.exits for p in pool]))
    best, positions, record = _choose_on_stages(problem, goal, pool, 0, [bool(a) for a in accurate], timer)
    design = _design(problem, goal, pool[best], [p for i, p in enumerate(pool) if i != best],
                     optimiser=optimiser, grid_size=grid_size)
    return _with_positions(design, problem, pool[best], positions, record)


def _choose_on_stages(problem: SearchProblem, goal: Goal, pool: list[Candidate], first: int, accurate: list[bool],
                      timer: StageTimer) -> tuple[int, dict[tuple, float] | Positions, dict]:
    """Choose among ``pool`` (``first`` the choice on pieces; ``accurate``: which meet the accuracy
    constraints) on timed stages (:func:`~hapi_onnx.search.stages.choose_on_stages`).

    Returns:
        The index chosen, its position records (timed), and what ``search.stages`` records
        (rounds, whether the choice is stable, how many designs were timed, and each timed design's
        statistic, by its exits, for the front).
    """
    def allowed(i: int, ms: float) -> bool:
        return accurate[i] and (not goal.has_sla or ms <= goal.constraints.latency_sla_ms)

    def better(i: int, ms: float) -> tuple:
        p = pool[i]
        tail = (len(p.exits), p.exits, tuple(-t for t in p.thresholds))
        return (ms, -p.correct, *tail) if goal.objective == "min-latency" else (-p.correct, ms, *tail)

    result = choose_on_stages(
        len(pool), first,
        pieces=lambda i: problem.position_records(pool[i].exits),
        measure=lambda i: _timed_positions(problem, pool[i], timer),
        statistic=lambda i, positions: _stage_statistic(problem, goal, pool[i], positions),
        allowed=allowed, better=better, rival=lambda i: accurate[i], rounds=ROUNDS,
    )
    positions = result.positions.get(result.chosen) or _timed_positions(problem, pool[result.chosen], timer)
    timed = {_choices(problem, pool[i]): _stage_statistic(problem, goal, pool[i], records)
             for i, records in result.positions.items()}
    record = {"rounds": result.rounds, "stable": result.stable, "timed": len(result.positions), "_front": timed}
    return result.chosen, positions, record


def _with_positions(design: Design, problem: SearchProblem, point: Candidate, positions: Positions,
                    record: dict) -> Design:
    """``design`` predicted from ``positions`` (some timed as stages), and how they were timed in
    ``search.stages``."""
    counts = score_problem(problem, point.exits, point.thresholds).exit_counts
    stats = mixture_stats(positions, counts)
    predicted = {**design.predicted, **stats, "positions": positions,
                 "speedup_vs_full": problem.monolithic_ms / stats["mean_ms"]}
    record = dict(record)
    timed = record.pop("_front", {})  # the timed designs' statistics replace their pieces' on the front
    front = sorted((replace(f, latency_ms=timed.get(f.exits, f.latency_ms)) for f in design.pareto_front),
                   key=lambda f: f.latency_ms)
    record["runs"] = sum(p.get("runs", 0) for p in positions)
    return replace(design, predicted=predicted, pareto_front=tuple(front),
                   search={**design.search, "stages": record})


def check_reachable(trace: Trace, constraints: Constraints) -> None:
    """Refuse, from the trace alone (before profiling), constraints that no design can meet.

    ``build`` calls it right after calibrate, so an unreachable floor costs no profile. With the
    split guarantee the certification path starts at the full model (:mod:`.guarantee`), so a
    floor the full model is not certified at on the certify part stops every design, exactly as
    :func:`search` would; otherwise no design is right on more samples than some exit gets right.

    Raises:
        HapiError: when no design can reach the accuracy floor, or the trace has no labels and the
            constraints are on accuracy against them (``reference="labels"``).
    """
    right = trace.agreement if constraints.reference == "final" else trace.correct
    floor = constraints.min_accuracy
    if floor is None:
        return
    wanted = f"no design reaches {100 * floor:.2f}% accuracy"
    if constraints.certified:
        held = right[-1, split_indices(trace.num_samples)[1]]
        n, errors, level = len(held), int(len(held) - held.sum()), constraints.bound_level
        if tail_p_value(errors, n, 1.0 - floor) > 1.0 - level:
            raise HapiError(
                f"{wanted}: even the full model's accuracy lower bound is "
                f"{100 * (1.0 - rate_upper_bound(errors, n, level)):.2f}% on the {n} held-out calibration samples "
                f"(at level {level:g}; it is right on {100 * held.mean():.2f}% of them). Lower the accuracy floor or "
                "the bound level (--bound-level), or calibrate on more data."
            )
        return
    best = float(right.any(axis=0).mean())
    if best < floor:
        raise HapiError(
            f"{wanted}: on the calibration data at most {100 * best:.2f}% of the samples are right at some exit "
            f"(the full model {100 * right[-1].mean():.2f}%). Lower the accuracy floor."
        )


def setup(trace: Trace, table: LatencyTable, constraints: Constraints, candidates: Sequence[str | int] | None,
          optimiser: str) -> tuple[SearchProblem, Goal, Callable, str]:
    """The problem, the goal, the optimiser function and its name (``auto`` resolved), all checked."""
    if not isinstance(constraints, Constraints):
        raise HapiError(f"constraints must be a hapi_onnx.search.Constraints. Got {constraints!r} instead.")
    if optimiser not in OPTIMISERS:
        raise HapiError(
            f"--optimiser: the search optimiser must be one of {', '.join(OPTIMISERS)}. Got {optimiser!r} instead."
        )
    problem = SearchProblem.from_artifacts(trace, table, candidates, reference=constraints.reference)
    goal = resolve_goal(problem, constraints)
    if optimiser == "auto":
        optimiser = "fast" if len(problem.candidates) <= EXACT_CANDIDATES else "local"
    optimise = {"fast": optimise_fast, "local": optimise_local, "exhaustive": optimise_exhaustive}[optimiser]
    return problem, goal, optimise, optimiser


def _predicted_ms(problem: SearchProblem, goal: Goal, point: Candidate) -> float:
    """A design's predicted latency statistic: the mean, or a percentile with the backbone's jitter
    (:meth:`SearchProblem.percentiles`): what the design stores and the SLA is checked on."""
    if goal.stat == "mean":
        return goal.latency_ms(point.latency_key)
    counts = score_problem(problem, point.exits, point.thresholds).exit_counts
    return problem.percentiles(point.exits, counts, [goal.stat])[goal.stat]


def _least_predicted(problem: SearchProblem, grid: np.ndarray, goal: Goal, optimise, start: Candidate,
                     rounds: int = BISECTION_ROUNDS) -> Candidate:
    """The design meeting ``goal``'s accuracy constraints with the least predicted percentile, from a
    design ``start`` that meets them, by bisection on a percentile SLA.

    The optimisers rank on the path costs' percentile (additive per position, so exact and fast),
    which need not order designs as their percentile with the jitter does; but whether any design
    meets a percentile SLA *is* exact (:meth:`Goal.fast_enough`), so halving the SLA between one no
    design meets and the best prediction found closes in on the least (to ``2^-rounds`` of
    ``start``'s prediction).
    """
    need = needed_weight(goal.stat, problem.num_samples, problem.latency_model.num_draws)
    best, low, high = start, 0.0, _predicted_ms(problem, goal, start)
    for _ in range(rounds):
        middle = (low + high) / 2
        probe = replace(goal, max_latency_key=None, within_need=need,
                        constraints=replace(goal.constraints, latency_sla_ms=middle))
        found = optimise(problem, grid, probe).best
        if found is None:
            low = middle
        else:
            best, high = found, _predicted_ms(problem, goal, found)
    return best


def _front(problem: SearchProblem, goal: Goal, points: list[Candidate]) -> list[tuple[int, float]]:
    """Indices of the points no other point beats on both accuracy and the predicted statistic, each
    with that statistic (ms), by increasing latency.

    The optimisers' fronts are of the path cost's statistic; a percentile is then predicted with the
    jitter (as the design's own), which can reorder points, so the ones it leaves dominated go.
    """
    latency = [_predicted_ms(problem, goal, p) for p in points]
    keys = np.rint(np.asarray(latency) * NS_PER_MS).astype(np.int64)
    correct = np.array([p.correct for p in points], dtype=np.int64)
    return [(int(i), latency[i]) for i in pareto_indices(keys, correct)]


def _certified_search(problem: SearchProblem, goal: Goal, optimise, *, optimiser: str, grid_size: int,
                      stages: StageTimer | None = None) -> Design:
    """Search on one part of the samples, certify along the path on the other (:mod:`.guarantee`);
    with ``stages``, the certified designs are chosen among again on their timed stages."""
    return certify_searched(search_part(problem, goal, optimise, grid_size=grid_size),
                            optimiser=optimiser, grid_size=grid_size, stages=stages)


@dataclass(frozen=True, eq=False)
class PartSearch:
    """What a certified search decided on the search part alone, before the certify part is read.

    Attributes:
        problem (SearchProblem): Every calibration sample.
        goal (Goal): The constraints on ``problem``.
        part (SearchProblem): The search part (the only samples the choices below saw).
        held (SearchProblem): The certify part.
        goal_part (Goal): The constraints on ``part``.
        grid (np.ndarray): The search part's threshold grid.
        chosen (Candidate | None): The search part's optimum (None: nothing meets the constraints there).
        per_exit (bool): Whether ``chosen`` has per-exit thresholds.
        optimise (Callable): The optimiser that chose it (the guarantee's price runs it again).
    """

    problem: SearchProblem
    goal: Goal
    part: SearchProblem
    held: SearchProblem
    goal_part: Goal
    grid: np.ndarray
    chosen: Candidate | None
    per_exit: bool
    optimise: Callable

    @functools.cached_property
    def rehearsal(self) -> tuple[Candidate | None, float | None]:
        """The certification rehearsed on the search part itself (no certify-part sample is read): the
        preferred design of the path that passes there, and its latency statistic on the search part;
        ``(None, None)`` when none does (e.g. the full model, first on the path, already fails).

        What a choice between models may compare: it sees what the certificate will test (the path
        from the full model down), on data the certificate does not use.
        """
        path = list(certification_path(self.part, self.chosen, self.grid, self.goal_part, self.per_exit))
        tests = choose_tests(self.part, path, self.held.num_samples, self.goal)  # as the certificate will
        sla = self.goal.constraints.latency_sla_ms
        passed = [t.design for t in certify(self.part, path, self.goal, tests)
                  if t.certified and (sla is None or _predicted_ms(self.part, self.goal_part, t.design) <= sla)]
        if not passed:
            return None, None
        best = min(passed, key=lambda point: _preference(self.goal_part, point))
        return best, _predicted_ms(self.part, self.goal_part, best)


def search_part(problem: SearchProblem, goal: Goal, optimise, *, grid_size: int) -> PartSearch:
    """The first half of a certified search: split the samples and optimise on the search part."""
    search_idx, certify_idx = split_indices(problem.num_samples)
    part, held = problem.subset(search_idx), problem.subset(certify_idx)
    goal_part = resolve_goal(part, goal.constraints)
    grid = threshold_grid(part, grid_size)  # from the search part only: the path must not see the rest
    chosen = optimise(part, grid, goal_part).best
    per_exit = goal.constraints.space == "per-exit" and chosen is not None and bool(chosen.exits)
    if per_exit:
        chosen = refine_per_exit(part, chosen, goal_part, grid, grid_size=grid_size)
    return PartSearch(problem, goal, part, held, goal_part, grid, chosen, per_exit, optimise)


def certify_searched(searched: PartSearch, *, optimiser: str, grid_size: int,
                     stages: StageTimer | None = None) -> Design:
    """The second half: certify the path through the search part's choice on the certify part, and
    choose among the certified designs (again on their timed ``stages``, where given)."""
    problem, goal, part, held = searched.problem, searched.goal, searched.part, searched.held
    path = list(certification_path(part, searched.chosen, searched.grid, searched.goal_part, searched.per_exit))
    tests = choose_tests(part, path, held.num_samples, goal)  # from the search part too
    tested = certify(held, path, goal, tests)
    scored = [goal.scored(problem, t.design.exits, t.design.thresholds) for t in tested]
    ok = [t.certified and bool(goal.fast_enough(s.latency_key, s.within))
          for s, t in zip(scored, tested, strict=True)]  # worked out once: the choice and the front use it
    feasible = [(s, t) for s, t, good in zip(scored, tested, ok, strict=True) if good]
    if not feasible:
        raise InfeasibleError(_uncertified_message(problem, goal, scored, tested, len(held.correct[0])))
    on_prediction = goal.stat != "mean" and goal.has_accuracy_constraint  # min-latency at a percentile
    chosen, proof = min(feasible, key=lambda pair: (
        _predicted_ms(problem, goal, pair[0]) if on_prediction else 0.0, *_preference(goal, pair[0])))
    at = next(i for i, (s, t) in enumerate(zip(scored, tested, strict=True)) if s is chosen and t is proof)
    if stages is not None:
        at, positions, record = _choose_on_stages(problem, goal, scored, at, [t.certified for t in tested], stages)
        chosen, proof = scored[at], tested[at]
    level = goal.constraints.bound_level
    front = [FrontPoint(
        exits=_choices(problem, scored[i]),
        accuracy=scored[i].correct / problem.num_samples,
        latency_ms=latency,
        accuracy_lower_bound=tested[i].accuracy_bound,
        accuracy_drop_bound_pp=100 * tested[i].drop_bound,
        feasible=ok[i],
    ) for i, latency in _front(problem, goal, scored)]
    design = _design(problem, goal, chosen, [], optimiser=optimiser, grid_size=grid_size)
    guarantee = {
        "method": "split",
        "test": proof.test,
        "level": level,
        "search_samples": part.num_samples,
        "certify_samples": held.num_samples,
        "tested": len(tested),
        "certified": sum(t.certified for t in tested),
        "statement": statement(level, goal.constraints.reference, part.num_samples, held.num_samples, proof.test),
        "price": _price(problem, goal, searched.optimise, grid_size, chosen, path),
        # The certified designs from the full model (first, not listed) to the chosen one, as
        # thresholds of the chosen exits: the runtime's drift monitor steps back along it.
        "path": [list(s.thresholds) for s in scored[1 : at + 1]],
    }
    predicted = {**design.predicted, "accuracy_lower_bound": proof.accuracy_bound,
                 "accuracy_drop_bound_pp": 100 * proof.drop_bound}
    design = replace(design, predicted=predicted, pareto_front=tuple(front),
                     search={**design.search, "guarantee": guarantee})
    return design if stages is None else _with_positions(design, problem, chosen, positions, record)


def _price(problem: SearchProblem, goal: Goal, optimise, grid_size: int, chosen: Candidate,
           path: list[Candidate]) -> dict:
    """What the guarantee costs: the certified design's predicted speed-up next to the design the
    same search picks on raw counts of every calibration sample (no guarantee), and roughly how many
    calibration samples would certify the first design of the path halfway between the two in
    speed-up (None when none is, or its rates break the constraint: then data does not help)."""
    def speedup(point: Candidate) -> float:
        return problem.monolithic_ms / score_problem(problem, point.exits, point.thresholds).mean_ms

    raw = resolve_goal(problem, replace(goal.constraints, bound_level=0.0))
    uncertified = optimise(problem, threshold_grid(problem, grid_size), raw).best
    certified = speedup(chosen)
    best = speedup(uncertified) if uncertified is not None else certified
    samples = None
    if best > certified * 1.01:
        halfway = (certified + best) / 2
        point = next((p for p in path if p.exits and speedup(p) >= halfway), None)
        if point is not None:
            s = score_problem(problem, point.exits, point.thresholds)
            counts = (s.losses, s.gains, problem.num_samples - s.correct)
            needed = [samples_to_certify(t, counts, problem.num_samples, goal) for t in TESTS]
            needed = [k for k in needed if k is not None]  # with more data, either test may be chosen
            samples = math.ceil(min(needed) / CERTIFY_FRACTION) if needed else None
    return {"certified_speedup": certified, "uncertified_speedup": max(best, certified),
            "samples_for_half_the_gap": samples}


def _preference(goal: Goal, point: Candidate) -> tuple:
    """The documented total order (:mod:`.optimise`): objective, fewer exits, smaller indices, higher threshold."""
    metric = tuple(int(x) for x in goal.metric_order(point.correct, point.latency_key))
    return (*metric, len(point.exits), point.exits, tuple(-t for t in point.thresholds))


def _uncertified_message(problem, goal, scored, tested, certify_samples: int) -> str:
    c = goal.constraints
    wanted = _accuracy_wanted(goal)
    safest = scored[0]
    if not tested[0].certified:
        return (
            f"no design reaches {wanted}: even the full model's accuracy lower bound is "
            f"{100 * tested[0].accuracy_bound:.2f}% on the {certify_samples} held-out calibration samples. "
            "Lower the accuracy floor or the bound level (--bound-level), or calibrate on more data."
        )
    return (
        f"no certified design meets {c.percentile} latency <= {c.latency_sla_ms:g} ms with {wanted}; the safest, "
        f"{_describe(problem, goal, safest)}, is too slow. Raise the SLA, relax the accuracy constraint, or "
        "profile on a faster device."
    )


def infeasible_message(
    problem: SearchProblem, goal: Goal, front: list[Candidate], accurate: Candidate | None,
    fastest: Candidate | None = None,
) -> str:
    """Why no design meets the constraints, naming the closest achievable designs with their bounds.

    Args:
        problem (SearchProblem): The search data.
        goal (Goal): The constraints no design met.
        front (list[Candidate]): The Pareto front of the space.
        accurate (Candidate | None): The fastest design meeting the accuracy constraints when the
            SLA is ignored (None when there is none, or no SLA or accuracy constraint).
        fastest (Candidate | None): The design with the least predicted latency statistic, where the
            front's fastest point need not be it (:func:`_least_predicted`). Defaults to None: the
            front's.
    """
    stat, sla = goal.stat, goal.constraints.latency_sla_ms
    wanted = _accuracy_wanted(goal)
    most_accurate = front[-1]
    if goal.has_accuracy_constraint and accurate is None:
        fix = "Lower the accuracy floor" + (" or the bound level (--bound-level)" if goal.z else "")
        return (
            f"no design reaches {wanted} on the search data; the most accurate is "
            f"{_describe(problem, goal, most_accurate)}. {fix}."
        )
    within = [p for p in front if goal.fast_enough(p.latency_key, p.within)]
    if not within or accurate is None:  # the SLA alone is out of reach: name the fastest prediction
        fastest = fastest or min(front, key=lambda p: (_predicted_ms(problem, goal, p), -p.correct))
        return (
            f"no design meets {stat} latency <= {sla:g} ms; the fastest is "
            f"{_describe(problem, goal, fastest)}. Raise the SLA or profile on a faster device."
        )
    short = [int(goal.required_correct(p.discordant, not p.exits)) - p.correct for p in within]
    closest = within[max(range(len(within)), key=lambda i: (-short[i], i))]  # ties: the more accurate
    return (
        f"no design reaches {wanted} within {sla:g} ms {stat}; within the SLA the closest is "
        f"{_describe(problem, goal, closest)}, and the fastest reaching the accuracy is "
        f"{_describe(problem, goal, accurate)}. Relax one of the constraints."
    )


def _accuracy_wanted(goal: Goal) -> str:
    c = goal.constraints
    parts = []
    if c.min_accuracy is not None:
        parts.append(f"{100 * c.min_accuracy:.2f}% accuracy")
    if c.max_accuracy_drop is not None:
        parts.append(f"an accuracy drop <= {c.max_accuracy_drop:g} pp")
    text = " and ".join(parts)
    if c.certified:
        return f"{text} (certified at level {c.bound_level:g})"
    return f"{text} (as {100 * c.bound_level:g}%-level bounds)" if goal.z else text


def _describe(problem: SearchProblem, goal: Goal, point: Candidate) -> str:
    names = ", ".join(problem.names(point.exits))
    thr = ", ".join(f"{t:.4g}" for t in point.thresholds) or "none"
    if len(set(point.thresholds)) == 1 and len(point.thresholds) > 1:
        thr = f"{point.thresholds[0]:.4g} at every exit"
    bounds = ""
    if goal.z and goal.constraints.min_accuracy is not None:
        bounds += f"accuracy lower bound {100 * goal.accuracy_bound(point):.2f}%; "
    if goal.z and goal.constraints.max_accuracy_drop is not None:
        bounds += f"drop upper bound {goal.drop_bound_pp(point):.2f} pp; "
    return (
        f"{100 * point.correct / problem.num_samples:.2f}% at {_predicted_ms(problem, goal, point):.3f} ms "
        f"{goal.stat} ({bounds}exits {names}; thresholds {thr})"
    )


def _design(
    problem: SearchProblem, goal: Goal, chosen: Candidate, front: list[Candidate], *, optimiser: str, grid_size: int
) -> Design:
    ev = score_problem(problem, chosen.exits, chosen.thresholds)
    full = score_problem(problem, (), ())
    exact = optimiser != "local" or len(problem.candidates) <= SEED_CANDIDATES  # local then solved it whole
    return Design(
        exits=_choices(problem, chosen),
        constraints=goal.constraints,
        predicted={
            **_predicted(problem, ev),
            "accuracy_lower_bound": goal.accuracy_bound(chosen),
            "accuracy_drop_bound_pp": goal.drop_bound_pp(chosen),
        },
        reference={
            "accuracy": problem.final_correct / problem.num_samples,
            "mean_ms": problem.monolithic_ms,
            "no_exit_mean_ms": full.mean_ms,
            "no_exit_p90_ms": full.stat_ms("p90"),
        },
        pareto_front=front_points(problem, goal, [chosen, *front]),  # the chosen wins exact ties
        search={
            "optimiser": optimiser,
            "exact": exact,
            "optimality": "exact" if exact else LOCAL_OPTIMALITY,
            "grid_size": grid_size,
            "num_samples": problem.num_samples,
            "candidates": [problem.exit_names[i] for i in problem.candidates],
        },
        device=problem.device,
        trace_fingerprint=problem.trace_fingerprint,
        latency_fingerprint=problem.latency_fingerprint,
        model_fingerprint=problem.model_fingerprint,
    )


def front_points(problem: SearchProblem, goal: Goal, points: Sequence[Candidate]) -> tuple[FrontPoint, ...]:
    """The points no other beats on accuracy and the predicted statistic, as front points (bounds and
    feasibility per design, on ``problem``'s samples), by increasing latency."""
    return tuple(
        FrontPoint(
            exits=_choices(problem, points[i]),
            accuracy=points[i].correct / problem.num_samples,
            latency_ms=latency,
            accuracy_lower_bound=goal.accuracy_bound(points[i]),
            accuracy_drop_bound_pp=goal.drop_bound_pp(points[i]),
            feasible=goal.feasible_candidate(points[i]),
        )
        for i, latency in _front(problem, goal, list(points))
    )


def _choices(problem: SearchProblem, point: Candidate) -> tuple[ExitChoice, ...]:
    """A scored design's exits as the one value type every later step reads."""
    names = [problem.exit_names[i] for i in point.exits]
    return (*map(ExitChoice, names, point.thresholds), ExitChoice(problem.exit_names[-1]))


def _predicted(problem: SearchProblem, ev: Score) -> dict:
    """Predicted metrics: percentiles with the backbone's jitter when the table has distributions."""
    stats = ("p50", "p90", "p99")
    percentiles = problem.percentiles(ev.exits, ev.exit_counts, stats)
    monolithic_ms = problem.monolithic_ms
    return {
        "accuracy": ev.accuracy,
        "mean_ms": ev.mean_ms,
        **{f"{s}_ms": percentiles[s] for s in stats},
        "exit_distribution": list(ev.exit_distribution),
        "positions": problem.position_records(ev.exits),
        "speedup_vs_full": monolithic_ms / ev.mean_ms,
    }
