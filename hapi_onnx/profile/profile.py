"""Profile an over-provisioned early-exit model on a device: every segment, every head, one table.

The model is cut at every exit by the cutter the bundle uses (:func:`hapi_onnx.exits.cut.cut_at_exits`)
into backbone segments and heads, shaped as a bundle runs them: each head and the last segment end
in the bundle's in-graph decision ops (:mod:`hapi_onnx.graph.decision`). Each piece becomes its own
ONNX Runtime session with the device preset's providers and options, and all of them are timed
together (see :mod:`hapi_onnx.profile.timing`), one call per piece per round in path order,
called the way the runtime calls its stages, on real intermediate values: one sample input
propagated through the segments. A trivial graph measures the fixed cost of a ``session.run``
call, and the original model (heads dropped) in one session is timed in a stream of its own for
reference (interleaved with the pieces, its own copy of the weights evicted theirs from the caches
and inflated every piece, where a stream of predict calls keeps only the bundle's weights warm).

Needs only onnx, onnxruntime and numpy, so it runs on the edge device itself.
"""

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from hapi_onnx.bundle import StageGraph, bundle_contents
from hapi_onnx.choice import FINAL, ExitChoice
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.cut import ExitCut, Piece, cut_at_exits, full_model, fused_pairs
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import fixed_batch, input_spec, load_model, model_fingerprint
from hapi_onnx.graph.decision import DECISION_OUTPUTS, with_decision
from hapi_onnx.profile.environment import environment
from hapi_onnx.profile.presets import load_preset
from hapi_onnx.profile.table import LatencyTable, PieceLatency
from hapi_onnx.profile.timing import time_calls
from hapi_onnx.runtime import BoundCall, EarlyExitModel

SAMPLE_SEED = 0
# One call per piece per round, pieces in path order (segment0, head0, segment1, ...): each piece
# runs right after the one it follows in a bundle, with the caches that leaves behind.
# How each piece is called: the way hapi_onnx.runtime calls its stages, so the per-call overhead
# measured here is the one a bundle pays (IOBinding on preallocated buffers at batch 1 on the CPU).
TIMED_CALL_BOUND = (
    "InferenceSession.run_with_iobinding (C++ entry point, as hapi_onnx.runtime calls it), "
    "inputs/outputs bound once to numpy buffers"
)
TIMED_CALL_RUN = "InferenceSession.run(output_names, feeds), numpy in/out"
RUNTIME_PREDICT = "runtime predict"
RUNTIME_STAGE = "runtime stage"
RUNTIME_NOTE = (
    "per_predict_ms: mean of hapi_onnx.runtime's batch-1 EarlyExitModel.predict on a trivial one-stage "
    "bundle minus the mean of that stage's bare bound call, the two timed back to back in their own rounds "
    "(a stream of predict calls; interleaved with large pieces the trivial predict runs cold): the "
    "runtime's own work once per predict (input check, copy into the bound input, result arrays), "
    "which no piece includes; a sample's latency is its path cost plus this"
)
DECISION_NOTE = (
    "heads and the last segment include the bundle's in-graph decision ops (hapi_onnx.graph.decision: "
    "Softmax on logits, ArgMax, ReduceMax; outputs class, confidence, probabilities), as bundle stages run them"
)


