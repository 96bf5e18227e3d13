"""Write a staged early-exit bundle: ``MODEL.hapi/`` (manifest.json + stages/*.onnx) or one zip file."""

import datetime
import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from hapi_onnx import __version__
from hapi_onnx.bundle.stages import StageGraph, stage_graphs
from hapi_onnx.choice import FINAL, ExitChoice, check_choices
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.input_record import InputRecord
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.files import atomic_output
from hapi_onnx.graph import input_spec, load_model, model_fingerprint
from hapi_onnx.graph.decision import CLASS_OUTPUT, CONFIDENCE_OUTPUT, PROBS_OUTPUT
from hapi_onnx.runtime.archive import BundleContents, read_bundle
from hapi_onnx.runtime.manifest import MANIFEST_NAME, CertifiedPath, InputSpec, Manifest, StageSpec
from hapi_onnx.runtime.preprocess import Preprocessing

if TYPE_CHECKING:
    from hapi_onnx.design import Design


def bundle_contents(
    stages: Sequence[StageGraph],
    exits: Sequence[ExitChoice],
    num_classes: int,
    *,
    labels: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
    design: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    path: CertifiedPath | None = None,
) -> BundleContents:
    """A bundle in memory: each stage graph serialised and hashed, and the manifest that wires them.

    :class:`~hapi_onnx.runtime.EarlyExitModel.from_contents` runs it as it is; :func:`write_bundle`
    writes it to disk.

    Args:
        stages (Sequence[StageGraph]): The stage graphs, in execution order.
        exits (Sequence[ExitChoice]): One per stage, same names, the final classifier last.
        num_classes (int): Number of classes.
        labels (Sequence[str] | None): Class names, one per class. Defaults to none.
        preprocessing (Preprocessing | None): How pixels become the input, resolved for it (see
            :func:`bundle_preprocessing`). Defaults to none.
        design (dict | None): Summary of the design shipped (predicted metrics, constraints, ...).
        provenance (dict | None): Where the bundle comes from. Defaults to the versions and time.
        path (CertifiedPath | None): The certified path to this design (its last step is the
            exits' thresholds), for the runtime's drift monitor. Defaults to none.

    Raises:
        HapiError: when the exits do not name the stages, the labels do not match the classes,
            or the path does not end at the exits' thresholds.
    """
    exits = check_choices(exits)
    if [c.name for c in exits] != [s.name for s in stages]:
        raise HapiError(
            f"The exits {[c.name for c in exits]!r} must name the stages {[s.name for s in stages]!r}, in order."
        )
    labels = _check_labels(labels, num_classes)
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise HapiError(f"preprocessing must be a Preprocessing spec (or None). Got {preprocessing!r} instead.")
    blobs, specs = [], []
    for j, (stage, choice) in enumerate(zip(stages, exits, strict=True)):
        blob = stage.model.SerializeToString()
        blobs.append(blob)
        specs.append(StageSpec(
            exit=choice,
            file=f"stages/{j:02d}_{_file_stem(stage.name)}.onnx",
            sha256=hashlib.sha256(blob).hexdigest(),
            size=len(blob),
            input=stage.input,
            carried=stage.carried,
            class_output=CLASS_OUTPUT,
            confidence_output=CONFIDENCE_OUTPUT,
            probs_output=PROBS_OUTPUT,
        ))
    image = input_spec(stages[0].model)
    manifest = Manifest(
        input=InputSpec(
            name=image.name,
            shape=tuple(d if isinstance(d, int) else None for d in image.shape),
            dtype=image.dtype,
        ),
        num_classes=num_classes,
        stages=tuple(specs),
        labels=labels,
        preprocessing=preprocessing,
        design=design,
        provenance={
            "hapi_onnx_version": __version__,
            "onnx_version": onnx.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **(provenance or {}),
        },
        path=path,
    )
    manifest = Manifest.from_dict(manifest.to_dict())  # the writer obeys the schema the runtime reads
    return BundleContents(manifest=manifest, stage_bytes=tuple(blobs))


