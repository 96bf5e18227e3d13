"""Does an accuracy budget hold on new data? Re-split calibration and test data many times and look.

For each task, an early-exit model is calibrated once on its 2,000 labelled images that neither
the backbone nor the heads were trained on (the demo's calib + test splits); then, for
``--splits`` seeded re-splits into two halves, the search runs on one half and the chosen design
is scored on the other. For budgets of 0.5, 1 and 2 pt at level 0.9 it prints, per guarantee
(``split``: certified along a path on held-out calibration samples, the default; ``per-design``:
one bound per design on all the calibration samples, the older check, which does not survive the
selection) and for ``hindsight`` (the fastest global-threshold design whose drop *on the test
half itself* is within the budget, raw counts, the same latency table: the most any search of
this family could have got):

- how often the held-out drop exceeds the budget (the test half is only 1,000 images, so its own
  noise adds to the rate: a design whose true drop sits exactly at the budget exceeds it about
  half the time), next to the method's nominal level;
- the mean predicted speed-up on the held-out half and the mean drop there;
- the split guarantee's *share* of the hindsight speed-up, ``(s - 1) / (s_hindsight - 1)`` of the
  mean speed-ups (1: nothing given up; 0: no faster than the full model), and which of the two
  tests (loss / net, :mod:`hapi_onnx.search.guarantee`) certified, over the splits.

Tasks: the demo's ResNet-style model on ``clean`` (the real MNIST digits) and ``hard`` digits
(seeded random noise, blur, occlusion and rotation of random severity: the demo model is around
90% there), and the MobileNetV2-style model of ``make demo-mbv2`` on both (another family: 32
candidate exits, searched by the local optimiser).

Usage (after ``make demo demo-mbv2``)::

    python bench/bench_guarantee.py [--work work/demo work/demo-mbv2] [--splits 50]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from hapi_onnx.calibrate import calibrate
from hapi_onnx.data import Dataset, load_dataset
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.search import Constraints, search
from hapi_onnx.search.problem import SearchProblem
from hapi_onnx.search.score import score_problem

BUDGETS = (0.5, 1.0, 2.0)
GUARANTEES = ("split", "per-design")
HINDSIGHT = "hindsight"


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", nargs="+", default=["work/demo", "work/demo-mbv2"],
                        help="Work directories of built MNIST demos. Default: work/demo work/demo-mbv2.")
    parser.add_argument("--splits", type=int, default=50, help="Re-splits per task. Default: 50.")
    parser.add_argument("--level", type=float, default=0.9, help="Bound level. Default: 0.9.")
    return parser.parse_args(argv)


def corrupt(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image with Gaussian noise, blur, an occluding patch and a rotation, each of random severity."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(x)
    for i, image in enumerate(x[:, 0]):
        image = ndimage.rotate(image, rng.uniform(-18, 18), reshape=False, order=1, mode="constant")
        image = ndimage.gaussian_filter(image, rng.uniform(0.0, 0.8))
        size = rng.integers(2, 8)
        top, left = rng.integers(0, 28 - size, size=2)
        image[top : top + size, left : left + size] = rng.uniform(0.0, 1.0)
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.11), size=image.shape)
        out[i, 0] = np.clip(image, 0.0, 1.0)
    return out.astype(np.float32)


def held_out(problem: SearchProblem, names: list[str], design) -> tuple[float, float, float]:
    """Drop, loss rate and predicted speed-up of ``design`` on ``problem`` (the held-out half)."""
    exits = tuple(names.index(e.name) for e in design.exits[:-1])
    score = score_problem(problem, exits, [e.threshold for e in design.exits[:-1]])
    n = problem.num_samples
    loss_rate = score.losses / n if exits else 0.0
    return (problem.final_correct - score.correct) / n, loss_rate, problem.monolithic_ms / score.mean_ms


def share(speedup: float, best: float) -> float:
    """The share of the hindsight speed-up kept: ``(s - 1) / (best - 1)``; NaN when even the best
    design is no faster than the full model (nothing to share)."""
    return float("nan") if best <= 1.0 else (speedup - 1.0) / (best - 1.0)


def run_task(name: str, trace, table: LatencyTable, splits: int, level: float) -> list[float]:
    """The task's table; returns the split guarantee's share of the hindsight speed-up per budget."""
    n = trace.num_samples
    print(f"\n{name}: {n} images, full model {100 * trace.accuracy[-1]:.1f}% ({splits} re-splits into "
          f"{n // 2} calibration / {n - n // 2} test images)")
    print(f"  {'budget':>6}  {'method':<10}  {'drop > budget':>13}  {'nominal':>7}  {'mean speed-up':>13}  "
          f"{'mean drop':>9}")
    start = time.perf_counter()
    shares = []
    for budget in BUDGETS:
        stats = {g: [] for g in (*GUARANTEES, HINDSIGHT)}
        tests = []
        for seed in range(splits):
            order = np.random.default_rng(1000 + seed).permutation(n)
            calib, test = trace.subset(order[: n // 2]), trace.subset(order[n // 2 :])
            problem = SearchProblem.from_artifacts(test, table)
            for guarantee in GUARANTEES:
                constraints = Constraints(max_accuracy_drop=budget, bound_level=level, guarantee=guarantee)
                design = search(calib, table, constraints)
                stats[guarantee].append(held_out(problem, trace.exit_names, design))
                if guarantee == "split":
                    tests.append(design.search["guarantee"]["test"])
            best = search(test, table, Constraints(max_accuracy_drop=budget, bound_level=0.0))
            stats[HINDSIGHT].append(held_out(problem, trace.exit_names, best))
        nominal = {"split": f"{1 - level:.0%}", "per-design": "none", HINDSIGHT: "-"}
        for method, rows in stats.items():
            drop, _, speedup = (np.array(v) for v in zip(*rows, strict=True))
            exceeded = np.mean(drop > budget / 100 + 1e-12)
            print(f"  {budget:>5g}   {method:<10}  {exceeded:>12.0%}   {nominal[method]:>7}  "
                  f"{speedup.mean():>12.2f}x  {100 * drop.mean():>7.2f} pt")
        honest, best = (np.mean([s[2] for s in stats[g]]) for g in ("split", HINDSIGHT))
        shares.append(share(honest, best))
        print(f"  {'':>6}  split keeps {shares[-1]:.2f} of the hindsight speed-up ({honest:.2f}x vs {best:.2f}x); "
              f"test: {tests.count('net')} net, {tests.count('loss')} loss")
    print(f"  ({time.perf_counter() - start:.1f} s)")
    return shares


def main(argv=None) -> int:
    args = parse_arguments(argv)
    shares = {}
    for work in map(Path, args.work):
        if not (work / "ee.onnx").is_file():
            print(f"no {work / 'ee.onnx'}: run `make demo` (and `make demo-mbv2`) first", file=sys.stderr)
            return 2
        table = LatencyTable.load(work / "latency.json")
        calib, test = load_dataset(work / "data" / "calib.npz"), load_dataset(work / "data" / "test.npz")
        images = Dataset(np.concatenate([calib.x, test.x]), np.concatenate([calib.y, test.y]), calib.classes)
        clean = calibrate(work / "ee.onnx", images)
        hard = calibrate(work / "ee.onnx", Dataset(corrupt(images.x), images.y, images.classes))
        for task, trace in ((f"{work.name}, clean (real MNIST digits)", clean),
                            (f"{work.name}, hard (noise, blur, occlusion, rotation)", hard)):
            shares[task] = run_task(task, trace, table, args.splits, args.level)
    cells = np.array([v for row in shares.values() for v in row])
    cells = cells[~np.isnan(cells)]
    print(f"\nshare of the hindsight speed-up kept, budgets {' / '.join(f'{b:g}' for b in BUDGETS)} pt "
          "(n/a: no design is faster than the full model):")
    for task, row in shares.items():
        print(f"  {task:<55} " + " / ".join("n/a" if np.isnan(v) else f"{v:.2f}" for v in row))
    print(f"  median {np.median(cells):.2f}, lowest {cells.min():.2f} (over the {len(cells)} cells with a speed-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
