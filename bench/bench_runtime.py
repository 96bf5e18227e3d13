"""Runtime benchmark: the bundle against the monolithic model, measured side by side in one run.

Prints, on one device preset (default ``cpu-1t``):

  (0) the fixed cost of one ONNX Runtime call: ``run()`` with numpy feeds, ``run_with_iobinding``
      on pre-bound buffers (what the runtime's batch-1 path does), ``run_with_ort_values``;
  (a) the bundle forced down its full path (every stage, every kept head) vs the monolithic
      model, target <= 1.05; split into what the table predicts for that path (kept heads'
      compute + one call overhead per stage) and what it does not see;
  (b) the design's accuracy and mean-latency speed-up vs the full model, on held-out data;
  (c) the design's predicted mean, p90 and p99 latency (from the manifest, i.e. on the calibration
      split's exit mix) vs the measured ones; and, with the latency table (``--latency``, default
      next to ``--ee``), the latency model on the exits the test samples really took (mean from
      the path costs, percentiles with the backbone's jitter,
      :mod:`hapi_onnx.search.latency`): the model's own error, free of the exit mix shifting
      between calibration and test; and the design's own recorded positions (timed as stages where
      the search timed them, ``source``) on those exits: what ``evaluate`` prints as "on these exits";
  (d) throughput at batch ``--batch`` with compaction vs the full model;
  (e) with a calibration split (``--calib``, default ``calib.npz`` next to ``--data``): the mean the
      bundle's own stages would predict, each exit's latency measured as a stream of predicts on the
      calibration split and applied to the test split's exits (a measured alternative to the pieces).

Usage::

    python bench/bench_runtime.py --ee work/demo/ee.onnx --data work/demo/data/test.npz \\
        (--bundle work/demo/model.hapi | --design work/demo/design.json
         | --exits exit3,exit6 --thresholds 0.95,0.9)

Without arguments it looks for the demo's work directory (``work/demo``).
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from
from hapi_onnx.data import load_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.evaluate import full_model_bytes, measure
from hapi_onnx.profile.presets import load_preset
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.runtime.session import create_session, quiet_options
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.trace import Trace


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ee", default="work/demo/ee.onnx", help="Over-provisioned model (attach's output).")
    parser.add_argument("--data", default="work/demo/data/test.npz", help="Held-out labelled .npz.")
    parser.add_argument("--bundle", default=None, help="An existing bundle to measure.")
    parser.add_argument("--design", default=None, help="design.json to bundle.")
    parser.add_argument("--exits", default=None, help="Comma-separated exits to bundle (with --thresholds).")
    parser.add_argument("--thresholds", default=None, help="Comma-separated thresholds for --exits.")
    parser.add_argument("--latency", default=None, help="Latency table (default: latency.json next to --ee).")
    parser.add_argument("--device", default="cpu-1t", help="Device preset. Default: cpu-1t.")
    parser.add_argument("--batch", type=int, default=64, help="Batch size for (d). Default: 64.")
    parser.add_argument("--samples", type=int, default=1000, help="Samples to use (first N). Default: 1000.")
    parser.add_argument("--calib", default=None, help="Calibration split for (e) (default: calib.npz next to --data).")
    args = parser.parse_args(argv)
    if args.bundle is None and args.design is None and args.exits is None:
        default = Path(args.ee).with_name("model.hapi")
        if default.exists():
            args.bundle = str(default)
        elif Path(args.ee).with_name("design.json").exists():
            args.design = str(Path(args.ee).with_name("design.json"))
        else:
            parser.error("give --bundle, --design, or --exits with --thresholds")
    return args


def call_overhead_us(intra_threads: int = 1, rounds: int = 9, calls: int = 2000) -> dict[str, float]:
    """Median per-call time (us) of a trivial 3-output graph with each way of calling ORT."""
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 7, 7])
    nodes = [
        helper.make_node("Relu", ["x"], ["c"]),
        helper.make_node("ReduceMax", ["c"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("ArgMax", ["c"], ["k"], axis=1, keepdims=0),
    ]
    outs = [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 16, 7, 7]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("k", TensorProto.INT64, ["N", 7, 7])]
    model = helper.make_model(helper.make_graph(nodes, "overhead", [x_info], outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    session = create_session(model, quiet_options(threads=intra_threads))
    x = np.random.default_rng(0).random((1, 16, 7, 7), dtype=np.float32)
    bufs = [np.empty_like(a) for a in session.run(["c", "m", "k"], {"x": x})]
    xin = x.copy()
    binding = session.io_binding()
    binding.bind_input("x", "cpu", 0, xin.dtype, list(xin.shape), xin.ctypes.data)
    for name, buf in zip(["c", "m", "k"], bufs, strict=True):
        binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
    ways = {
        "run (numpy feeds)": lambda: session.run(["c", "m", "k"], {"x": x}),
        "run_with_iobinding (pre-bound)": lambda: (np.copyto(xin, x), session.run_with_iobinding(binding)),
        "run_with_ort_values": lambda: session.run_with_ort_values(
            ["c", "m", "k"], {"x": ort.OrtValue.ortvalue_from_numpy(x)}),
    }
    samples = {name: [] for name in ways}
    for _ in range(rounds):  # interleaved rounds: every way sees the same machine state
        for name, call in ways.items():
            for _ in range(100):
                call()
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                call()
            samples[name].append((time.perf_counter_ns() - t0) / calls / 1e3)
    return {name: float(np.median(v)) for name, v in samples.items()}


def path_costs_ms(table: LatencyTable, exit_names: Sequence[str]) -> list[float]:
    """The table's mean cost of leaving at each stage of a bundle keeping ``exit_names`` (the runtime's
    per-predict work excluded): the search's own cost model, :meth:`SearchProblem.position_costs`."""
    index = {name: k for k, name in enumerate(table.exit_names)}
    kept = [index[name] for name in exit_names if name != "final"]
    runtime = (table.extra.get("runtime") or {}).get("per_predict_ms") or 0.0
    problem = SearchProblem.from_artifacts(_trace_for(table), table)
    return [ns / 1e6 - runtime for ns in problem.position_costs(kept)]


