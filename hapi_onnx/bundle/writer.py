"""Write a staged early-exit bundle: ``MODEL.hapi/`` (manifest.json + stages/*.onnx) or one zip file."""

import datetime
import hashlib
import math
import numbers
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from hapi_onnx import __version__
from hapi_onnx.bundle.stages import CLASS_OUTPUT, CONFIDENCE_OUTPUT, PROBS_OUTPUT, stage_graphs
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.files import atomic_output
from hapi_onnx.graph import input_spec, load_model, model_fingerprint
from hapi_onnx.runtime.archive import read_bundle
from hapi_onnx.runtime.manifest import MANIFEST_NAME, InputSpec, Manifest, StageSpec

if TYPE_CHECKING:
    from hapi_onnx.search.design import Design


def write_bundle(
    ee_model: str | os.PathLike | onnx.ModelProto,
    exits: Sequence[str],
    thresholds: Sequence[float],
    out_path: str | os.PathLike,
    predicted: dict[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    zip: bool = False,
    design: dict[str, Any] | None = None,
) -> Path:
    """Package kept exits and thresholds of an over-provisioned model as a staged bundle.

    Args:
        ee_model (str | PathLike | onnx.ModelProto): The over-provisioned model (``attach``'s
            output); not modified.
        exits (list[str]): Kept exits in graph order; a trailing ``"final"`` is optional.
        thresholds (list[float]): Confidence threshold of each kept intermediate exit.
        out_path (PathLike): ``MODEL.hapi`` (a directory) or ``MODEL.hapi.zip`` (one file).
        predicted (dict): Predicted metrics of the design (accuracy, mean_ms, p50_ms, ...),
            stored in the manifest's design summary. Defaults to none.
        labels (list[str]): Class names, one per class. Defaults to none.
        preprocessing (dict): Free-form description of the expected input. Defaults to none.
        zip (bool): Write a single zip file even if ``out_path`` does not end in ``.zip``.
            Defaults to False.
        design (dict): Extra design summary fields (constraints, fingerprints). Defaults to none.

    Returns:
        Path: The bundle written (replaced atomically if it existed).

    Raises:
        HapiError: when the model has no exit layout, an exit is unknown or out of order, the
            thresholds do not match the exits, or the labels do not match the classes.
    """
    model = load_model(ee_model)
    layout = ExitLayout.from_model(model)
    kept = list(exits)
    if kept and kept[-1] == "final":
        kept = kept[:-1]
    if "final" in kept:
        raise HapiError(f"'final' must be the last exit. Got exits {list(exits)!r}.")
    thresholds = _check_thresholds(thresholds, kept)
    labels = _check_labels(labels, layout.num_classes)
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise HapiError(f"preprocessing must be a dict (or None). Got {preprocessing!r} instead.")

    stages = stage_graphs(model, layout, kept)
    blobs, specs = [], []
    for j, stage in enumerate(stages):
        blob = stage.model.SerializeToString()
        blobs.append(blob)
        specs.append(StageSpec(
            name=stage.name,
            file=f"stages/{j:02d}_{_file_stem(stage.name)}.onnx",
            sha256=hashlib.sha256(blob).hexdigest(),
            input=stage.input,
            carried=stage.carried,
            class_output=CLASS_OUTPUT,
            confidence_output=CONFIDENCE_OUTPUT,
            probs_output=PROBS_OUTPUT,
            threshold=thresholds[j] if j < len(kept) else None,
        ))
    image = input_spec(model)
    summary = {"exits": kept + ["final"], "thresholds": thresholds, "predicted": predicted, **(design or {})}
    manifest = Manifest(
        input=InputSpec(
            name=image.name,
            shape=tuple(d if isinstance(d, int) else None for d in image.shape),
            dtype=image.dtype,
        ),
        num_classes=layout.num_classes,
        stages=tuple(specs),
        labels=labels,
        preprocessing=preprocessing,
        design=summary,
        provenance={
            "source_fingerprint": layout.source_fingerprint,
            "ee_model_fingerprint": model_fingerprint(model),
            "hapi_onnx_version": __version__,
            "onnx_version": onnx.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    manifest = Manifest.from_dict(manifest.to_dict())  # the writer obeys the schema the runtime reads
    out = Path(out_path)
    as_zip = zip or out.name.endswith(".zip")
    files = {MANIFEST_NAME: manifest.to_json().encode()}
    files.update({spec.file: blobs[j] for j, spec in enumerate(specs)})
    with atomic_output(out, directory=not as_zip, marker=MANIFEST_NAME) as tmp:
        if as_zip:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for name, data in files.items():
                    archive.writestr(name, data)
        else:
            (tmp / "stages").mkdir()
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        read_bundle(tmp)  # verify before it replaces anything
    return out


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return stem or "stage"


def _check_thresholds(thresholds: Sequence[float], kept: list[str]) -> list[float]:
    values = list(thresholds)
    ok = len(values) == len(kept) and all(
        isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t) for t in values
    )
    if not ok:
        raise HapiError(
            f"thresholds must be {len(kept)} finite numbers, one per kept intermediate exit {kept!r}. "
            f"Got {values!r} instead."
        )
    return [float(t) for t in values]


def _check_labels(labels: Sequence[str] | None, num_classes: int) -> tuple[str, ...] | None:
    if labels is None:
        return None
    labels = tuple(labels)
    if len(labels) != num_classes or not all(isinstance(x, str) for x in labels):
        raise HapiError(f"labels must be {num_classes} strings, one per class. Got {list(labels)!r} instead.")
    return labels


def bundle_from_design(
    ee_model: str | os.PathLike | onnx.ModelProto,
    design: "Design | str | os.PathLike",
    out_path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    zip: bool = False,
) -> Path:
    """Bundle a searched design: its exits and thresholds, with its predictions in the manifest.

    Args:
        ee_model (str | PathLike | onnx.ModelProto): The over-provisioned model the design was
            searched on (its fingerprint must match the design's).
        design (Design | PathLike): The design, or the path of ``design.json``.
        out_path (PathLike): ``MODEL.hapi`` or ``MODEL.hapi.zip``.
        labels (list[str]): Class names. Defaults to none.
        preprocessing (dict): Free-form input description. Defaults to none.
        zip (bool): Write one zip file. Defaults to False.

    Raises:
        HapiError: when the design was made for another model, or anything :func:`write_bundle` refuses.
    """
    from hapi_onnx.search.design import Design

    if not isinstance(design, Design):
        design = Design.load(design)
    model = load_model(ee_model)
    fingerprint = model_fingerprint(model)
    if design.model_fingerprint != fingerprint:
        raise HapiError(
            f"The design was searched on another model (fingerprint {design.model_fingerprint[:12]}...), "
            f"not this one ({fingerprint[:12]}...). Bundle the early-exit model the trace and latency "
            "table were taken on, or search again on this one."
        )
    summary = {
        "policy": design.policy,
        "device": design.device,
        "objective": design.objective,
        "latency_stat": design.latency_stat,
        "constraints": design.constraints,
        "reference": design.reference,
        "trace_fingerprint": design.trace_fingerprint,
        "latency_fingerprint": design.latency_fingerprint,
        "model_fingerprint": design.model_fingerprint,
    }
    return write_bundle(
        model, design.exits, design.thresholds, out_path, predicted=design.predicted, labels=labels,
        preprocessing=preprocessing, zip=zip, design=summary,
    )
