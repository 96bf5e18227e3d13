"""Benchmark: the nine classic model-zoo graphs in the onnx wheel through exits, split, attach, calibrate, profile.

The graphs are ``onnx/backend/test/data/light/light_*.onnx``: real third-party structure (IR 3,
opset 9, every weight listed as a graph input, batch fixed at 1, Reshapes with the batch baked in,
``[N, 1000, 1, 1]`` outputs) with constant weights. Each step runs as a user runs it, through the
``hapi-onnx`` CLI, one process per model and step, so the time and peak RSS printed are that
step's alone (process start and model load included):

* ``exits``: ``hapi-onnx exits MODEL --json``;
* ``split``: ``hapi-onnx split MODEL -o DIR`` at every candidate; the parent process then chains
  the segments with ONNX Runtime and compares the result with the whole (normalised) model;
* ``attach``: heads at the two shallowest candidates (``--exits A,B --pooling gap``) on 1,000
  seeded random images labelled 0..999 (attach needs a sample of every class; accuracy means
  nothing on these weights; shallow exits keep the 1000-class scipy fits to seconds);
* ``calibrate``: 64 random images;
* ``profile``: ``--device cpu-1t --time-budget 0.1``.

``--int8`` adds QDQ int8 versions of two graphs (``hapi-onnx export`` to opset 13, then
``quantize_static`` on 16 random images) through the same steps; their chained segments must
match the whole model bit for bit.

Run: ``python bench/bench_zoo.py [--int8] [--only NAME,...]``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from hapi_onnx.graph import SplitIndex, load_model, load_notes
from hapi_onnx.runtime.session import create_session

ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
          "squeezenet", "vgg19", "zfnet512")
INT8_MODELS = ("squeezenet", "resnet50")
PEAK_TAG = "hapi-bench-VmHWM-kB"
# `hapi-onnx ARGS...` that prints its own peak RSS (VmHWM, kB) to stderr when it exits.
CLI = [sys.executable, "-c", (
    "import atexit, sys\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    f"            sys.stderr.write('{PEAK_TAG} ' + line.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "from hapi_onnx_cli.main import cli\n"
    "cli(prog_name='hapi-onnx')\n"
)]
TRAIN, CALIB, CLASSES = 1000, 64, 1000


def run_measured(args: list[str]) -> tuple[float, float, str]:
    """Run one CLI command; return (seconds, peak RSS in MiB of that process, stdout). Exits on failure.

    The peak is the child's own ``VmHWM`` (its memory map after exec), read at its exit: the
    rusage of a forked child also counts the parent's pages at fork time.
    """
    start = time.perf_counter()
    proc = subprocess.run(CLI + args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"step failed: hapi-onnx {' '.join(args)}\n{proc.stderr}")
    peak = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith(PEAK_TAG)]
    return seconds, int(peak[-1]) / 1024 if peak else float("nan"), proc.stdout


def write_data(path: Path, n: int, shape: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % CLASSES
    with open(path, "wb") as f:
        np.savez(f, x=x, y=y)


def chain_diff(model_path: Path, split_dir: Path, int8: bool) -> float:
    """Largest |chained segments - whole model| over 2 random images, relative to the output's scale."""
    model = load_model(model_path)
    index = SplitIndex.load(split_dir / "index.json")
    image = model.graph.input[0]
    shape = [d.dim_value for d in image.type.tensor_type.shape.dim[1:]]
    batch = 1 if image.type.tensor_type.shape.dim[0].HasField("dim_value") else 2
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    whole = create_session(model)
    want = whole.run(None, {image.name: x})[0]
    current = x
    for entry in index.segments:
        session = create_session(split_dir / entry.file)
        current = session.run(None, {session.get_inputs()[0].name: current})[0]
    if int8:
        return float(np.max(np.abs(current.astype(np.float64) - want)))
    return float(np.max(np.abs(current - want)) / max(1.0, float(np.max(np.abs(want)))))


