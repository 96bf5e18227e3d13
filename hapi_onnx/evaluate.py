"""Measure a bundle on held-out data next to the original full model, in one run, same session options.

Latency is per sample at batch 1 (single-stream), as an app calls ``predict``: every block of
samples read from the data is timed as a stream through the bundle and as a stream through the
full model (which goes first alternates block by block, so both see the same machine state over
the run), each after a few untimed calls that bring its weights back into the caches (the bundle's
run every stage); warm-up samples are excluded. Timed one sample each in
turn instead, each model runs with the other's weights in the caches: that read ~10-20% onto the
bundle's stages, which a stream of ``predict`` calls does not pay. Accuracy and the exit histogram
come from the same timed runs. With ``batch_size > 1`` the throughput of whole batches (bundle
with compaction vs full model) is measured too, alternating rounds and keeping the best of each.
"""

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from hapi_onnx.artifact import JsonArtifact
from hapi_onnx.choice import ExitChoice, check_choices
from hapi_onnx.data import DataSource, check_compatible, check_same_classes, check_same_preprocessing, open_dataset
from hapi_onnx.data.images import IMAGE_SUFFIXES, decode_image, image_files
from hapi_onnx.design import valid_positions
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.cut import full_model
from hapi_onnx.exits.layout import METADATA_KEY, ExitLayout
from hapi_onnx.files import file_labels
from hapi_onnx.graph import load_model, model_fingerprint
from hapi_onnx.profile.presets import load_preset
from hapi_onnx.profile.table import TimingStats
from hapi_onnx.profile.timing import stats_from_samples
from hapi_onnx.runtime import EarlyExitModel, Monitor, MonitoredModel, Prediction
from hapi_onnx.runtime.preprocess import Preprocessing
from hapi_onnx.search.latency import mixture_stats


@dataclass(frozen=True)
class ModelMeasure:
    """Another full model measured in the same run as a bundle (another backbone of a joint build).

    Attributes:
        name (str): Its label.
        accuracy (float): Its top-1 accuracy.
        latency (TimingStats): Its per-sample latency at batch 1.
    """

    name: str
    accuracy: float
    latency: TimingStats


