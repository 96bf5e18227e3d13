"""Drift: does the monitored bundle keep its disagreement budget where the static one does not, and at what cost?

A stream of the demo's held-out test digits: clean, then corrupted with rising severity (Gaussian
noise, blur, lowered contrast, an occluding square; three severities each), then clean again,
``--segment`` samples per setting (each segment a seeded draw of the 1,000 test digits, corrupted
with its own seed). The bundle is the demo's early-exit model searched with ``--reference final``
(certified for *disagreement* with the full model, which is what a label-free monitor can see;
the demo's own bundle is certified for losses against labels at 1 pt, and its early answers
already disagree with the full model on 1.3% of clean test digits) at ``--budget-pp``, on the
demo's calibration trace and latency table, bundled with its certified path.

The static bundle and the monitored one (``EarlyExitModel.load(..., monitor=Monitor(...))``,
background audits) classify the stream one sample at a time, window by window (static first,
then monitored, on the same window; both on one thread each, the ``cpu-1t`` session options).
Per window of ``--window`` samples, each one's disagreement (early answers that differ from the
full model's, over the window's samples) is compared with the budget. Printed: the windows where
each exceeds it, per part of the stream; the mean batch-1 latency of each per part
(``perf_counter_ns`` around ``predict``); the monitor's moves; and what the audits cost (their
compute, off the caller's path, per sample, against the static bundle's mean latency).

Usage (after ``make demo``; timings only mean something under the lock)::

    flock /tmp/hapi-heavy.lock .venv/bin/python bench/bench_drift.py [--work work/demo] [--budget-pp 3]
        [--audit-rate 0.1] [--monitor-window 200] [--segment 500] [--seed 0]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from hapi_onnx.bundle import bundle_from_design
from hapi_onnx.data import load_dataset
from hapi_onnx.profile.presets import load_preset
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.runtime import EarlyExitModel, Monitor
from hapi_onnx.search import Constraints, search
from hapi_onnx.trace import Trace

SEVERITY = {  # rising severity, three steps per corruption
    "noise": (0.04, 0.08, 0.12),  # Gaussian noise sigma (pixels in [0, 1])
    "blur": (0.8, 1.1, 1.4),  # Gaussian blur sigma (pixels)
    "contrast": (0.5, 0.35, 0.25),  # pixels scaled by this
    "occlusion": (8, 10, 12),  # side of a black square at a random place
}
CLEAN_SEGMENTS = 6


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="work/demo", help="The demo's work directory (after make demo).")
    parser.add_argument("--budget-pp", type=float, default=3.0, help="Disagreement budget, points. Default: 3.")
    parser.add_argument("--audit-rate", type=float, default=0.1, help="Share of samples audited. Default: 0.1.")
    parser.add_argument("--monitor-window", type=int, default=200,
                        help="Audits the bounds look back over. Default: 200.")
    parser.add_argument("--segment", type=int, default=500, help="Samples per stream segment and window. Default: 500.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the stream and the audits. Default: 0.")
    return parser.parse_args(argv)


def corrupt(x: np.ndarray, kind: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` (N x 1 x 28 x 28 in [0, 1]) with one corruption at one severity."""
    if kind == "clean":
        return x
    if kind == "noise":
        y = x + rng.normal(0.0, severity, x.shape)
    elif kind == "blur":
        y = ndimage.gaussian_filter(x, (0, 0, severity, severity))
    elif kind == "contrast":
        y = x * severity
    else:
        y, side = x.copy(), int(severity)
        for image, (top, left) in zip(y, rng.integers(0, 28 - side, size=(len(y), 2)), strict=True):
            image[:, top : top + side, left : left + side] = 0.0
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def make_stream(x: np.ndarray, segment: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """The stream and each segment's name: clean, the corruptions by rising severity, clean."""
    settings = ([("clean", 0.0)] * CLEAN_SEGMENTS + [(k, s) for k, levels in SEVERITY.items() for s in levels]
                + [("clean", 0.0)] * CLEAN_SEGMENTS)
    parts, names = [], []
    for i, (kind, severity) in enumerate(settings):
        rng = np.random.default_rng([seed, i])
        parts.append(corrupt(x[rng.choice(len(x), segment, replace=len(x) < segment)], kind, severity, rng))
        names.append(kind if kind == "clean" else f"{kind} {severity:g}")
    return np.concatenate(parts), names


def build_bundle(work: Path, budget_pp: float, out: Path) -> Path:
    """The demo model searched for a disagreement budget (certified, reference final) and bundled."""
    design = search(Trace.load(work / "trace.npz"), LatencyTable.load(work / "latency.json"),
                    Constraints(max_accuracy_drop=budget_pp, reference="final"))
    return bundle_from_design(work / "ee.onnx", design, out)


def timed(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes, exits and batch-1 latencies (ns) of ``model`` on every sample of ``x``, in order."""
    classes = np.empty(len(x), dtype=np.int64)
    exits = np.empty(len(x), dtype=np.int64)
    ns = np.empty(len(x), dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(len(x)):
        sample = x[i : i + 1]
        start = clock()
        pred = model.predict(sample)
        ns[i] = clock() - start
        classes[i], exits[i] = pred.classes[0], pred.exit_index[0]
    return classes, exits, ns


def main(argv=None) -> int:
    args = parse_arguments(argv)
    work = Path(args.work)
    if not (work / "ee.onnx").is_file():
        print(f"no {work / 'ee.onnx'}: run `make demo` first", file=sys.stderr)
        return 2
    x = load_dataset(work / "data" / "test.npz").x
    stream, names = make_stream(x, args.segment, args.seed)
    budget = args.budget_pp / 100
    options = load_preset("cpu-1t").session_options
    with tempfile.TemporaryDirectory() as tmp:
        path = build_bundle(work, args.budget_pp, Path(tmp) / "model.hapi")
        static = EarlyExitModel.load(path, session_options=options())
        settings = Monitor(audit_rate=args.audit_rate, window=args.monitor_window, seed=args.seed)
        monitored = EarlyExitModel.load(path, session_options=options(), monitor=settings)
    full = static.force_full_path().predict(stream).classes
    last = static.num_stages - 1
    timed(static, stream[:200])  # warm the batch-1 plans (the sessions and plans are shared)
    runs = {"static": [], "monitored": []}
    for w in range(len(names)):
        window = stream[w * args.segment : (w + 1) * args.segment]
        runs["static"].append(timed(static, window))
        runs["monitored"].append(timed(monitored, window))
    monitored.drain()
    state = monitored.monitor_state()
    monitored.close()

    print(f"bundle: demo model, certified for disagreement <= {args.budget_pp:g} pp with the full model at level "
          f"0.9; {static.manifest.path and len(static.manifest.path.steps)} designs on its certified path; "
          f"thresholds {static.thresholds[0]:.4f}")
    print(f"stream: {len(stream)} test digits, windows of {args.segment}: {', '.join(names)}")
    print(f"monitor: audit rate {args.audit_rate:g}, window {args.monitor_window} audits, level 0.9, "
          f"seed {args.seed}\n")
    parts = {"clean before": range(CLEAN_SEGMENTS), "drifted": range(CLEAN_SEGMENTS, len(names) - CLEAN_SEGMENTS),
             "clean after": range(len(names) - CLEAN_SEGMENTS, len(names))}
    rates = {}
    print(f"{'window':>6}  {'segment':<14} {'static':>8} {'monitored':>10}   (disagreement with the full model; "
          f"* > budget {budget:.3f})")
    for name, run in runs.items():
        rates[name] = [float(np.mean((e < last) & (c != full[w * args.segment : (w + 1) * args.segment])))
                       for w, (c, e, _) in enumerate(run)]
    for w, segment in enumerate(names):
        s, m = rates["static"][w], rates["monitored"][w]
        print(f"{w:>6}  {segment:<14} {s:>7.3f}{'*' if s > budget else ' '} {m:>9.3f}{'*' if m > budget else ' '}")
    print(f"\n{'part':<13} {'windows':>7}  {'static >budget':>14}  {'monitored >budget':>17}  "
          f"{'static ms mean (p50)':>20}  {'monitored ms mean (p50)':>23}  {'ratio':>6}")
    for part, ws in parts.items():
        over = {k: sum(rates[k][w] > budget for w in ws) for k in runs}
        ns = {k: np.concatenate([runs[k][w][2] for w in ws]) / 1e6 for k in runs}
        ms = {k: f"{np.mean(v):.4f} ({np.median(v):.4f})" for k, v in ns.items()}
        ratio = np.mean(ns["monitored"]) / np.mean(ns["static"])
        print(f"{part:<13} {len(ws):>7}  {over['static']:>14}  {over['monitored']:>17}  {ms['static']:>20}  "
              f"{ms['monitored']:>23}  {ratio:>6.3f}")
    over = {k: sum(r > budget for r in rates[k]) for k in runs}
    print(f"{'all':<13} {len(names):>7}  {over['static']:>14}  {over['monitored']:>17}   "
          f"(monitored: {100 * over['monitored'] / len(names):.1f}% of windows)")
    print("\nmoves of the monitor (position 0 is the full model):")
    for c in monitored.position_changes():
        print(f"  sample {c.sample:>6} (window {c.sample // args.segment:>2}): {c.old:>3} -> {c.new:<3} after "
              f"{c.audit} audits; disagreement at the shipped design over the window {c.estimate:.3f} "
              f"(lower bound {c.lower:.3f})")
    static_ms = np.mean(np.concatenate([r[2] for r in runs["static"]])) / 1e6
    per_sample = state.audit_seconds * 1e3 / state.samples
    print(f"\naudits: {state.audits_done} done, {state.audits_dropped} dropped (queue full), {state.samples} samples; "
          f"their compute {state.audit_seconds:.2f} s in the background thread = {per_sample:.4f} ms per sample "
          f"({100 * per_sample / static_ms:.0f}% of the static bundle's mean latency {static_ms:.4f} ms), none of it "
          "on the caller's path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
