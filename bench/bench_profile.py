"""Does the profiler's table add up, and does it repeat? Measured side by side in one run.

    python bench/bench_profile.py [EE.onnx] [--backbone examples/mnist/model.onnx] [--device cpu-1t]

1. Repeatability: ``profile_model`` twice back to back; the wall time of each run and, per
   piece, how well the two runs' p50 agree (target: within 5%).
2. Additivity: one interleaved timing (the profiler's own loop and mode: one call per entry per
   round, pieces in path order)
   of every piece (segments, heads, the trivial overhead graph, called as the profiler calls
   them) together with reference paths:
   - the backbone alone in one session (input -> final output),
   - the whole over-provisioned model (all heads) in one session,
   - the pieces called one after another in path order (segment0, head0, segment1, ...),
   - a staged bundle keeping every exit and never exiting early (hapi_onnx.runtime: one session
     call per stage = segment + head + in-graph decision, plus the runtime's Python per stage).
   The heads and the last segment are timed with the bundle's decision ops (as the profiler
   times them), so what the bundle pays beyond the table is the runtime's Python and the
   difference between one fused stage session and its separately timed pieces.
   Each reference is compared with its prediction from the pieces: sum of the piece costs with
   the per-call overhead removed, plus one overhead per session call of that path (the search's
   cost model), as a ratio predicted / measured (target 0.95-1.05). Means are what add up (the
   mean of a sum is the sum of the means); p50s are shown too.

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

from hapi_onnx.choice import choices_from
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.cut import cut_at_exits, full_model
from hapi_onnx.exits.layout import ExitLayout, ExitSpec
from hapi_onnx.graph import candidate_exits, input_spec, load_model, model_fingerprint
from hapi_onnx.profile import load_preset, profile_model
from hapi_onnx.profile.profile import overhead_model, sample_input
from hapi_onnx.profile.timing import time_calls
from hapi_onnx.runtime import BoundCall

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


@dataclasses.dataclass
class Entry:
    name: str
    call: object
    calls_per_run: int = 1  # session calls one run of this entry makes
    pieces: tuple[str, ...] = ()  # pieces whose costs predict it (references only)
    owner: object = None  # keeps the buffers a bound call points into alive


def bound_entry(name: str, call: BoundCall, calls_per_run: int = 1, pieces: tuple[str, ...] = ()) -> Entry:
    """An entry timing ``call`` the way the profiler does: its ``run``, no extra Python frame."""
    return Entry(name, call.run, calls_per_run, pieces, owner=call)


def interleaved_entries(ee: onnx.ModelProto, preset, workdir: Path) -> list[Entry]:
    """Pieces in path order, the overhead graph, then the reference paths, all ready to call."""
    from hapi_onnx.bundle import write_bundle
    from hapi_onnx.runtime import EarlyExitModel

    layout = ExitLayout.from_model(ee)
    x = sample_input(ee, 1)
    pieces = cut_at_exits(ee, layout)
    entries, value = [], x
    for seg, head in zip(pieces.segments, [*pieces.heads, None], strict=True):
        for piece in [seg] if head is None else [seg, head]:
            session = preset.create_session(piece.model.SerializeToString())
            outs = dict(zip(piece.outputs, session.run(piece.outputs, {piece.inputs[0]: value}), strict=True))
            entries.append(bound_entry(piece.name, BoundCall(session, {piece.inputs[0]: value}, outs)))
            if piece is seg:
                value = outs[piece.outputs[0]]  # the head and the next segment read this segment's output
    chain = [e.call for e in entries]
    seg_names = tuple(p.name for p in pieces.segments)
    all_names = tuple(e.name for e in entries)
    one = np.zeros((1, 1), np.float32)
    entries.append(bound_entry("overhead", BoundCall(preset.create_session(overhead_model().SerializeToString()),
                                                     {"x": one}, {"y": one})))

    outputs = [layout.final_output] + [e.output for e in layout.exits]
    for name, model, names in [("backbone, one session", full_model(ee, layout).model,
                                seg_names),
                               ("all heads, one session", ee, all_names)]:
        session = preset.create_session(model.SerializeToString())
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {layout.input: x}),
                          strict=True))
        call = BoundCall(session, {layout.input: x}, {n: values[n] for n in outputs if n in values})
        entries.append(bound_entry(name, call, 1, names))

    def run_chain():
        for call in chain:
            call()

    entries.append(Entry(f"pieces called in path order ({len(chain)} calls)", run_chain, len(chain), all_names))
    every_exit = choices_from([e.name for e in layout.exits], [1.0] * len(layout.exits))
    bundle_path = write_bundle(ee, every_exit, workdir / "b.hapi")
    bundle = EarlyExitModel.load(bundle_path, providers=preset.provider_names,
                                 session_options=preset.session_options(),
                                 provider_options=preset.provider_options).force_full_path()
    stages = len(layout.exits) + 1
    entries.append(Entry(f"staged bundle, never exiting ({stages} stages)", lambda: bundle.predict(x), stages,
                         all_names))
    return entries


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    preset = load_preset(args.device)
    if args.time_budget is not None:
        preset = dataclasses.replace(preset, timing=dataclasses.replace(preset.timing,
                                                                        time_budget_s=args.time_budget))
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
        t0 = time.perf_counter()
        second = profile_model(ee_path, args.device, time_budget_s=args.time_budget)
        wall2 = time.perf_counter() - t0
        entries = interleaved_entries(load_model(ee_path), preset, Path(tmp))
        results = time_calls([e.call for e in entries], preset.timing, [e.name for e in entries])
    stats = {e.name: r.stats for e, r in zip(entries, results, strict=True)}

    env = first.environment
    print(f"environment: onnxruntime {env['onnxruntime']}, {env['cpu_model']}, {env['cpus_usable']} cpus, "
          f"load average {env['load_average']}; pieces called with {env['timed_call']}")

    print(f"\n1. repeatability: profile_model twice; wall time run 1 {wall1:.1f} s, run 2 {wall2:.1f} s "
          "(target < 60 s)")
    print("   p50 per piece (ms), run 1 vs run 2 (target |diff| <= 5%):")
    diffs = {}
    second_pieces = {p.name: p for p in second.segments + second.heads}
    for p in first.segments + first.heads:
        a, b = p.stats.p50_ms, second_pieces[p.name].stats.p50_ms
        diffs[p.name] = (b - a) / a
        flag = "" if abs(diffs[p.name]) <= 0.05 else "  <-- over 5%"
        print(f"   {p.name:<10} {a:8.4f} {b:8.4f}  {diffs[p.name]:+6.1%}{flag}")
    a, b = first.overhead.p50_ms, second.overhead.p50_ms
    print(f"   {'overhead':<10} {a:8.4f} {b:8.4f}  {(b - a) / a:+6.1%}")
    seg = [abs(d) for n, d in diffs.items() if n.startswith("segment")]
    head = [abs(d) for n, d in diffs.items() if n.startswith("head")]
    print(f"   segments within 5%: {sum(d <= 0.05 for d in seg)}/{len(seg)} (median |diff| "
          f"{statistics.median(seg):.1%}, max {max(seg):.1%}); heads within 5%: "
          f"{sum(d <= 0.05 for d in head)}/{len(head)}")

    over = stats["overhead"]
    ends = sorted({r.stop for r in results})
    print(f"\n2. additivity, one interleaved timing of {len(entries)} entries, {over.n} rounds "
          f"(ended by: {', '.join(ends)}); per-call overhead: mean {over.mean_ms * 1e3:.1f} us, "
          f"p50 {over.p50_ms * 1e3:.1f} us")
    print("   predicted = sum(piece - overhead) + calls x overhead, from the pieces timed alongside;"
          " ratio = predicted / measured (target 0.95-1.05)")
    for e in entries:
        if not e.pieces:
            continue
        m = stats[e.name]
        pred = {s: sum(max(stats[n].stat(s) - over.stat(s), 0.0) for n in e.pieces) + e.calls_per_run * over.stat(s)
                for s in ("mean", "p50")}
        k_seg = sum(n.startswith("segment") for n in e.pieces)
        k_head = len(e.pieces) - k_seg
        print(f"   {e.name}: {k_seg} segments + {k_head} heads + {e.calls_per_run} x overhead")
        print(f"      mean: predicted {pred['mean']:.4f} ms, measured {m.mean_ms:.4f} ms, "
              f"ratio {pred['mean'] / m.mean_ms:.3f}   | p50: {pred['p50']:.4f} / {m.p50_ms:.4f} = "
              f"{pred['p50'] / m.p50_ms:.3f}")
        if e.name.startswith("staged"):
            extra = (m.mean_ms - pred["mean"]) / e.calls_per_run * 1e3
            print(f"      not in the table: {extra:+.1f} us per stage (runtime Python, one fused session per "
                  "stage vs its pieces; the decision ops are in the heads' and last segment's timings)")
    print(f"   for reference, profile_model run 1: backbone monolithic mean {first.monolithic.mean_ms:.4f} ms, "
          f"sum of segments + 1 overhead {sum(first.segment_costs('mean')) + first.overhead.mean_ms:.4f} ms")
    if first.boundaries:
        fused = sum(first.segment_costs("mean")) - sum(first.cut_costs("mean")) + first.overhead.mean_ms
        print(f"   the table's cut costs (fused pairs, charged to the exits a design keeps): "
              f"{sum(first.cut_costs('mean')) * 1e3:.1f} us over {len(first.boundaries)} cuts; segments - cuts "
              f"+ 1 overhead {fused:.4f} ms = {fused / first.monolithic.mean_ms:.3f} x the monolithic backbone")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HapiError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
