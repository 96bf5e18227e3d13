"""Benchmark: fitting exit heads on the demo, and memory of feature collection vs feature-map size.

1. Demo (examples/mnist/model.onnx, the 3,000-image train split, every candidate exit): time of
   the one ORT feature pass and of fitting all heads, peak RSS and the tracemalloc peak of the
   fit. The same heads are then fitted again on the same features with OpenBLAS left at its
   default thread count, side by side, to show what :func:`~hapi_onnx.exits.blas.blas_threads` buys.
2. Memory vs feature-map size: a fully convolutional seeded net, fed 1,000 MNIST digits upscaled
   28 -> 56 -> 112 px (and 250 digits at 112 px). Each case runs in a fresh process and reports
   its peak RSS over a baseline process that only loads the data: ``pooled`` is
   :func:`collect_features` (pooling nodes in the graph, ORT returns [batch, C] vectors);
   ``naive`` fetches the whole feature maps at the same cuts for the set and pools them in numpy
   afterwards. Pooled memory is one batch of maps inside ORT, whatever N; naive grows with N x maps.

3. Heads at many classes: the two solvers of :mod:`~hapi_onnx.exits.heads` on seeded synthetic
   pooled features (ReLU of class means plus noise in an anisotropic latent space, rotated into F
   dimensions: as ill-conditioned as real CNN features, with a known test set). ``exact`` (the L2
   grid to convergence) and ``whitened`` side by side on 300 classes x 512 features, where the
   exact fit is still affordable; then ``whitened`` alone at 1000 classes x 2048 features on
   16,000 samples (the ResNet-50 regime), on one BLAS thread and on two: samples/s per head, test
   accuracy and NLL.

Run: ``python bench/bench_heads.py`` (about three minutes on a 2-core machine).
"""

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
from measure import peak_rss_mb
from onnx import TensorProto, helper, numpy_helper

from hapi_onnx.data import mnist_splits
from hapi_onnx.exits.blas import blas_threads
from hapi_onnx.exits.features import collect_features
from hapi_onnx.exits.heads import (
    HELDOUT_FRACTION,
    L2_GRID,
    SPLIT_SEED,
    _fit_head,
    _fit_whitened,
    fit_head,
    head_probabilities,
)
from hapi_onnx.graph import add_outputs, candidate_exits, load_model
from hapi_onnx.runtime.session import create_session

DEMO = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.onnx"
SIZES = (28, 56, 112)
SAMPLES = 1000
BATCH = 64
CUTS = ("r1", "r2", "r3")


def conv_net(size: int, seed: int = 0) -> onnx.ModelProto:
    """conv(8)-relu -> conv(16, stride 2)-relu -> conv(16)-relu -> GAP -> Gemm(10), at size x size."""
    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        array = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape).astype(np.float32)
        return numpy_helper.from_array(array, name)

    inits = [weight("w1", 8, 1, 3, 3), weight("w2", 16, 8, 3, 3), weight("w3", 16, 16, 3, 3),
             weight("fc", 10, 16)]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "fcn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )
    return load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def upscaled_digits(size: int) -> np.ndarray:
    """The first ``SAMPLES`` train digits, each pixel repeated to ``size`` x ``size``."""
    x = mnist_splits(seed=0)["train"].x[:SAMPLES]
    factor = size // 28
    return np.ascontiguousarray(x.repeat(factor, axis=2).repeat(factor, axis=3))


def child(mode: str, size: int, samples: int, data: str) -> None:
    """One memory case in this (fresh) process; prints a JSON line."""
    x = np.load(data)[:samples]
    model = conv_net(size)
    infos = {vi.name: vi for vi in model.graph.value_info}
    shapes = {t: [d.dim_value or d.dim_param for d in infos[t].type.tensor_type.shape.dim] for t in CUTS}
    map_floats = sum(int(np.prod(shapes[t][1:])) for t in CUTS)
    start = time.perf_counter()
    if mode == "pooled":
        features = collect_features(model, x, [(t, shapes[t]) for t in CUTS], "gap", batch_size=BATCH)
    elif mode == "naive":
        session = create_session(add_outputs(model, list(CUTS)))
        maps = {t: [] for t in CUTS}
        for s in range(0, len(x), BATCH):
            for t, out in zip(CUTS, session.run(list(CUTS), {"input": x[s : s + BATCH]}), strict=True):
                maps[t].append(out)
        features = [np.concatenate(maps[t]).mean(axis=(2, 3)) for t in CUTS]
    else:
        features = []
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mb": peak_rss_mb(), "seconds": seconds, "map_mb_per_image": map_floats * 4 / 2**20,
                      "feature_mb": sum(f.nbytes for f in features) / 2**20}))