@dataclass(frozen=True)
class EvaluationReport(JsonArtifact):
    """A bundle measured on labelled data, next to the full model and the design's prediction.

    Attributes:
        bundle (str): Bundle path.
        device (str): Device preset used for every session.
        num_samples (int): Samples evaluated (all timed at batch 1, warm-up excluded from stats).
        exits (tuple[ExitChoice, ...]): The exits and thresholds in use, ``final`` last.
        exit_counts (list[int]): Samples leaving at each stage.
        accuracy (float): Bundle top-1 accuracy.
        latency (TimingStats): Bundle per-sample latency at batch 1.
        predicted (dict | None): The design's predicted metrics, from the manifest (on the
            calibration split's exits).
        full_accuracy (float | None): Full model top-1 accuracy, if a full model was given.
        full_latency (TimingStats | None): Full model per-sample latency at batch 1.
        batch_size (int): Batch size of the throughput measurement (1: none).
        throughput (dict | None): ``bundle_sps`` and ``full_sps`` (samples/s) at ``batch_size``.
        batch_fixed (bool): The model's graph fixes the batch at 1, so batches ran one sample per
            call (no batch compaction).
        predicted_on_data (dict | None): The design's latency prediction re-computed for the exits
            these samples took (``mean_ms``, ``p50_ms``, ``p90_ms``, ``p99_ms``), so measured/predicted
            compares like with like (:func:`hapi_onnx.search.latency.mixture_stats`); None when the
            design records no per-exit distributions.
        others (tuple[ModelMeasure, ...]): Other full models (not the bundle's) measured beside it.
    """

    KIND = "hapi-onnx evaluation"
    FORMAT_VERSION = 2

    bundle: str
    device: str
    num_samples: int
    exits: tuple[ExitChoice, ...]
    exit_counts: list[int]
    accuracy: float
    latency: TimingStats
    predicted: dict[str, Any] | None
    full_accuracy: float | None
    full_latency: TimingStats | None
    batch_size: int
    throughput: dict[str, float] | None
    batch_fixed: bool = False
    predicted_on_data: dict[str, float] | None = None
    others: tuple[ModelMeasure, ...] = ()

    @property
    def speedup(self) -> float | None:
        """Full-model mean latency / bundle mean latency (measured in the same run)."""
        return None if self.full_latency is None else self.full_latency.mean_ms / self.latency.mean_ms

    @property
    def predicted_mean_ms(self) -> float | None:
        """The design's predicted mean latency, if recorded."""
        return self.predicted_ms("mean")

    def predicted_ms(self, stat: str, on_data: bool = False) -> float | None:
        """The design's predicted latency statistic (``mean``, ``p90``, ...), if recorded: on the
        calibration split's exits, or (``on_data``) on the exits these samples took."""
        value = ((self.predicted_on_data if on_data else self.predicted) or {}).get(f"{stat}_ms")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["speedup"] = self.speedup
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvaluationReport":
        data = {key: value for key, value in data.items() if key != "speedup"}
        full = data["full_latency"]
        return cls(**{
            **data,
            "exits": check_choices(data["exits"]),
            "latency": TimingStats(**data["latency"]),
            "full_latency": None if full is None else TimingStats(**full),
            "others": tuple(ModelMeasure(o["name"], o["accuracy"], TimingStats(**o["latency"]))
                            for o in data.get("others", ())),
        })

    def lines(self) -> list[str]:
        """Human-readable summary."""
        lat = self.latency
        out = [
            f"bundle {self.bundle} on {self.device}: {self.num_samples} samples",
            f"  accuracy        {self.accuracy:.4f}"
            + ("" if self.full_accuracy is None else f"   (full model {self.full_accuracy:.4f}, "
               f"drop {100 * (self.full_accuracy - self.accuracy):+.2f} pts)"),
            "  exits           " + ", ".join(
                f"{e.name} {c} ({100 * c / self.num_samples:.1f}%)"
                for e, c in zip(self.exits, self.exit_counts, strict=True)
            ),
            f"  latency (ms)    mean {lat.mean_ms:.3f}  p50 {lat.p50_ms:.3f}  p90 {lat.p90_ms:.3f}  "
            f"p99 {lat.p99_ms:.3f}   [batch 1, measured]",
        ]
        if self.full_latency is not None:
            full = self.full_latency
            out.append(
                f"  full model (ms) mean {full.mean_ms:.3f}  p50 {full.p50_ms:.3f}  p90 {full.p90_ms:.3f}  "
                f"p99 {full.p99_ms:.3f}   -> speed-up x{self.speedup:.2f} (mean)"
            )
        for other in self.others:
            o = other.latency
            out.append(
                f"  {other.name} (ms) mean {o.mean_ms:.3f}  p50 {o.p50_ms:.3f}  p90 {o.p90_ms:.3f}  p99 {o.p99_ms:.3f}"
                f"   accuracy {other.accuracy:.4f}   [another full model; bundle x{o.mean_ms / lat.mean_ms:.2f} "
                "faster (mean)]"
            )
        stats = [s for s in ("mean", "p90", "p99") if self.predicted_ms(s)]
        if stats:
            acc = (self.predicted or {}).get("accuracy")
            values = "  ".join(f"{s} {self.predicted_ms(s):.3f}" for s in stats)
            ratios = ", ".join(f"{s} {lat.stat(s) / self.predicted_ms(s):.3f}" for s in stats)
            out.append(
                f"  predicted (ms)  {values}  (measured/predicted {ratios}; on the calibration split's exits)"
                + (f", accuracy {acc:.4f}" if isinstance(acc, int | float) else "")
            )
        if self.predicted_on_data is not None:
            values = "  ".join(f"{s} {self.predicted_ms(s, True):.3f}" for s in ("mean", "p90", "p99"))
            ratios = ", ".join(f"{s} {lat.stat(s) / self.predicted_ms(s, True):.3f}" for s in ("mean", "p90", "p99"))
            out.append(f"  on these exits  {values}  (measured/predicted {ratios}; the same prediction "
                       "for the exits these samples took)")
        if self.throughput is not None:
            tp = self.throughput
            out.append(
                f"  throughput      batch {self.batch_size}: bundle {tp['bundle_sps']:.0f}/s"
                + ("" if tp.get("full_sps") is None else
                   f", full {tp['full_sps']:.0f}/s (x{tp['bundle_sps'] / tp['full_sps']:.2f})")
            )
        if self.batch_fixed:
            out.append("  batch           fixed at 1 by the model's graph: batch compaction off, one sample per call")
        return out


