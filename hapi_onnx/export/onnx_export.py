"""Normalise an existing ONNX model (check, upgrade, dynamic batch, shapes) and verify it.

Why opset 13 is the floor: opset 13 is where the operators our graph surgery emits and reads
took their modern form. ``Softmax``/``LogSoftmax`` became true per-axis ops (before 13 they
flattened the input to 2-D, so a head's softmax over channels meant something else), and
``Squeeze``/``Unsqueeze``/``Split``/``ReduceSum`` moved their axes from attributes to inputs.
Supporting one form keeps exit heads and segment extraction simple, and every PyTorch and
TensorFlow exporter of the last years emits >= 13 anyway. Older models are upgraded with
``onnx.version_converter``, which has adapters for every step up to 13 for CNN operators.
"""

import os

import numpy as np
import onnx

from hapi_onnx.errors import HapiError
from hapi_onnx.export.report import ExportReport
from hapi_onnx.export.verify import max_abs_diff, ort_outputs, sample_inputs
from hapi_onnx.export.write import check_output_path, opset_of
from hapi_onnx.graph.load import fixed_batch as graph_fixed_batch
from hapi_onnx.graph.load import input_spec, load_model, parse_input_shape, save_model

MIN_OPSET = 13


def export_onnx(
    source: str | os.PathLike,
    output: str | os.PathLike,
    tolerance: float = 1e-4,
    opset: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    samples: "np.ndarray | int | str | os.PathLike | None" = None,
) -> ExportReport:
    """Normalise an ONNX CNN and verify the result against the original with ONNX Runtime.

    The copy written to ``output`` passes the checker, is topologically sorted, has a dynamic
    batch axis and inferred shapes (:func:`hapi_onnx.graph.load.load_model`), and uses at least
    opset 13 (older models are upgraded; see the module docstring). It is written only if both
    models agree within ``tolerance`` on every sample.

    Args:
        source (PathLike): The ``.onnx`` file.
        output (PathLike): Where to write the normalised ``.onnx`` file (atomically).
        tolerance (float): Largest allowed absolute difference of any output. Defaults to 1e-4.
        opset (int | None): Target default-domain opset (>= 13, no downgrades). Defaults to None:
            keep the model's opset, or upgrade to 13 when it is older.
        input_shape (tuple[int, ...] | None): ``(N, C, H, W)`` to verify with, needed only when the
            model's C, H or W are symbolic. Defaults to None.
        samples: Verification inputs: an ``N x C x H x W`` array, a dataset path (first 32
            images), a number of seeded random images, or None for 8 random images.

    Returns:
        ExportReport: What was written and how closely it matches the source.

    Raises:
        HapiError: when the source is missing or invalid, cannot be upgraded, does not run, or the
            normalised model disagrees with it. Nothing is written then.
    """
    if not (isinstance(tolerance, int | float) and tolerance >= 0 and np.isfinite(tolerance)):
        raise HapiError(f"tolerance must be a finite number >= 0. Got {tolerance!r} instead.")
    output = check_output_path(output)
    model = load_model(source)  # every file error is reported here
    original = onnx.load(os.fspath(source))
    current = opset_of(model)
    target = max(current, MIN_OPSET) if opset is None else int(opset)
    if target < MIN_OPSET or target < current:
        raise HapiError(
            f"opset must be >= {MIN_OPSET} and >= the model's opset {current} (hapi-onnx only upgrades). "
            f"Got {opset!r} instead."
        )
    if target != current:
        model = load_model(_convert(model, current, target))

    spec = input_spec(model)
    image_shape = _image_shape(spec.shape, input_shape)
    x, sample_source = sample_inputs(samples, image_shape)
    fixed_batch = input_spec(original).shape[0]
    want = _reference_outputs(original, x, fixed_batch)
    if isinstance(fixed_batch, int) and fixed_batch > 0 and len(x) % fixed_batch:
        x = x[: len(x) - len(x) % fixed_batch]
    got = ort_outputs(model, x, "the normalised model", batched=graph_fixed_batch(model) is None)
    # load_model returns [N, K, 1, 1] classifier scores as [N, K]: compare the same values.
    want = [w.reshape(g.shape) if w.shape != g.shape and w.size == g.size else w
            for w, g in zip(want, got, strict=False)]
    diff = max_abs_diff(got, want)
    if not diff <= tolerance:
        raise HapiError(
            f"verification failed: the normalised model differs from {os.fspath(source)!r} by up to "
            f"{diff:.3g} (tolerance {tolerance:g}) on {len(x)} {sample_source} samples. Nothing was written."
        )
    save_model(model, output)
    return ExportReport(
        output=str(output), opset=opset_of(model), input_name=spec.name, input_shape=tuple(spec.shape),
        output_names=tuple(o.name for o in model.graph.output), reference="the source ONNX model",
        max_abs_diff=diff, tolerance=float(tolerance), samples=len(x), sample_source=sample_source,
    )


def _convert(model: onnx.ModelProto, current: int, target: int) -> onnx.ModelProto:
    stale = onnx.ModelProto()
    stale.CopyFrom(model)
    del stale.graph.value_info[:]  # types may change across opsets (Dropout's mask became bool at 12)
    try:
        return onnx.version_converter.convert_version(stale, target)
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HapiError(
            f"cannot upgrade the model from opset {current} to {target} with onnx.version_converter "
            f"({first}). Re-export it from its framework with opset >= {MIN_OPSET}."
        ) from None


def _image_shape(model_shape: list, input_shape) -> tuple[int, int, int]:
    chw = model_shape[1:]
    if input_shape is not None:
        given = parse_input_shape(input_shape)
        for axis, (m, g) in enumerate(zip(chw, given[1:], strict=True), start=1):
            if isinstance(m, int) and m != g:
                raise HapiError(
                    f"input shape {given} differs from the model's input {model_shape} at axis {axis}."
                )
        return given[1:]
    if not all(isinstance(d, int) and d > 0 for d in chw):
        raise HapiError(
            f"the model's input {model_shape} has symbolic C/H/W; give the shape to verify with, "
            "e.g. --input-shape 1,3,224,224."
        )
    return tuple(chw)


def _reference_outputs(original: onnx.ModelProto, x: np.ndarray, fixed_batch) -> list[np.ndarray]:
    """The source model's outputs on ``x``, in chunks of its fixed batch size if it has one."""
    label = "the source model"
    if not (isinstance(fixed_batch, int) and fixed_batch > 0):
        return ort_outputs(original, x, label)
    if len(x) < fixed_batch:
        raise HapiError(
            f"the source model has a fixed batch of {fixed_batch}; give at least that many samples."
        )
    chunks = [ort_outputs(original, x[i : i + fixed_batch], label)
              for i in range(0, len(x) - fixed_batch + 1, fixed_batch)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