def overhead_model(opset: int = 17) -> onnx.ModelProto:
    """A trivial graph (``y = Identity(x)``, x float[N,1]): timing it gives the per-call overhead."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "overhead", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def runtime_entry_model(image: onnx.ValueInfoProto | None = None, name: str = "x",
                        shape: tuple = ("N", 1, 4, 4), opset: int = 17) -> onnx.ModelProto:
    """A trivial one-stage bundle graph: ``image -> Flatten -> Softmax -> decision ops``.

    Run through the runtime's batch-1 path and as a bare bound call, the difference is the
    runtime's own work per ``predict`` (input check, copy into the bound input, reading the
    confidence, building the result): what a bundle pays once per sample beyond its stages.
    """
    x = helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    flat = helper.make_tensor_value_info("hapi_entry_flat", TensorProto.FLOAT, ["N", "K"])
    graph = helper.make_graph([helper.make_node("Flatten", [name], ["hapi_entry_flat"])], "runtime_entry", [x], [flat])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return with_decision(model, "hapi_entry_flat", apply_softmax=True)


class RuntimeEntryCalls:
    """The runtime's batch-1 ``predict`` on a trivial one-stage bundle, and that stage's bare call.

    The bundle is made in memory by the bundle writer and opened with the runtime's public
    :meth:`~hapi_onnx.runtime.EarlyExitModel.from_contents`, so what is timed is exactly what an
    app calls.

    Args:
        preset (DevicePreset): The device preset (providers and session options).
        x (np.ndarray): One sample, shaped as the profiled model's input.
        name (str): The image input's name.
    """

    def __init__(self, preset, x: np.ndarray, name: str):
        self.x = np.ascontiguousarray(x)
        graph = runtime_entry_model(name=name, shape=x.shape)
        contents = bundle_contents([StageGraph(FINAL, name, None, graph)], [ExitChoice(FINAL)], int(x[0].size))
        self.model = EarlyExitModel.from_contents(
            contents, preset.provider_names, preset.session_options(), preset.provider_options, origin="profiler"
        )
        session = preset.create_session(contents.stage_bytes[0])
        outs = session.run(list(DECISION_OUTPUTS), {name: self.x})
        self.stage = BoundCall(session, {name: self.x}, dict(zip(DECISION_OUTPUTS, outs, strict=True)))

    def predict(self) -> None:
        self.model.predict(self.x)


def sample_input(model: onnx.ModelProto, batch_size: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """A deterministic standard-normal batch for the model's image input.

    Raises:
        HapiError: when a non-batch dimension of the input is not fixed.
    """
    spec = input_spec(model)
    rest = spec.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise HapiError(
            f"Cannot build a sample input for {spec.name!r} of shape {spec.shape}: only the batch "
            "dimension may be dynamic. Export the model with a fixed image size (C, H, W)."
        )
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, *rest)).astype(spec.dtype)


def profile_model(
    model_or_path: str | os.PathLike | onnx.ModelProto,
    device: str | os.PathLike,
    batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
    time_budget_s: float | None = None,
) -> LatencyTable:
    """Time every segment and head of an over-provisioned model on a device preset.

    Args:
        model_or_path (str | PathLike | onnx.ModelProto): The early-exit model (from ``attach``).
        device (str | PathLike): A preset name (``cpu-1t``, see ``profiles/``) or a preset file.
        batch_size (int | None): Batch size of every timed run. Defaults to the preset's first
            batch size (1 for every shipped preset).
        progress (Callable[[str], None] | None): Receives one line per step / finished piece.
        time_budget_s (float | None): Seconds of timed runs per piece, overriding the preset's.

    Returns:
        LatencyTable: Per segment and head timings, the per-call overhead, the monolithic
        model, the preset, the environment and the model fingerprint.

    Raises:
        HapiError: for an unknown device, a provider missing from the installed onnxruntime,
            a model without exits, or a bad batch size / budget.
    """
    begin = time.perf_counter()
    say = progress or (lambda line: None)
    preset, batch = _preset_and_batch(device, batch_size, time_budget_s)
    model = load_model(model_or_path)
    fixed = fixed_batch(model)
    if fixed is not None and batch != fixed:
        raise HapiError(
            f"The model's graph fixes its batch at {fixed}, so it can only be profiled at that batch size. "
            f"Got batch_size {batch} instead; profile with batch size {fixed}."
        )
    plan = _plan(model)
    k = len(plan.pieces.layout.exits)
    say(f"cut at {k} exit(s): {k + 1} segments, {k} heads; device {preset.name!r}, batch {batch}")
    sessions = {}
    for i, piece in enumerate(plan.order, 1):
        say(f"session {i}/{len(plan.order)}: {piece.name}")
        sessions[piece.name] = preset.create_session(piece.model.SerializeToString())
    x = sample_input(model, batch)
    values, feeds = _propagate(plan.pieces, plan.monolithic, sessions, x, batch)
    for pair, first, second in zip(plan.boundaries, plan.pieces.segments, plan.pieces.segments[1:], strict=False):
        feeds[pair.name], values[pair.name] = feeds[first.name], values[second.name]
    bound = batch == 1 and preset.provider_names[0] == "CPUExecutionProvider"
    results = _time_pieces(plan, sessions, feeds, values, preset, x if bound else None, progress)
    shapes = {
        p.name: {
            "inputs": [list(feeds[p.name][n].shape) for n in p.inputs],
            "outputs": [list(values[p.name][n].shape) for n in p.outputs],
        }
        for p in plan.order
    }
    env = environment(preset, list(sessions.values()))
    env["timed_call"] = TIMED_CALL_BOUND if bound else TIMED_CALL_RUN
    return _table(plan, results, preset, env, shapes, device=os.fspath(device), fingerprint=model_fingerprint(model),
                  batch=batch, wall_s=time.perf_counter() - begin)


def _preset_and_batch(device, batch_size: int | None, time_budget_s: float | None):
    """The device preset (with the time budget asked for, which the table records) and the batch size."""
    preset = load_preset(device)
    preset.check_providers()
    batch = preset.batch_sizes[0] if batch_size is None else batch_size
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise HapiError(f"batch_size must be an int >= 1. Got {batch!r} instead.")
    if time_budget_s is not None:
        if not time_budget_s > 0:
            raise HapiError(f"time_budget_s must be a number of seconds > 0. Got {time_budget_s!r} instead.")
        policy = dataclasses.replace(preset.timing, time_budget_s=float(time_budget_s))
        preset = dataclasses.replace(preset, timing=policy)
    return preset, batch


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What is timed: the cut pieces, the fused segment pairs, the monolithic model, in timing order."""

    pieces: ExitCut
    boundaries: list[Piece]
    monolithic: Piece
    order: list[Piece]  # path order (each piece right after the one it follows in a bundle), pairs, overhead, full


