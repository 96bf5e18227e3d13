"""Calibration: one ORT pass of the over-provisioned model over a labelled set -> a Trace.

Every exit's top-1 class, max-softmax confidence and top-1/top-2 margin are recorded for every
sample, the final classifier last. Heads on a frozen backbone do not depend on each other, so
the search can later score any subset of exits and any thresholds from this trace alone.
"""

import os
from dataclasses import dataclass

import numpy as np
import onnx
from scipy.special import softmax

from hapi_onnx.data import DataSource, check_same_classes, check_same_preprocessing, open_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.exits.cut import full_model
from hapi_onnx.exits.features import (
    Progress,
    check_labelled,
    model_batches,
    run_batch_size,
)
from hapi_onnx.exits.input_record import InputRecord
from hapi_onnx.exits.layout import ExitLayout
from hapi_onnx.graph import load_model, model_fingerprint, validate_exit_tensors
from hapi_onnx.runtime.preprocess import Preprocessing
from hapi_onnx.runtime.session import create_session
from hapi_onnx.trace import Trace


def _top2(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 class, top-1 probability and top-1 minus top-2 probability of each row."""
    pred = prob.argmax(axis=1)
    top = np.take_along_axis(prob, pred[:, None], axis=1)[:, 0]
    second = np.partition(prob, prob.shape[1] - 2, axis=1)[:, -2]
    return pred, top, top - second


def calibrate(
    ee_model: str | os.PathLike | onnx.ModelProto,
    data: DataSource | str | os.PathLike,
    batch_size: int | None = None,
    progress: Progress | None = None,
    preprocessing: Preprocessing | str | dict | None = None,
) -> Trace:
    """Run the EE model over data and record every exit's decisions (and the labels, if the data has them).

    Args:
        ee_model (str | PathLike | onnx.ModelProto): An over-provisioned model (from
            ``attach``), as a path or a model; not modified.
        data (DataSource | str | PathLike): Calibration data, not the data the heads were fitted on,
            or the path of an ``.npz``, an ``.npy`` or an image folder. Without labels the trace still
            records where each exit agrees with the final classifier, which a search against the
            full model (``reference="final"``) needs.
        batch_size (int | None): Samples per ORT run. Defaults to None (automatic).
        progress (Progress | None): ``progress(done, total)`` after every batch. Defaults to None.
        preprocessing (Preprocessing | str | dict | None): Spec for a ``data`` path. Defaults to
            None: the one ``attach`` recorded in the EE model (a different one is refused).

    Returns:
        Trace: Per exit (final classifier last) x sample: prediction, confidence and margin, with
        the labels and the EE model's fingerprint.

    Raises:
        HapiError: when the model has no exit layout, or the data does not fit it, is preprocessed
            differently or names other classes than the heads' training data.
    """
    model = load_model(ee_model)
    layout = ExitLayout.from_model(model)
    record = InputRecord.from_model(model)
    if preprocessing is None and not isinstance(data, DataSource):
        preprocessing = record.preprocessing
    data = check_labelled(model, open_dataset(data, preprocessing), layout.num_classes, "calibration data",
                          labels_required=False)
    check_same_preprocessing(record.preprocessing, data, "the heads' training data", "calibration data")
    check_same_classes(record.classes, data, "the heads' training data", "calibration data")
    outputs = [e.output for e in layout.exits] + [layout.final_output]
    known = {o.name for o in model.graph.output}
    missing = [o for o in outputs if o not in known]
    if missing:
        raise HapiError(f"The EE model's layout names outputs {missing} that the graph does not have.")
    session = create_session(model)
    n, k = len(data), len(outputs)
    pred = np.empty((k, n), dtype=np.int64)
    conf = np.empty((k, n), dtype=np.float32)
    margin = np.empty((k, n), dtype=np.float32)
    batch = run_batch_size(model, batch_size, data.image_shape)
    start = 0
    if progress is not None:
        progress(0, n)
    for chunk, rows in model_batches(model, data, batch):
        stop = start + rows
        results = session.run(outputs, {layout.input: chunk})
        for j, out in enumerate(results):
            out = out[: stop - start].astype(np.float64)
            if j == k - 1 and not layout.final_is_probability:
                out = softmax(out, axis=1)
            pred[j, start:stop], conf[j, start:stop], margin[j, start:stop] = _top2(out)
        start = stop
        if progress is not None:
            progress(stop, n)
    return Trace(
        exit_names=layout.exit_names,
        tensors=[e.tensor for e in layout.exits] + [layout.final_output],
        labels=None if data.y is None else data.y.copy(),
        pred=pred,
        conf=conf,
        margin=margin,
        num_classes=layout.num_classes,
        model_fingerprint=model_fingerprint(model),
    )


@dataclass(frozen=True)
class ExitAccuracy:
    """One exit's behaviour on its own over a trace.

    Attributes:
        name (str): Exit name (``final`` for the original classifier).
        tensor (str): Tensor the exit reads.
        accuracy (float | None): Top-1 accuracy if every sample left here (None without labels).
        agreement (float): Share of samples where its class is the final classifier's.
        mean_confidence (float): Mean max-softmax probability.
        mac_fraction (float | None): Share of the backbone's MACs spent before the exit, if known.
    """

    name: str
    tensor: str
    accuracy: float | None
    agreement: float
    mean_confidence: float
    mac_fraction: float | None = None


def exit_accuracies(trace: Trace, mac_fractions: dict[str, float] | None = None) -> list[ExitAccuracy]:
    """Per-exit accuracy and mean confidence of a trace, in exit order (final last).

    Args:
        trace (Trace): A calibration trace.
        mac_fractions (dict[str, float] | None): ``tensor -> MAC fraction`` to include; the final
            classifier is 1.0. Defaults to None.

    Returns:
        list[ExitAccuracy]: One row per exit.
    """
    fractions = dict(mac_fractions or {})
    accuracy = trace.accuracy if trace.labelled else [None] * trace.num_exits
    agreement, confidence = trace.agreement.mean(axis=1), trace.conf.mean(axis=1)
    rows = []
    for k, (name, tensor) in enumerate(zip(trace.exit_names, trace.tensors, strict=True)):
        fraction = 1.0 if k == trace.num_exits - 1 else fractions.get(tensor)
        acc = None if accuracy[k] is None else float(accuracy[k])
        rows.append(ExitAccuracy(name, tensor, acc, float(agreement[k]), float(confidence[k]), fraction))
    return rows


def exit_mac_fractions(ee_model: onnx.ModelProto) -> dict[str, float]:
    """``tensor -> share of the backbone's MACs before it`` for each exit of an EE model.

    The backbone is the EE model pruned to its final output (the heads removed), so the numbers
    match what ``attach`` reported. Exits whose tensor is not a rank-4 cut of the backbone (possible
    for hand-made multi-exit models) are left out.
    """
    layout = ExitLayout.from_model(ee_model)
    backbone = full_model(ee_model, layout).model
    fractions = {}
    for spec in layout.exits:
        try:
            (candidate,) = validate_exit_tensors(backbone, [spec.tensor])
        except HapiError:
            continue
        fractions[spec.tensor] = float(candidate.fraction)
    return fractions


def calibration_report(
    ee_model: str | os.PathLike | onnx.ModelProto,
    data: DataSource | str | os.PathLike,
    batch_size: int | None = None,
    progress: Progress | None = None,
    preprocessing: Preprocessing | str | dict | None = None,
) -> tuple[Trace, list[ExitAccuracy]]:
    """:func:`calibrate`, plus each exit's accuracy, mean confidence and MAC fraction.

    Returns:
        tuple[Trace, list[ExitAccuracy]]: The trace and one summary row per exit (final last).
    """
    model = load_model(ee_model)
    trace = calibrate(model, data, batch_size=batch_size, progress=progress, preprocessing=preprocessing)
    return trace, exit_accuracies(trace, exit_mac_fractions(model))
