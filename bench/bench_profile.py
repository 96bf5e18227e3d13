"""Does the profiler's table add up, and does it repeat? Measured side by side in one run on cpu-1t.

    python bench/bench_profile.py [EE.onnx] [--backbone examples/mnist/model.onnx] [--device cpu-1t]

1. Profiles the early-exit model twice back to back (``profile_model``) and prints the wall time
   of each run and, per piece, how well the two runs' p50 agree (target: within 5%).
2. Between the two runs, times reference paths with the same timing loop, interleaved:
   - the backbone alone in one session (input -> final output),
   - the whole over-provisioned model (all heads) in one session,
   - the profiled pieces themselves called one after another in path order (segment0, head0,
     segment1, ...: one session call per piece), which tests the additive model alone,
   - a staged bundle keeping every exit and never exiting early (hapi_onnx.runtime: one session
     call per stage = segment + head + in-graph decision, plus the runtime's Python per stage),
   and compares each with the prediction from the first table (sum of per-piece costs with the
   per-call overhead removed, plus one overhead per session call of that path), as a ratio
   (target: within +-5%). Means are summed (a mean of a sum is the sum of means).

Without EE.onnx, heads (GlobalAveragePool -> Flatten -> Gemm -> Softmax, random weights) are
grafted at every candidate exit of the backbone, as ``attach`` would place them.
"""

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.errors import HapiError
from hapi_onnx.exits.layout import ExitLayout, ExitSpec
from hapi_onnx.graph import candidate_exits, extract_segment, input_spec, load_model, model_fingerprint
from hapi_onnx.profile import load_preset, profile_model
from hapi_onnx.profile.profile import BoundCall, sample_input, split_at_exits
from hapi_onnx.profile.timing import time_calls

DEFAULT_BACKBONE = Path(__file__).resolve().parent.parent / "examples" / "mnist" / "model.onnx"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ee_model", nargs="?", help="Over-provisioned model (from attach). "
                        "Default: random heads grafted on --backbone.")
    parser.add_argument("--backbone", default=str(DEFAULT_BACKBONE), help="Backbone used without EE_MODEL.")
    parser.add_argument("--device", default="cpu-1t", help="Device preset (default cpu-1t).")
    parser.add_argument("--time-budget", type=float, default=None, help="Per-piece budget override (s).")
    return parser.parse_args(argv)