def _plan(model: onnx.ModelProto) -> _Plan:
    layout = ExitLayout.from_model(model)
    pieces = cut_at_exits(model, layout)
    order = []  # path order: each piece is timed right after the one it follows in a bundle
    for seg, head in zip(pieces.segments, [*pieces.heads, None], strict=True):
        order += [seg] if head is None else [seg, head]
    boundaries = fused_pairs(pieces)  # two segments fused: what cutting at each exit costs
    monolithic = full_model(model, layout)
    order += [*boundaries, Piece("overhead", overhead_model(), ["x"], ["y"]), monolithic]
    return _Plan(pieces, boundaries, monolithic, order)


def _time_pieces(plan: _Plan, sessions: dict, feeds: dict, values: dict, preset, x: np.ndarray | None,
                 progress: Callable[[str], None] | None) -> dict:
    """Timing results by piece name; with ``x`` (batch 1 on the CPU), pieces are bound calls, as the
    runtime calls its stages, and the runtime's own work per predict is timed too."""
    say = progress or (lambda line: None)
    policy = preset.timing
    names = [p.name for p in plan.order]
    # Bound calls own the buffers their bindings point into: keep them alive while timing.
    owners = [BoundCall(sessions[p.name], feeds[p.name], values[p.name]) for p in plan.order] if x is not None else []
    calls = [o.run for o in owners] or [
        functools.partial(sessions[p.name].run, list(p.outputs), feeds[p.name]) for p in plan.order
    ]
    entry = RuntimeEntryCalls(preset, x, plan.pieces.layout.input) if x is not None else None
    busy = _busy_warning()
    if busy:
        say(busy)
    say(
        f"timing {len(calls)} pieces in lockstep rounds (warm-up {policy.warmup_runs} runs/{policy.warmup_s} s, "
        f"{policy.min_runs}-{policy.max_runs} runs, target +-{policy.target_rel_precision:.1%}, "
        f"budget {policy.time_budget_s} s per piece, pooled)"
    )
    # The pieces (and the trivial call) in path-order rounds, as a stream of predict calls runs
    # them; the monolithic model in a stream of its own: in the same rounds its separate copy of
    # every weight pushed the pieces out of the caches and read ~10% onto each of them.
    results = dict(zip(names[:-1], time_calls(calls[:-1], policy, names[:-1], progress), strict=True))
    results[names[-1]] = time_calls(calls[-1:], policy, names[-1:], progress)[0]
    if entry is not None:
        # Timed on their own, back to back: interleaved with the large pieces, the Python of a
        # trivial predict runs cold and reads ~4x its cost in a real stream of predict calls.
        runtime_names = [RUNTIME_PREDICT, RUNTIME_STAGE]
        runtime_calls = [entry.predict, entry.stage.run]
        results.update(
            zip(runtime_names, time_calls(runtime_calls, policy, runtime_names, progress), strict=True)
        )
    return results