def full_model_bytes(source: str | os.PathLike | onnx.ModelProto) -> bytes:
    """The original classifier as one ONNX graph: input -> final output.

    Args:
        source: An over-provisioned model (the heads are cut away) or a plain ONNX model. Not
            checked against any bundle: :func:`evaluate_bundle` uses :func:`full_model_for_bundle`.

    Raises:
        HapiError: when the file is missing or not a valid ONNX image classifier.
    """
    model = load_model(source)
    if METADATA_KEY not in {p.key for p in model.metadata_props}:
        return model.SerializeToString()
    return full_model(model, ExitLayout.from_model(model)).model.SerializeToString()


def full_model_for_bundle(
    source: str | os.PathLike | onnx.ModelProto, provenance: dict[str, Any]
) -> bytes:
    """The classifier a bundle was built from, as one ONNX graph: input -> final output.

    The model must be the one the bundle records in its manifest's provenance: the EE model
    (``ee_model_fingerprint``; its layout names the final output) or the source backbone
    (``source_fingerprint``; its classifier is its only output). Fingerprints are taken after
    :func:`~hapi_onnx.graph.load_model`, as ``attach`` and the bundle writer take them.

    Args:
        source (str | PathLike | onnx.ModelProto): The EE model or the source model.
        provenance (dict): The bundle manifest's ``provenance``.

    Returns:
        bytes: The serialised single-output classifier.

    Raises:
        HapiError: when the model is neither of the bundle's models, or is the source model with
            several outputs (pass the EE model then: its layout names the classifier).
    """
    model = load_model(source)
    fingerprint = model_fingerprint(model)
    ee_print, source_print = provenance.get("ee_model_fingerprint"), provenance.get("source_fingerprint")
    if not ee_print and not source_print:
        raise HapiError(
            "The bundle records no model fingerprints in its manifest's provenance, so the full model "
            "cannot be checked against it. Rebuild the bundle with `hapi-onnx bundle`, or evaluate "
            "without --full-model."
        )
    if fingerprint == ee_print:
        return full_model(model, ExitLayout.from_model(model)).model.SerializeToString()
    if fingerprint == source_print:
        outputs = [o.name for o in model.graph.output]
        if len(outputs) != 1:
            raise HapiError(
                f"The full model is the bundle's source model, but it has {len(outputs)} outputs {outputs} "
                "and the bundle does not say which is the classifier. Pass the early-exit model it was "
                "built from instead (attach's output, e.g. WORKDIR/ee.onnx): its layout names it."
            )
        return model.SerializeToString()
    raise HapiError(
        f"The full model (fingerprint {fingerprint[:12]}) is not the model this bundle was built from: "
        f"the bundle was built from the early-exit model with fingerprint {str(ee_print)[:12]}, attached to "
        f"the source model with fingerprint {str(source_print)[:12]} (sha256 of the model after "
        "hapi_onnx.graph.load_model). Pass that source model or that early-exit model as --full-model."
    )


