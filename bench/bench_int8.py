"""Benchmark: the demo CNN quantized to int8 (QDQ) through ``build``, next to the float demo.

The int8 model is ``examples/mnist/model.onnx`` quantized with
``onnxruntime.quantization.quantize_static`` (QDQ, int8 weights and activations, calibrated on the
first 100 images of the train split). Both models go through the same ``build`` (the demo's
config, ``examples/mnist/build.json``; heads fitted on train, thresholds searched on calib) and
are evaluated on the held-out test split. Each speed-up is a ratio measured in one run: the
bundle and *its own* full model (float or int8) timed sample by sample, interleaved. The int8
bundle's stages stay int8 and carry int8 tensors; its heads are float32 on the dequantized cuts.

Run: ``python bench/bench_int8.py [--workdir work/bench_int8]`` (about 3 minutes on a 2-core
machine; a second run reuses every step).
"""

import argparse
from pathlib import Path

from hapi_onnx.data import mnist_splits
from hapi_onnx.evaluate import EvaluationReport
from hapi_onnx.pipeline import BuildConfig, build

DEMO = Path(__file__).resolve().parents[1] / "examples" / "mnist" / "model.onnx"
CALIBRATION_IMAGES = 100


def quantize_demo(out: Path) -> Path:
    """The demo quantized with quantize_static (QDQ, int8) on the first 100 train images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = mnist_splits()["train"].x[:CALIBRATION_IMAGES]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.batches, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        quantize_static(str(DEMO), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work/bench_int8", help="Where both builds run (reused).")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    models = {"float32": DEMO, "int8 QDQ": quantize_demo(work / "model_int8_qdq.onnx")}
    reports = {}
    for name, model in models.items():
        print(f"[{name}] build of {model}", flush=True)
        config = BuildConfig.from_file(DEMO.parent / "build.json", model=str(model.resolve()))
        result = build(config, work / name.split()[0], log=lambda line: print(f"  {line}", flush=True))
        reports[name] = EvaluationReport.load(result.paths["report"])
    print()
    print(f"Held-out test split ({reports['float32'].num_samples} images), device cpu-1t, batch 1 unless noted:")
    rows = [
        ("bundle accuracy", lambda r: f"{r.accuracy:.4f}"),
        ("full model accuracy", lambda r: f"{r.full_accuracy:.4f}"),
        ("drop (pts)", lambda r: f"{100 * (r.full_accuracy - r.accuracy):+.2f}"),
        ("bundle mean (ms)", lambda r: f"{r.latency.mean_ms:.3f}"),
        ("full model mean (ms)", lambda r: f"{r.full_latency.mean_ms:.3f}"),
        ("speed-up (mean)", lambda r: f"x{r.speedup:.2f}"),
        ("bundle p99 (ms)", lambda r: f"{r.latency.p99_ms:.3f}"),
        ("full model p99 (ms)", lambda r: f"{r.full_latency.p99_ms:.3f}"),
        ("throughput x (batch 64)", lambda r: "-" if not r.throughput or not r.throughput.get("full_sps")
         else f"x{r.throughput['bundle_sps'] / r.throughput['full_sps']:.2f}"),
        ("exits kept", lambda r: str(len(r.exits) - 1)),
        ("early exits taken", lambda r: f"{100 * (1 - r.exit_counts[-1] / r.num_samples):.1f}%"),
    ]
    names = list(reports)
    print(f"  {'':<24}" + "".join(f"{n:>14}" for n in names))
    for label, cell in rows:
        print(f"  {label:<24}" + "".join(f"{cell(reports[n]):>14}" for n in names))
    int8, fp = reports["int8 QDQ"], reports["float32"]
    print(f"  int8 full model vs float full model (mean latency, separate runs): "
          f"x{fp.full_latency.mean_ms / int8.full_latency.mean_ms:.2f}")
    drop = 100 * (int8.full_accuracy - int8.accuracy)
    print(f"  int8 bundle within 1 pt of the int8 full model: {'yes' if abs(drop) <= 1 else 'NO'} ({drop:+.2f} pts)")


if __name__ == "__main__":
    main()
