"""Benchmark: the cost of fitting a head at every candidate exit of a 66-cut network.

Model: the model zoo's DenseNet-121 graph shipped in the onnx wheel (``light_densenet121.onnx``,
224 x 224 x 3 input, 1000 classes, 66 candidate exits, constant weights: the structure and the
cost are real, the accuracy means nothing). Data: a few hundred random images with random labels
(a worst case for the fit: L-BFGS cannot converge early on labels the features do not explain).

It runs what :func:`hapi_onnx.exits.attach.attach_exits` runs, step by step, and times each: the
one ONNX Runtime pass collecting the pooled features at all 66 cuts, then one head per cut
(:func:`~hapi_onnx.exits.heads.fit_head`), then the graft of all heads into the EE model.
``attach_exits`` itself refuses training data without a sample of every class (1,000 here), which
a few hundred images cannot have; every piece it runs is timed here instead.

Run: ``python bench/bench_attach_scale.py [--samples 300]`` (a few minutes on a 2-core machine).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from measure import peak_rss_mb

from hapi_onnx.exits.attach import graft_heads, head_model
from hapi_onnx.exits.features import collect_features
from hapi_onnx.exits.heads import fit_head
from hapi_onnx.graph import load_model
from hapi_onnx.graph.cuts import candidate_exits

MODEL = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_densenet121.onnx"


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pooling", default="gap+2x2")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    model = load_model(MODEL)
    candidates = candidate_exits(model)
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 3, 224, 224), dtype=np.float32)
    y = rng.integers(0, 1000, size=args.samples)
    print(f"{MODEL.name}: {len(candidates)} candidate exits, {args.samples} random 224x224 images, "
          f"1000 classes, pooling {args.pooling}, batch {args.batch_size}")

    start = time.perf_counter()
    features = collect_features(model, x, [(c.tensor, list(c.shape)) for c in candidates], args.pooling,
                                args.batch_size)
    feature_s = time.perf_counter() - start
    dims = [f.shape[1] for f in features]
    print(f"feature pass (all {len(candidates)} cuts, one ORT pass): {feature_s:.1f} s = "
          f"{1000 * feature_s / args.samples:.0f} ms per image; feature dims {min(dims)}..{max(dims)} "
          f"({sum(dims)} in all); peak memory so far {peak_rss_mb():.0f} MB")

    fits, heads = [], []
    for k, (candidate, feats) in enumerate(zip(candidates, features, strict=True)):
        fit = fit_head(feats, y, 1000)
        fits.append(fit.seconds)
        heads.append(head_model(candidate.tensor, list(candidate.shape), args.pooling, fit.head,
                                f"hapi_exit{k}/", f"exit{k}_prob", model.opset_import))
    fits = np.array(fits)
    print(f"heads: {len(fits)} fitted in {fits.sum():.1f} s: per head mean {fits.mean():.2f} s, median "
          f"{np.median(fits):.2f} s, max {fits.max():.2f} s (feature dim {dims[int(fits.argmax())]})")

    start = time.perf_counter()
    graft_heads(model, heads)
    graft_s = time.perf_counter() - start
    total = feature_s + fits.sum() + graft_s
    print(f"graft of all heads: {graft_s:.1f} s; attach total {total:.1f} s; peak memory {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