def evaluate_bundle(
    bundle_path: str | os.PathLike,
    data: DataSource | str | os.PathLike,
    device: str = "cpu-1t",
    full_model: "str | os.PathLike | onnx.ModelProto | Sequence | Mapping[str, Any] | None" = None,
    batch_size: int = 1,
    warmup: int = 20,
    progress: Callable[[int, int], None] | None = None,
    preprocessing: Preprocessing | str | dict | None = None,
) -> EvaluationReport:
    """Measure a bundle's accuracy, exits and latency, and the full model's, in one run.

    Args:
        bundle_path (PathLike): ``MODEL.hapi`` or ``MODEL.hapi.zip``.
        data (DataSource | PathLike): Labelled held-out data (never the data thresholds were
            searched on), or the path of an ``.npz`` or an image folder.
        device (str): Device preset name or file; its providers and session options are used
            for the bundle's stages and for the full model alike. Defaults to ``cpu-1t``.
        full_model (PathLike | onnx.ModelProto): The over-provisioned model the bundle was
            built from, or its source model, for the side-by-side numbers (checked against the
            manifest's fingerprints, see :func:`full_model_for_bundle`). Defaults to none
            (bundle only). Several (a list, or a dict by name): the one the bundle was built from is
            its full model; every other one is measured beside it as another full model (a joint
            build's other backbones: same input and classes).
        batch_size (int): Also measure throughput at this batch size when > 1. Defaults to 1.
        warmup (int): Leading samples run but left out of the latency statistics. Defaults to 20.
        progress (callable): Called with (done, total) samples. Defaults to none.
        preprocessing (Preprocessing | str | dict | None): Spec for a ``data`` path. Defaults to
            None: the bundle's (a different one is refused).

    Returns:
        EvaluationReport: Measured numbers next to the design's prediction.

    Raises:
        HapiError: when the data has no labels, does not fit the bundle, is preprocessed
            differently or names other classes than the bundle, the bundle or full model is
            invalid, the full model is not the one the bundle was built from, or the device preset
            is unknown or unavailable.
    """
    preset = load_preset(device)
    preset.check_providers()
    model = EarlyExitModel.load(
        bundle_path,
        providers=preset.provider_names,
        session_options=preset.session_options(),
        provider_options=preset.provider_options,
    )
    data = data_for_bundle(model, data, preprocessing, "test data")
    full, others = None, {}
    if isinstance(full_model, Sequence) and not isinstance(full_model, str):
        full_model = dict(zip(file_labels(full_model), full_model, strict=True))
    if isinstance(full_model, Mapping):
        named = full_model
        for name, source in named.items():
            graph, own = _full_or_other(source, model)
            if own and full is None:
                full = preset.create_session(graph)
            else:
                others[name] = preset.create_session(graph)
    elif full_model is not None:
        full = preset.create_session(full_model_for_bundle(full_model, model.manifest.provenance))
    return measure(model, data, full, str(bundle_path), preset.name, batch_size, warmup, progress, others)


def _full_or_other(source: str | os.PathLike | onnx.ModelProto, model: EarlyExitModel) -> tuple[bytes, bool]:
    """A full model's single-output graph, and whether it is the one ``model`` was built from.

    Raises:
        HapiError: when another model does not take the bundle's input or has another class count.
    """
    provenance = model.manifest.provenance
    prints = {provenance.get("ee_model_fingerprint"), provenance.get("source_fingerprint")} - {None}
    if model_fingerprint(load_model(source)) in prints:
        return full_model_for_bundle(source, provenance), True
    graph = full_model_bytes(source)
    other = onnx.load_from_string(graph)
    shape = [d.dim_value if d.HasField("dim_value") else None for d in other.graph.input[0].type.tensor_type.shape.dim]
    bundle_shape = list(model.manifest.input.shape)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in other.graph.output[0].type.tensor_type.shape.dim]
    fits = len(shape) == len(bundle_shape) and all(a is None or b is None or a == b
                                                   for a, b in zip(shape[1:], bundle_shape[1:], strict=True))
    if not fits or len(dims) != 2 or dims[1] != model.manifest.num_classes:
        name = source if isinstance(source, (str, os.PathLike)) else "a full model"
        raise HapiError(
            f"{str(name)!r} is not the bundle's model and does not take its input {bundle_shape} with "
            f"{model.manifest.num_classes} classes (it takes {shape}, gives {dims}); another full model measured "
            "beside a bundle must fit the same test data."
        )
    return graph, False