def _trace_for(table: LatencyTable) -> Trace:
    """A one-sample trace of ``table``'s model: what :class:`SearchProblem` needs to read the costs."""
    k = len(table.exit_names)
    return Trace(exit_names=list(table.exit_names), tensors=list(table.exit_names), labels=np.zeros(1, np.int64),
                 pred=np.zeros((k, 1), np.int64), conf=np.ones((k, 1), np.float32), num_classes=2,
                 model_fingerprint=table.model_fingerprint)


def per_exit_latency_ms(model: EarlyExitModel, x: np.ndarray, warmup: int = 20) -> dict[int, tuple[float, int]]:
    """Mean batch-1 ``predict`` time per exit taken (ms) and the sample count, warm-up excluded."""
    clock = time.perf_counter_ns
    for i in range(min(warmup, len(x))):
        model.predict(x[i : i + 1])
    times: dict[int, list[int]] = {}
    for i in range(len(x)):
        t0 = clock()
        pred = model.predict(x[i : i + 1])
        times.setdefault(int(pred.exit_index[0]), []).append(clock() - t0)
    return {j: (float(np.mean(v)) / 1e6, len(v)) for j, v in sorted(times.items())}


def stage_measured(model: EarlyExitModel, calib, report, costs: list[float] | None) -> None:
    """(e) what measuring the bundle's own stages would predict: each exit's mean latency measured in a
    stream of the bundle's predicts on the calibration split (the runtime's discipline, not the
    profiler's pieces), applied to the test split's own exits; an exit no calibration sample took
    falls back to the table."""
    calib_x = calib.x[:2000]
    per_exit = per_exit_latency_ms(model, calib_x)
    counts = np.asarray(report.exit_counts, dtype=np.float64)
    means = [per_exit[j][0] if j in per_exit else (costs[j] if costs is not None else np.nan)
             for j in range(len(counts))]
    predicted = float(counts @ np.asarray(means) / counts.sum())
    measured = report.latency.mean_ms
    print(f"(e) stages measured as a stream on the calibration split ({len(calib_x)} samples), applied to the test "
          f"split's own exits: predicted mean {predicted:.3f} ms, measured {measured:.3f} ms "
          f"({100 * (measured / predicted - 1):+.1f}%)")