def bench_model(name: str, path: Path, work: Path, steps: tuple[str, ...], int8: bool = False) -> dict:
    row: dict = {"model": name}
    model = load_model(path)
    image = model.graph.input[0]
    shape = tuple(d.dim_value for d in image.type.tensor_type.shape.dim[1:])
    raw = onnx.load(str(path))
    row["graph"] = f"IR {raw.ir_version}, opset {raw.opset_import[0].version}, {len(raw.graph.node)} nodes"
    row["notes"] = load_notes(model)
    seconds, peak, out = run_measured(["exits", str(path), "--json"])
    row["exits"] = (seconds, peak)
    candidates = [c["tensor"] for c in json.loads(out)]
    row["candidates"] = len(candidates)
    seconds, peak, _ = run_measured(["split", str(path), "-o", str(work / "segments")])
    row["split"] = (seconds, peak)
    row["chain_diff"] = chain_diff(path, work / "segments", int8)
    if "attach" in steps:
        write_data(work / "train.npz", TRAIN, shape, seed=0)
        write_data(work / "calib.npz", CALIB, shape, seed=1)
        row["attach"] = run_measured(["attach", str(path), "--data", str(work / "train.npz"), "--exits",
                                      ",".join(candidates[:2]), "--pooling", "gap", "--batch-size", "32",
                                      "-o", str(work / "ee.onnx")])[:2]
        (work / "train.npz").unlink()
        row["calibrate"] = run_measured(["calibrate", str(work / "ee.onnx"), "--data", str(work / "calib.npz"),
                                         "--batch-size", "16", "-o", str(work / "trace.npz")])[:2]
        row["profile"] = run_measured(["profile", str(work / "ee.onnx"), "--device", "cpu-1t", "--time-budget",
                                       "0.1", "-o", str(work / "latency.json")])[:2]
    return row


def quantized_copy(path: Path, out: Path) -> Path:
    """``path`` exported to opset 13, then quantized with quantize_static (QDQ, int8) on 16 random images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from hapi_onnx.export.onnx_export import export_onnx

    float_path = out.with_suffix(".float.onnx")
    export_onnx(path, float_path)  # quantize_static needs opset >= 10
    model = load_model(float_path)
    image = model.graph.input[0]
    shape = [d.dim_value for d in image.type.tensor_type.shape.dim[1:]]
    x = np.random.default_rng(2).standard_normal((16, *shape)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{image.name: x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="Comma-separated model names (default: all nine).")
    parser.add_argument("--int8", action="store_true", help="Also QDQ versions of the two smallest graphs.")
    args = parser.parse_args(argv)
    names = MODELS if args.only is None else tuple(args.only.split(","))
    steps = ("exits", "split", "attach", "calibrate", "profile")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            print(f"[{name}] ...", flush=True)
            rows.append(bench_model(name, ZOO / f"light_{name}.onnx", work, steps))
        if args.int8:
            for name in INT8_MODELS:
                work = Path(tmp) / f"{name}_int8"
                work.mkdir()
                print(f"[{name} int8 QDQ] ...", flush=True)
                path = quantized_copy(ZOO / f"light_{name}.onnx", work / "model.onnx")
                rows.append(bench_model(f"{name} (int8 QDQ)", path, work, steps, int8=True))
    print()
    print("Per step: wall seconds (process start and model load included) / peak RSS MiB of that process.")
    header = f"{'model':<22} {'cands':>5}  {'chain diff':>10}  " + "  ".join(f"{s:>15}" for s in steps)
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for step in steps:
            cells.append(f"{row[step][0]:6.1f}s {row[step][1]:6.0f}M" if step in row else f"{'-':>15}")
        print(f"{row['model']:<22} {row['candidates']:>5}  {row['chain_diff']:10.2e}  " + "  ".join(cells))
    print()
    for row in rows:
        print(f"{row['model']}: {row['graph']}; " + ("; ".join(row["notes"]) or "no normalisation needed"))


if __name__ == "__main__":
    main()