def _table(plan: _Plan, results: dict, preset, env: dict, shapes: dict, device: str, fingerprint: str,
           batch: int, wall_s: float) -> LatencyTable:
    """The latency table of the timing results (the runtime's own work apart, when it was timed)."""

    def latency(piece: Piece) -> PieceLatency:
        return PieceLatency(piece.name, list(piece.inputs), list(piece.outputs), results[piece.name].stats)

    runtime = None
    if RUNTIME_PREDICT in results:
        predict, stage = results.pop(RUNTIME_PREDICT).stats, results.pop(RUNTIME_STAGE).stats
        runtime = {
            "per_predict_ms": max(predict.stat("mean") - stage.stat("mean"), 0.0),
            "predict": dataclasses.asdict(predict),
            "stage": dataclasses.asdict(stage),
            "how": RUNTIME_NOTE,
        }
    timing = {
        name: {
            "rel_precision_p50": _finite(r.rel_precision),
            "rel_precision_mean": _finite(r.mean_rel_precision),
            "stop": r.stop,
            "timed_s": r.timed_s,
        }
        for name, r in results.items()
    }
    return LatencyTable(
        device=device,
        preset=preset.to_dict(),
        environment=env,
        model_fingerprint=fingerprint,
        batch_size=batch,
        exit_names=plan.pieces.layout.exit_names,
        segments=[latency(p) for p in plan.pieces.segments],
        heads=[latency(p) for p in plan.pieces.heads],
        boundaries=[latency(p) for p in plan.boundaries],
        overhead=results["overhead"].stats,
        monolithic=results["monolithic"].stats,
        extra={
            "shapes": shapes,
            "timing": {"policy": dataclasses.asdict(preset.timing), "pieces": timing},
            "sample_input": f"standard normal, seed {SAMPLE_SEED}",
            "decision_ops": DECISION_NOTE,
            "runtime": runtime,
            "profile_wall_s": round(wall_s, 3),
        },
    )


def _propagate(pieces: ExitCut, mono: Piece, sessions: dict, x: np.ndarray, batch: int):
    """Run the sample through the segments; return every piece's outputs and its feeds."""
    values: dict[str, dict[str, np.ndarray]] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    current = {pieces.layout.input: x}
    for k, seg in enumerate(pieces.segments):
        feeds[seg.name] = {seg.inputs[0]: current[seg.inputs[0]]}
        out = sessions[seg.name].run(seg.outputs, feeds[seg.name])
        values[seg.name] = {n: np.ascontiguousarray(v) for n, v in zip(seg.outputs, out, strict=True)}
        current = values[seg.name]
        if k < len(pieces.heads):
            head = pieces.heads[k]
            feeds[head.name] = {head.inputs[0]: current[head.inputs[0]]}
            out = sessions[head.name].run(head.outputs, feeds[head.name])
            values[head.name] = dict(zip(head.outputs, out, strict=True))
    feeds[mono.name] = {mono.inputs[0]: x}
    values[mono.name] = {mono.outputs[0]: sessions[mono.name].run(mono.outputs, feeds[mono.name])[0]}
    feeds["overhead"] = {"x": np.zeros((batch, 1), np.float32)}
    values["overhead"] = {"y": feeds["overhead"]["x"]}
    return values, feeds


def _busy_warning() -> str | None:
    """A warning line when other processes already keep the usable CPUs busy, else None."""
    try:
        load = os.getloadavg()[0]
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if load < cpus:
        return None
    return (
        f"warning: load average {load:.1f} on {cpus} usable CPU(s): other processes compete for the CPU, "
        "so timings (means and tails most) will be noisy; profile on an idle device for a reliable table"
    )


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


__all__ = [
    "RuntimeEntryCalls",
    "overhead_model",
    "runtime_entry_model",
    "profile_model",
    "sample_input",
]