def write_bundle(
    ee_model: str | os.PathLike | onnx.ModelProto,
    exits: Sequence[ExitChoice],
    out_path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    preprocessing: Preprocessing | str | dict[str, Any] | None = None,
    design: dict[str, Any] | None = None,
    path: CertifiedPath | None = None,
    zip: bool = False,
) -> Path:
    """Package the chosen exits of an over-provisioned model as a staged bundle.

    Args:
        ee_model (str | PathLike | onnx.ModelProto): The over-provisioned model (``attach``'s
            output); not modified.
        exits (Sequence[ExitChoice]): The exits to keep in graph order with their thresholds, the
            final classifier last (:mod:`hapi_onnx.choice`).
        out_path (PathLike): ``MODEL.hapi`` (a directory) or ``MODEL.hapi.zip`` (one file).
        labels (list[str]): Class names, one per class. Defaults to the class names ``attach``
            recorded in the model (from its training data), if any.
        preprocessing (Preprocessing | str | dict): How pixels become the input: a spec, a preset
            name or a spec dict, resolved for the model's input. Defaults to the spec ``attach``
            recorded (see :func:`bundle_preprocessing`); a different one is refused.
        design (dict): Summary of the design shipped (predicted metrics, constraints, fingerprints),
            stored in the manifest. Defaults to none.
        path (CertifiedPath | None): The certified path to this design (see
            :func:`bundle_contents`). Defaults to none.
        zip (bool): Write a single zip file even if ``out_path`` does not end in ``.zip``.
            Defaults to False.

    Returns:
        Path: The bundle written (replaced atomically if it existed).

    Raises:
        HapiError: when the model has no exit layout, an exit is unknown or out of order, a
            threshold breaks the rule, the labels do not match the classes, or the preprocessing
            does not fit the model or differs from attach's.
    """
    model = load_model(ee_model)
    layout = ExitLayout.from_model(model)
    record = InputRecord.from_model(model)
    if labels is None and record.classes is not None and len(record.classes) == layout.num_classes:
        labels = record.classes
    preprocessing = bundle_preprocessing(model, preprocessing)
    exits = check_choices(exits)
    if exits[-1].name != FINAL:
        raise HapiError(f"The last exit of a bundle is the final classifier {FINAL!r}. Got {exits[-1].name!r}.")
    stages = stage_graphs(model, layout, [c.name for c in exits[:-1]])
    contents = bundle_contents(
        stages, exits, layout.num_classes, labels=labels, preprocessing=preprocessing, design=design, path=path,
        provenance={"source_fingerprint": layout.source_fingerprint, "ee_model_fingerprint": model_fingerprint(model),
                    **({"precision": layout.precision} if layout.precision else {})},
    )
    out = Path(out_path)
    as_zip = zip or out.name.endswith(".zip")
    files = {MANIFEST_NAME: contents.manifest.to_json().encode()}
    files.update({spec.file: contents.stage_bytes[j] for j, spec in enumerate(contents.manifest.stages)})
    with atomic_output(out, directory=not as_zip, kind="bundle") as tmp:
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


def bundle_preprocessing(
    model: onnx.ModelProto, preprocessing: Preprocessing | str | dict[str, Any] | None = None
) -> Preprocessing | None:
    """The spec a bundle of ``model`` records: ``preprocessing`` resolved for its input, or attach's.

    Args:
        model (onnx.ModelProto): The over-provisioned model.
        preprocessing (Preprocessing | str | dict | None): A spec, preset name or spec dict.
            Defaults to None: the one recorded by ``attach`` (None if it recorded none).

    Raises:
        HapiError: when the spec is invalid or does not fit the model's input, or differs from the
            one the heads were fitted with.
    """
    recorded = InputRecord.from_model(model).preprocessing
    given = Preprocessing.from_value(preprocessing)
    if given is None:
        return recorded
    resolved = given.for_input(input_spec(model).shape)
    if recorded is not None and resolved != recorded:
        diff = ", ".join(f"{k} {v!r} instead of {recorded.to_dict()[k]!r}"
                         for k, v in resolved.to_dict().items() if v != recorded.to_dict()[k])
        raise HapiError(
            f"The preprocessing given for the bundle differs from the one its heads were fitted with ({diff}). "
            "Leave it out to record the attach step's spec, or attach again with this one."
        )
    return resolved


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
    return stem or "stage"


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
    preprocessing: Preprocessing | str | dict[str, Any] | None = None,
    zip: bool = False,
) -> Path:
    """Bundle a searched design: its exits and thresholds, with its predictions and certified path in the manifest.

    Args:
        ee_model (str | PathLike | onnx.ModelProto): The over-provisioned model the design was
            searched on (its fingerprint must match the design's).
        design (Design | PathLike): The design, or the path of ``design.json``.
        out_path (PathLike): ``MODEL.hapi`` or ``MODEL.hapi.zip``.
        labels (list[str]): Class names. Defaults to attach's (see :func:`write_bundle`).
        preprocessing (Preprocessing | str | dict): Input spec. Defaults to the one ``attach``
            recorded (see :func:`write_bundle`).
        zip (bool): Write one zip file. Defaults to False.

    Raises:
        HapiError: when the design was made for another model, or anything :func:`write_bundle` refuses.
    """
    from hapi_onnx.design import Design

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
        "predicted": design.predicted,
        "policy": design.policy,
        "device": design.device,
        "constraints": design.constraints.to_dict(),
        "reference": design.reference,
        "trace_fingerprint": design.trace_fingerprint,
        "latency_fingerprint": design.latency_fingerprint,
        "model_fingerprint": design.model_fingerprint,
    }
    steps = (design.search.get("guarantee") or {}).get("path")
    c = design.constraints
    path = CertifiedPath(steps=tuple(map(tuple, steps)), budget_pp=c.max_accuracy_drop, reference=c.reference,
                         level=c.bound_level) if steps else None
    return write_bundle(model, design.exits, out_path, labels=labels, preprocessing=preprocessing,
                        design=summary, path=path, zip=zip)