def data_for_bundle(
    model: EarlyExitModel, data: DataSource | str | os.PathLike,
    preprocessing: Preprocessing | str | dict | None = None, role: str = "test data",
) -> DataSource:
    """``data`` opened (a path) with the bundle's spec and fitted to its input; spec and classes checked.

    Raises:
        HapiError: when the data does not fit the bundle's input, is preprocessed differently, or
            names other classes than the bundle's labels.
    """
    spec = model.manifest.preprocessing
    if preprocessing is None and not isinstance(data, DataSource):
        preprocessing = spec
    data = open_dataset(data, preprocessing).fit_to(model.manifest.input.shape, "the bundle")
    check_same_preprocessing(spec, data, "the bundle", role)
    check_same_classes(model.labels, data, "the bundle's labels", role)
    return data


def measure(
    model: EarlyExitModel,
    data: DataSource,
    full: ort.InferenceSession | None,
    bundle: str = "",
    device: str = "",
    batch_size: int = 1,
    warmup: int = 20,
    progress: Callable[[int, int], None] | None = None,
    others: dict[str, ort.InferenceSession] | None = None,
) -> EvaluationReport:
    """The measurement behind :func:`evaluate_bundle`, on an already loaded model and session.

    The data is read in batches; each sample is timed on its own (batch 1). Benchmarks call it
    with variants such as ``model.force_full_path()``.
    """
    if data.y is None:
        raise HapiError(
            "evaluate needs labelled data: the dataset has no 'y'. Save it with np.savez(path, x=..., y=...)."
        )
    if batch_size < 1:
        raise HapiError(f"batch_size must be >= 1. Got {batch_size!r} instead.")
    check_compatible(data, model.manifest.input.shape, model.manifest.num_classes)
    y = data.y
    n = len(data)
    run_full = _full_runner(full, model.manifest.num_classes) if full is not None else None
    run_others = {name: _full_runner(s, model.manifest.num_classes) for name, s in (others or {}).items()}
    other_classes = {name: np.empty(len(data), dtype=np.int64) for name in run_others}
    other_ns = {name: np.empty(len(data), dtype=np.int64) for name in run_others}
    warmup = min(warmup, max(n - 1, 0))
    classes = np.empty(n, dtype=np.int64)
    exits = np.empty(n, dtype=np.int64)
    full_classes = np.empty(n, dtype=np.int64)
    bundle_ns = np.empty(n, dtype=np.int64)
    full_ns = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    # The bundle's warm-up runs every stage: most samples leave at the first stage, so warming up
    # with predict would leave the deeper stages as the full model's stream left the caches.
    warm_bundle = model.force_full_path().predict
    i = 0
    if progress is not None:
        progress(0, n)
    for block, chunk in enumerate(data.batches(_READ_BATCH)):
        if i == 0:
            model.predict(chunk[:1])  # validates the input shape against the manifest, with a clear message
        rows = range(i, i + len(chunk))
        streams = [("bundle", model.predict, warm_bundle)]
        streams += [("full", run_full, run_full)] if run_full is not None else []
        streams += [(("other", name), run, run) for name, run in run_others.items()]  # never "bundle"/"full"
        for name, call, warm in streams[:: 1 if block % 2 == 0 else -1]:
            for r in range(min(_STREAM_WARMUP, len(chunk))):  # untimed: this model's weights back in the caches
                warm(chunk[r : r + 1])
            for r, k in enumerate(rows):
                xi = chunk[r : r + 1]
                t0 = clock()
                out = call(xi)
                elapsed = clock() - t0
                if name == "bundle":
                    bundle_ns[k] = elapsed
                    classes[k], exits[k] = out.classes[0], out.exit_index[0]
                elif name == "full":
                    full_ns[k] = elapsed
                    full_classes[k] = out[0]
                else:
                    other_ns[name[1]][k] = elapsed
                    other_classes[name[1]][k] = out[0]
        i += len(chunk)
        if progress is not None:
            progress(i, n)
    throughput = None
    if batch_size > 1:
        throughput = _throughput(model, run_full, data, batch_size)
    exit_counts = np.bincount(exits, minlength=model.num_stages).tolist()
    return EvaluationReport(
        bundle=bundle,
        device=device,
        num_samples=n,
        exits=model.exits,
        exit_counts=exit_counts,
        accuracy=float((classes == y).mean()),
        latency=stats_from_samples(bundle_ns[warmup:], warmup),
        predicted=(model.manifest.design or {}).get("predicted"),
        full_accuracy=None if run_full is None else float((full_classes == y).mean()),
        full_latency=None if run_full is None else stats_from_samples(full_ns[warmup:], warmup),
        batch_size=batch_size,
        throughput=throughput,
        batch_fixed=model.manifest.input.batch_fixed,
        predicted_on_data=_predicted_on(model, exit_counts),
        others=tuple(ModelMeasure(name, float((other_classes[name] == y).mean()),
                                  stats_from_samples(other_ns[name][warmup:], warmup)) for name in run_others),
    )