def run_child(mode: str, size: int, samples: int, data: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(size), str(samples), str(data)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


POOLING = "auto"  # attach's default: gap+2x2 on every demo cut (<= 409 channels)


def demo() -> None:
    train = mnist_splits(seed=0)["train"]
    model = load_model(DEMO)
    candidates = candidate_exits(model)
    cuts = [(c.tensor, c.shape) for c in candidates]
    start = time.perf_counter()
    features = collect_features(model, train.x, cuts, POOLING)
    feature_s = time.perf_counter() - start
    tracemalloc.start()
    start = time.perf_counter()
    for f in features:
        fit_head(f, train.y, 10)
    fit_s = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    some = [0, len(features) // 2, len(features) - 1]
    start = time.perf_counter()
    one = [fit_head(features[k], train.y, 10) for k in some]
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    default = [_fit_head(features[k], train.y, 10, L2_GRID, HELDOUT_FRACTION, SPLIT_SEED) for k in some]
    default_s = time.perf_counter() - start
    agree = min(float(np.mean(a.head.logits(features[k]).argmax(1) == b.head.logits(features[k]).argmax(1)))
                for k, a, b in zip(some, one, default, strict=True))
    print(f"demo: {len(train)} images, {len(cuts)} heads ({POOLING}), feature dims {[f.shape[1] for f in features]}")
    print(f"  ORT feature pass          {feature_s:6.2f} s")
    print(f"  fit all heads, 1 BLAS thr {fit_s:6.2f} s   (target < 60 s)")
    print(f"  heads {some}: 1 BLAS thread {one_s:.2f} s, OpenBLAS default threads {default_s:.2f} s, "
          f"ratio {default_s / one_s:.1f}x (top-1 agreement >= {100 * agree:.1f}%)")
    print(f"  peak RSS {peak_rss_mb():.0f} MiB, tracemalloc peak during fitting {traced_peak:.1f} MiB")


def memory() -> None:
    print(f"memory vs feature-map size: cuts {', '.join(CUTS)}, batch {BATCH}, a fresh process per cell")
    print(f"  {'px':>4} {'N':>5} {'maps MiB/set':>12} {'maps MiB/batch':>14} {'base MiB':>8} {'pooled +MiB':>11} "
          f"{'naive +MiB':>10} {'pooled s':>8} {'naive s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for size, samples in [(s, SAMPLES) for s in SIZES] + [(SIZES[-1], SAMPLES // 4)]:
            data = Path(tmp) / f"digits{size}.npy"
            if not data.exists():
                np.save(data, upscaled_digits(size))
            base, pooled, naive = (run_child(mode, size, samples, data) for mode in ("none", "pooled", "naive"))
            per_image = pooled["map_mb_per_image"]
            print(f"  {size:>4} {samples:>5} {per_image * samples:>12.0f} {per_image * BATCH:>14.0f} "
                  f"{base['peak_mb']:>8.0f} {pooled['peak_mb'] - base['peak_mb']:>11.0f} "
                  f"{naive['peak_mb'] - base['peak_mb']:>10.0f} {pooled['seconds']:>8.2f} {naive['seconds']:>7.2f}")
    print("  +MiB: peak RSS over a process that only loads the same images and model. Pooled features")
    print("  stay N x 40 floats (0.15 MiB at N=1000); the pooled pass holds one batch of maps in ORT at a")
    print("  time (its +MiB follows maps/batch and not N), the naive one holds the maps of the whole set.")


def synthetic_features(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ReLU features: class means and noise in a latent space of decaying scales, rotated to ``dim``."""
    rng = np.random.default_rng(seed)
    latent = dim // 2
    scales = np.arange(1, latent + 1) ** -0.6
    means = rng.standard_normal((classes, latent)) * scales * 0.5
    y = rng.integers(0, classes, n)
    z = means[y] + rng.standard_normal((n, latent)) * scales
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:latent]
    x = np.maximum(3 * z @ rotation + 0.3 * rng.standard_normal(dim) + 0.05 * rng.standard_normal((n, dim)), 0)
    return x.astype(np.float32), y


def _score(fit, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    probs = head_probabilities(fit.head, x)
    return float(np.mean(probs.argmax(axis=1) == y)), float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y],
                                                                                          1e-12))))


def many_classes() -> None:
    print("\nheads at many classes (synthetic pooled features, 3,000 test samples each):")
    print(f"  {'classes':>7} {'F':>5} {'N':>6} {'solver':<9} {'BLAS':>4} {'fit s':>7} {'samples/s':>9} "
          f"{'iter':>4} {'test acc':>8} {'test NLL':>8}")
    cases = [(300, 512, 8000, "exact", 1), (300, 512, 8000, "whitened", 1),
             (1000, 2048, 16000, "whitened", 1), (1000, 2048, 16000, "whitened", 2)]
    data = {}
    for classes, dim, n, solver, threads in cases:
        if (classes, dim, n) not in data:
            x, y = synthetic_features(n + 3000, dim, classes)
            data[(classes, dim, n)] = (x[:n], y[:n], x[n:], y[n:])
        x, y, xt, yt = data[(classes, dim, n)]
        with blas_threads(threads):
            if solver == "exact":
                fit = _fit_head(x, y, classes, L2_GRID, HELDOUT_FRACTION, SPLIT_SEED)
            else:
                fit = _fit_whitened(x, y, classes, HELDOUT_FRACTION, SPLIT_SEED)
        acc, nll = _score(fit, xt, yt)
        print(f"  {classes:>7} {dim:>5} {n:>6} {solver:<9} {threads:>4} {fit.seconds:>7.1f} {n / fit.seconds:>9.0f} "
              f"{fit.iterations:>4} {100 * acc:>7.1f}% {nll:>8.3f}", flush=True)
    print("  samples/s: training samples given / fit seconds (15% of them held out for early stopping and the")
    print("  temperature); target >= 1,000 per head at 1000 classes x 2048 features. attach fits the largest whitened")
    print("  heads (>= 1e10 multiply-adds a product) on every usable CPU, all others on one BLAS thread.")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        demo()
        memory()
        many_classes()