def graft_random_heads(backbone: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The backbone plus a random GAP->Flatten->Gemm->Softmax head at every candidate exit."""
    model = load_model(backbone)
    final = model.graph.output[0]
    num_classes = final.type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(seed)
    exits = []
    for k, cand in enumerate(candidate_exits(model)):
        channels = cand.shape[1]
        w = numpy_helper.from_array(rng.standard_normal((num_classes, channels)).astype(np.float32) * 0.1,
                                    f"bench_head{k}.w")
        b = numpy_helper.from_array(np.zeros(num_classes, np.float32), f"bench_head{k}.b")
        model.graph.initializer.extend([w, b])
        p = f"bench_head{k}"
        model.graph.node.extend([
            helper.make_node("GlobalAveragePool", [cand.tensor], [f"{p}.gap"]),
            helper.make_node("Flatten", [f"{p}.gap"], [f"{p}.flat"]),
            helper.make_node("Gemm", [f"{p}.flat", w.name, b.name], [f"{p}.logits"], transB=1),
            helper.make_node("Softmax", [f"{p}.logits"], [f"{p}.prob"], axis=1),
        ])
        prob = helper.make_tensor_value_info(f"{p}.prob", TensorProto.FLOAT, ["N", num_classes])
        model.graph.output.append(prob)
        exits.append(ExitSpec(f"exit{k}", cand.tensor, f"{p}.prob"))
    ExitLayout(input_spec(model).name, final.name, False, num_classes, exits,
               model_fingerprint(load_model(backbone))).to_model(model)
    return load_model(model)


def measure_paths(ee: onnx.ModelProto, preset, policy, workdir: Path) -> dict[str, tuple[float, float, int]]:
    """Mean and p50 (ms) and the number of session calls of each reference path, timed together."""
    from hapi_onnx.bundle import write_bundle
    from hapi_onnx.runtime import EarlyExitModel

    layout = ExitLayout.from_model(ee)
    x = sample_input(ee, 1)
    backbone = extract_segment(ee, [layout.input], [layout.final_output])
    outputs = [layout.final_output] + [e.output for e in layout.exits]
    calls, names, n_calls = [], [], {}
    for name, model in [("backbone, one session", backbone), ("all heads, one session", ee)]:
        session = preset.create_session(model.SerializeToString())
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, {layout.input: x}), strict=True))
        calls.append(BoundCall(session, {layout.input: x}, {n: values[n] for n in outputs if n in values}))
        names.append(name)
        n_calls[name] = 1
    pieces = split_at_exits(ee)
    chain = []
    value = x
    for seg, head in zip(pieces.segments, [*pieces.heads, None], strict=True):
        for piece in [seg] if head is None else [seg, head]:
            session = preset.create_session(piece.model.SerializeToString())
            out = session.run(piece.outputs, {piece.inputs[0]: value})[0]
            chain.append(BoundCall(session, {piece.inputs[0]: value}, {piece.outputs[0]: out}))
            if piece is seg:
                value = out  # the head and the next segment read this segment's output

    def run_chain():
        for call in chain:
            call()

    name = f"chain of the profiled pieces, {len(chain)} calls"
    calls.append(run_chain)
    names.append(name)
    n_calls[name] = len(chain)
    bundle_path = write_bundle(ee, [e.name for e in layout.exits], [1.0] * len(layout.exits),
                               workdir / "bench.hapi")
    bundle = EarlyExitModel.load(bundle_path, providers=preset.provider_names,
                                 session_options=preset.session_options(),
                                 provider_options=preset.provider_options).force_full_path()
    name = f"staged bundle, all {len(layout.exits)} exits kept, never exiting"
    calls.append(lambda: bundle.predict(x))
    names.append(name)
    n_calls[name] = len(layout.exits) + 1
    results = time_calls(calls, policy, names)
    return {n: (r.stats.mean_ms, r.stats.p50_ms, n_calls[n]) for n, r in zip(names, results, strict=True)}


def predicted(table, path: str, n_calls: int, stat: str) -> float:
    segs = sum(table.segment_costs(stat))
    with_heads = "heads" in path or "bundle" in path or "chain" in path
    heads = sum(table.head_costs(stat)) if with_heads else 0.0
    return segs + heads + n_calls * table.overhead.stat(stat)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    preset = load_preset(args.device)
    if args.ee_model:
        ee = load_model(args.ee_model)
        source = f"{args.ee_model} (given)"
    else:
        if not Path(args.backbone).is_file():
            print(f"error: no EE model given and backbone {args.backbone} not found; train it with "
                  "`python examples/mnist/train.py` or pass EE.onnx / --backbone.", file=sys.stderr)
            return 2
        ee = graft_random_heads(onnx.load(args.backbone))
        source = f"{args.backbone} + random heads at every candidate exit (built here)"
    layout = ExitLayout.from_model(ee)
    print(f"model: {source}: {len(layout.exits)} intermediate exits; device {args.device!r}, batch 1")

    with tempfile.TemporaryDirectory() as tmp:
        ee_path = Path(tmp) / "ee.onnx"
        onnx.save(ee, str(ee_path))
        t0 = time.perf_counter()
        first = profile_model(ee_path, args.device, time_budget_s=args.time_budget)
        wall1 = time.perf_counter() - t0
        policy = preset.timing
        if args.time_budget is not None:
            policy = dataclasses.replace(policy, time_budget_s=args.time_budget)
        paths = measure_paths(load_model(ee_path), preset, policy, Path(tmp))
        t0 = time.perf_counter()
        second = profile_model(ee_path, args.device, time_budget_s=args.time_budget)
        wall2 = time.perf_counter() - t0

    env = first.environment
    print(f"environment: onnxruntime {env['onnxruntime']}, {env['cpu_model']}, {env['cpus_usable']} cpus, "
          f"load average {env['load_average']}, call: {env['timed_call']}")
    print(f"\nprofiling wall time: run 1 {wall1:.1f} s, run 2 {wall2:.1f} s (target < 60 s)")
    print(f"per-call overhead (trivial graph): run 1 mean {first.overhead.mean_ms * 1000:.1f} us, "
          f"p50 {first.overhead.p50_ms * 1000:.1f} us; run 2 p50 {second.overhead.p50_ms * 1000:.1f} us")

    print("\nrepeatability, p50 per piece (ms), run 1 vs run 2 (target |diff| <= 5%):")
    diffs = []
    pieces1 = first.segments + first.heads
    pieces2 = {p.name: p for p in second.segments + second.heads}
    for p in pieces1:
        a, b = p.stats.p50_ms, pieces2[p.name].stats.p50_ms
        diff = (b - a) / a
        diffs.append(abs(diff))
        flag = "" if abs(diff) <= 0.05 else "  <-- over 5%"
        print(f"  {p.name:<10} {a:8.4f} {b:8.4f}  {diff:+6.1%}{flag}")
    seg_diffs = diffs[: len(first.segments)]
    print(f"  segments within 5%: {sum(d <= 0.05 for d in seg_diffs)}/{len(seg_diffs)}, "
          f"median |diff| {statistics.median(seg_diffs):.1%}, max {max(seg_diffs):.1%}; "
          f"heads within 5%: {sum(d <= 0.05 for d in diffs[len(seg_diffs):])}/{len(diffs) - len(seg_diffs)}")

    print("\npaths: predicted from table 1 (sum of piece costs, overhead removed, + calls x overhead) "
          "vs measured between the two runs (target ratio 0.95-1.05):")
    k = len(first.segments)
    for name, (mean_ms, p50_ms, n_calls) in paths.items():
        heads = "heads" in name or "bundle" in name or "chain" in name
        what = f"{k} segments" + (f" + {len(first.heads)} heads" if heads else "")
        pred_mean = predicted(first, name, n_calls, "mean")
        pred_p50 = predicted(first, name, n_calls, "p50")
        print(f"  {name}:\n    sum of {what} + {n_calls} x overhead: predicted mean {pred_mean:.4f} ms, "
              f"measured {mean_ms:.4f} ms, ratio {pred_mean / mean_ms:.3f}; "
              f"p50 {pred_p50:.4f} / {p50_ms:.4f} = {pred_p50 / p50_ms:.3f}")
    mono = first.monolithic
    print(f"  (table's own monolithic backbone: mean {mono.mean_ms:.4f} ms, p50 {mono.p50_ms:.4f} ms)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HapiError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