def _predicted_on(model: EarlyExitModel, exit_counts: list[int]) -> dict[str, float] | None:
    """The design's latency prediction for samples leaving at the bundle's exits in ``exit_counts``,
    from its per-exit distributions (None when the bundle's design records none)."""
    positions = ((model.manifest.design or {}).get("predicted") or {}).get("positions")
    if not valid_positions(positions, model.num_stages) or [p.get("exit") for p in positions] != list(model.exit_names):
        return None
    return mixture_stats(positions, exit_counts)


_READ_BATCH = 64  # samples read from the data at a time by measure: one timed stream per model
_STREAM_WARMUP = 3  # untimed calls before each stream


def _full_runner(session: ort.InferenceSession, num_classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> int64[N]`` top-1 classes of the full model (its first output, argmax over axis 1).

    The session comes from :func:`full_model_for_bundle` or :func:`full_model_bytes`, whose
    graphs have the classifier as their first output.
    """
    input_name = session.get_inputs()[0].name
    output = session.get_outputs()[0].name
    one_per_call = session.get_inputs()[0].shape[0] == 1  # the graph fixes the batch at 1

    def run(x: np.ndarray) -> np.ndarray:
        if one_per_call and len(x) > 1:
            return np.concatenate([run(x[i : i + 1]) for i in range(len(x))])
        scores = session.run([output], {input_name: x})[0]
        if scores.ndim != 2 or scores.shape[1] != num_classes:
            raise HapiError(
                f"The full model's first output {output!r} must be scores of shape (N, {num_classes}). "
                f"Got {scores.shape} instead. Pass the model the bundle was built from."
            )
        return scores.argmax(axis=1)

    return run


def _throughput(model, run_full, data: DataSource, batch_size: int, rounds: int = 3) -> dict[str, float]:
    """Samples/s over whole batches, best of ``rounds`` alternating rounds (reading the data is not timed)."""
    best = {"bundle": float("inf"), "full": float("inf")}
    for _ in range(rounds):
        for name in ("bundle", "full"):
            if name == "full" and run_full is None:
                continue
            call = model.predict if name == "bundle" else run_full
            spent = 0
            for batch in data.batches(batch_size):
                t0 = time.perf_counter_ns()
                call(batch)
                spent += time.perf_counter_ns() - t0
            best[name] = min(best[name], spent)
    result = {"bundle_sps": len(data) / (best["bundle"] / 1e9)}
    result["full_sps"] = None if run_full is None else len(data) / (best["full"] / 1e9)
    return result


def predict_file(
    bundle_path: str | os.PathLike, input_path: str | os.PathLike, device: str | None = None
) -> tuple[EarlyExitModel, Prediction, list[str] | None]:
    """Run a bundle on an ``.npy``/``.npz`` file, an image file or a folder of images (``hapi-onnx run``).

    Arrays are the model's input already; images are decoded with Pillow and preprocessed with
    the bundle's spec (:meth:`EarlyExitModel.preprocess`), in batches.

    Args:
        bundle_path (PathLike): ``MODEL.hapi`` or ``MODEL.hapi.zip``.
        input_path (PathLike): ``.npy`` (images) or ``.npz`` (key ``x``) of the model's input; or
            an image file, or a folder searched recursively for images.
        device (str): Device preset for the sessions. Defaults to ONNX Runtime's CPU defaults.

    Returns:
        tuple[EarlyExitModel, Prediction, list[str] | None]: The loaded model (exit names, labels),
        its predictions, and the image paths in prediction order (None for arrays).

    Raises:
        HapiError: when the bundle or the input is invalid or does not fit the bundle, or images
            are given to a bundle without a preprocessing spec.
    """
    model = _load_bundle(bundle_path, device)
    batches, names = _input_batches(model, input_path)
    return model, Prediction.join([model.predict(batch) for batch in batches]), names


def monitor_file(
    bundle_path: str | os.PathLike, input_path: str | os.PathLike, monitor: Monitor, device: str | None = None
) -> tuple[MonitoredModel, Prediction, list[str] | None]:
    """Run a bundle with the drift monitor on a stream, in order, one sample at a time (``hapi-onnx run --monitor``).

    Audits run inline (``monitor.background`` is ignored), so the run is reproducible: the same
    stream and seed give the same predictions and the same moves along the path.

    Args:
        bundle_path, input_path, device: As for :func:`predict_file`.
        monitor (Monitor): The monitor's settings.

    Returns:
        tuple[MonitoredModel, Prediction, list[str] | None]: The model (its
        ``position_changes()`` and ``monitor_state()``), the predictions, the image paths.

    Raises:
        HapiError: as :func:`predict_file`, or when the bundle records no budget and none is given.
    """
    model = _load_bundle(bundle_path, device, replace(monitor, background=False))
    batches, names = _input_batches(model, input_path)
    return model, Prediction.join([model.predict(b[i : i + 1]) for b in batches for i in range(len(b))]), names


def _load_bundle(bundle_path, device: str | None, monitor: Monitor | None = None) -> EarlyExitModel:
    if device is None:
        return EarlyExitModel.load(bundle_path, monitor=monitor)
    preset = load_preset(device)
    preset.check_providers()
    return EarlyExitModel.load(
        bundle_path, providers=preset.provider_names, session_options=preset.session_options(),
        provider_options=preset.provider_options, monitor=monitor,
    )


def _input_batches(model: EarlyExitModel, input_path) -> tuple[Any, list[str] | None]:
    """The input's batches (lazily) and the image paths (None for arrays)."""
    path = Path(input_path)
    if path.exists() and not (path.is_dir() or path.is_file()):  # a FIFO, socket or device: reading could block
        raise HapiError(f"input {str(path)!r} is not a regular file or a folder.")
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = image_files(path) if path.is_dir() else [path]
        if not files:
            raise HapiError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r}.")
        batches = (model.preprocess([decode_image(f) for f in files[a : a + 64]]) for a in range(0, len(files), 64))
        return batches, [str(f) for f in files]
    return open_dataset(path).batches(256), None


