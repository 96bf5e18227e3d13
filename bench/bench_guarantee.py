"""Does an accuracy budget hold on new data? Re-split calibration and test data many times and look.

For each task, the demo's early-exit model is calibrated once on its 2,000 labelled images that
neither the backbone nor the heads were trained on (the demo's calib + test splits); then, for
``--splits`` seeded re-splits into two halves, the search runs on one half and the chosen design
is scored on the other. For budgets of 0.5, 1 and 2 pt at level 0.9 it prints, per guarantee
(``split``: certified along a path on held-out calibration samples, the default; ``per-design``:
one bound per design on all the calibration samples, the older check):

- how often the held-out drop exceeds the budget (the test half is only 1,000 images, so its own
  noise adds to the rate: a design whose true drop sits exactly at the budget exceeds it about
  half the time), and how often the held-out *loss rate* (wrong where the full model is right,
  what the split guarantee bounds) does;
- the mean predicted speed-up on the held-out half, and what the honest method gives up.

Tasks: ``clean`` (the real MNIST digits) and ``hard`` (the same digits with seeded random noise,
blur, occlusion and rotation of random severity: the demo model is around 90% there).

Usage (after ``make demo``)::

    python bench/bench_guarantee.py [--work work/demo] [--splits 50]
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


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="work/demo", help="The demo's work directory (after make demo).")
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


def run_task(name: str, trace, table: LatencyTable, splits: int, level: float) -> None:
    n = trace.num_samples
    print(f"\n{name}: {n} images, full model {100 * trace.accuracy[-1]:.1f}% ({splits} re-splits into "
          f"{n // 2} calibration / {n - n // 2} test images, level {level:g})")
    print(f"  {'budget':>6}  {'guarantee':<10}  {'drop > budget':>13}  {'loss rate > budget':>18}  "
          f"{'mean speed-up':>13}  {'mean drop':>9}")
    start = time.perf_counter()
    for budget in BUDGETS:
        stats = {g: [] for g in GUARANTEES}
        for seed in range(splits):
            order = np.random.default_rng(1000 + seed).permutation(n)
            calib, test = trace.subset(order[: n // 2]), trace.subset(order[n // 2 :])
            problem = SearchProblem.from_artifacts(test, table)
            for guarantee in GUARANTEES:
                constraints = Constraints(max_accuracy_drop=budget, bound_level=level, guarantee=guarantee)
                stats[guarantee].append(held_out(problem, trace.exit_names, search(calib, table, constraints)))
        for guarantee in GUARANTEES:
            drop, loss, speedup = (np.array(v) for v in zip(*stats[guarantee], strict=True))
            print(f"  {budget:>5g}   {guarantee:<10}  {np.mean(drop > budget / 100):>12.0%}   "
                  f"{np.mean(loss > budget / 100):>17.0%}   {speedup.mean():>12.2f}x  {100 * drop.mean():>7.2f} pt")
        honest, old = (np.mean([s[2] for s in stats[g]]) for g in GUARANTEES)
        print(f"  {'':>6}  speed-up given up by the split guarantee: {100 * (1 - honest / old):.1f}% "
              f"({honest:.2f}x vs {old:.2f}x)")
    print(f"  ({time.perf_counter() - start:.1f} s)")


def main(argv=None) -> int:
    args = parse_arguments(argv)
    work = Path(args.work)
    if not (work / "ee.onnx").is_file():
        print(f"no {work / 'ee.onnx'}: run `make demo` first", file=sys.stderr)
        return 2
    table = LatencyTable.load(work / "latency.json")
    calib, test = load_dataset(work / "data" / "calib.npz"), load_dataset(work / "data" / "test.npz")
    images = Dataset(np.concatenate([calib.x, test.x]), np.concatenate([calib.y, test.y]), calib.classes)
    clean = calibrate(work / "ee.onnx", images)
    hard = calibrate(work / "ee.onnx", Dataset(corrupt(images.x), images.y, images.classes))
    run_task("clean (real MNIST digits)", clean, table, args.splits, args.level)
    run_task("hard (noise, blur, occlusion, rotation)", hard, table, args.splits, args.level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