def resolve_bundle(args: argparse.Namespace, scratch: Path) -> Path:
    if args.bundle:
        return Path(args.bundle)
    if args.design:
        from hapi_onnx.bundle import bundle_from_design  # lands with hapi_onnx.design
        from hapi_onnx.design import Design

        return bundle_from_design(args.ee, Design.load(args.design), scratch / "model.hapi")
    exits = [e for e in args.exits.split(",") if e]
    thresholds = [float(t) for t in (args.thresholds or "").split(",") if t]
    return write_bundle(args.ee, choices_from(exits, thresholds), scratch / "model.hapi")


def main(argv=None) -> None:
    args = parse_arguments(argv)
    print("(0) one ORT call on a trivial graph, median us per call (1 thread):")
    for name, us in call_overhead_us().items():
        print(f"      {name:<32} {us:7.1f} us")

    data = load_dataset(args.data)
    if args.samples and len(data) > args.samples:
        data = data.subset(np.arange(args.samples))
    preset = load_preset(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = resolve_bundle(args, Path(scratch))
        model = EarlyExitModel.load(bundle, providers=preset.provider_names,
                                    session_options=preset.session_options(),
                                    provider_options=preset.provider_options)
    full = preset.create_session(full_model_bytes(args.ee))
    print(f"bundle: {' -> '.join(model.exit_names)}, thresholds {list(model.thresholds)}; "
          f"device {preset.name}; {len(data)} samples")

    latency_path = Path(args.latency) if args.latency else Path(args.ee).with_name("latency.json")
    table = LatencyTable.load(latency_path) if latency_path.is_file() else None
    costs = path_costs_ms(table, model.exit_names) if table is not None else None

    forced = measure(model.force_full_path(), data, full, str(bundle), preset.name)
    ratio = forced.latency.mean_ms / forced.full_latency.mean_ms
    p50 = forced.latency.p50_ms / forced.full_latency.p50_ms
    print(f"(a) full path vs monolithic: {forced.latency.mean_ms:.3f} ms vs "
          f"{forced.full_latency.mean_ms:.3f} ms mean -> ratio {ratio:.3f} "
          f"(p50 ratio {p50:.3f}; target <= 1.05) "
          f"[{'OK' if ratio <= 1.05 else 'ABOVE TARGET'}]")
    if table is not None:
        heads = costs[-1] - sum(table.segment_costs("mean")) - model.num_stages * table.overhead.mean_ms
        extra_calls = (model.num_stages - 1) * table.overhead.mean_ms
        unseen = forced.latency.mean_ms - forced.full_latency.mean_ms - heads - extra_calls
        print(f"    breakdown (table {latency_path.name}): full path predicted {costs[-1]:.3f} ms; vs monolithic "
              f"+{heads * 1e3:.0f} us kept heads' compute and cuts ({model.num_stages - 1} exits, decision ops incl.), "
              f"+{extra_calls * 1e3:.0f} us {model.num_stages - 1} extra session calls, "
              f"{unseen * 1e3:+.0f} us not in the table ({unseen * 1e3 / model.num_stages:+.1f} us per stage)")
        floor = (forced.full_latency.mean_ms + heads) / forced.full_latency.mean_ms
        print(f"    monolithic + the kept heads' compute alone would be x{floor:.3f}: "
              f"the rest (x{forced.latency.mean_ms / (forced.full_latency.mean_ms + heads):.3f}) is the price "
              "of staging")
    agree = forced.accuracy == forced.full_accuracy
    print(f"    full-path accuracy {forced.accuracy:.4f} vs full model {forced.full_accuracy:.4f} "
          f"({'identical' if agree else 'DIFFERENT'})")

    report = measure(model, data, full, str(bundle), preset.name, batch_size=args.batch)
    for line in report.lines():
        print("   " + line)
    print(f"(b) accuracy {report.accuracy:.4f} vs full {report.full_accuracy:.4f} "
          f"(drop {100 * (report.full_accuracy - report.accuracy):+.2f} pts); "
          f"mean speed-up x{report.speedup:.2f}, "
          f"p50 x{report.full_latency.p50_ms / report.latency.p50_ms:.2f}")
    if report.predicted_mean_ms is not None:
        print("(c) design's prediction (calibration split's exit mix) vs measured on the test split:")
        for stat in ("mean", "p90", "p99"):
            predicted = report.predicted_ms(stat)
            if predicted is not None:
                measured = report.latency.stat(stat)
                print(f"      {stat:<4} predicted {predicted:.3f} ms, measured {measured:.3f} ms "
                      f"(measured/predicted {measured / predicted:.3f})")
        if report.predicted_on_data is not None:
            positions = (model.manifest.design or {}).get("predicted", {}).get("positions") or []
            sources = ", ".join(f"{p['exit']} {p.get('source', '?')}" for p in positions)
            print(f"    the design's own positions ({sources}) on the test split's own exits:")
            for stat in ("mean", "p90", "p99"):
                predicted = report.predicted_ms(stat, on_data=True)
                measured = report.latency.stat(stat)
                print(f"      {stat:<4} predicted {predicted:.3f} ms, measured {measured:.3f} ms "
                      f"(measured/predicted {measured / predicted:.3f}, {100 * (measured / predicted - 1):+.1f}%)")
    else:
        print("(c) the bundle records no predicted latency (bundled without a design): nothing to compare")
    if costs is not None:
        counts = np.asarray(report.exit_counts, dtype=np.float64)
        on_test = float(counts @ np.asarray(costs) / counts.sum())
        err = report.latency.mean_ms / on_test - 1
        print(f"    table ({latency_path.name}) on the test split's own exits: predicted {on_test:.3f} ms, "
              f"measured {report.latency.mean_ms:.3f} ms ({100 * err:+.1f}%): the latency model's error")
        entry = (table.extra.get("runtime") or {}).get("per_predict_ms")
        if entry is not None:
            err = report.latency.mean_ms / (on_test + entry) - 1
            print(f"    + the runtime's own work per predict from the table ({entry * 1e3:.1f} us, "
                  f"extra.runtime): predicted {on_test + entry:.3f} ms ({100 * err:+.1f}%)")
        problem = SearchProblem.from_artifacts(_trace_for(table), table)
        if problem.latency_model is not None:
            index = {name: k for k, name in enumerate(table.exit_names)}
            kept = [index[name] for name in model.exit_names[:-1]]
            predicted = problem.percentiles(kept, report.exit_counts, ("p90", "p99"))
            ratios = ", ".join(f"{s} {report.latency.stat(s) / predicted[s]:.3f}" for s in ("p90", "p99"))
            print(f"    percentiles with the backbone's jitter on the test split's own exits: "
                  f"p90 {predicted['p90']:.3f} ms, p99 {predicted['p99']:.3f} ms; measured/predicted {ratios}")
        per_exit = per_exit_latency_ms(model, data.x)
        add = entry or 0.0
        print("    per exit, measured mean (batch 1, bundle alone, no full model in between) vs table path cost"
              + (" + runtime per predict:" if entry is not None else ":"))
        for j, name in enumerate(model.exit_names):
            if j in per_exit:
                ms, n = per_exit[j]
                pred = costs[j] + add
                print(f"      {name:<8} n={n:<4} measured {ms * 1e3:7.1f} us, table {pred * 1e3:7.1f} us "
                      f"({100 * (ms / pred - 1):+.1f}%)")
    else:
        print(f"    no latency table at {latency_path}: give --latency to split the error")
    calib_path = Path(args.calib) if args.calib else Path(args.data).with_name("calib.npz")
    if calib_path.is_file():
        stage_measured(model, load_dataset(calib_path), report, costs)
    tp = report.throughput
    print(f"(d) batch {args.batch} throughput: bundle {tp['bundle_sps']:.0f}/s vs "
          f"full {tp['full_sps']:.0f}/s -> x{tp['bundle_sps'] / tp['full_sps']:.2f}")


if __name__ == "__main__":
    try:
        main()
    except HapiError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
