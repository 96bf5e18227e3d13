"""PyTorch -> verified ONNX, through the TorchScript-based exporter (no onnxscript needed)."""

import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import onnx

from hapi_onnx.errors import HapiError
from hapi_onnx.export.factory import resolve_factory
from hapi_onnx.export.report import ExportReport
from hapi_onnx.export.verify import max_abs_diff, ort_outputs, sample_inputs
from hapi_onnx.export.write import check_output_path, opset_of
from hapi_onnx.graph.load import input_spec, load_model, parse_input_shape, save_model
from hapi_onnx.lazy import lazy_import

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_TORCH_OPSET = 13  # see hapi_onnx.export.onnx_export.MIN_OPSET
MAX_TORCH_OPSET = 20  # the newest opset torch's TorchScript-based exporter emits


def export_torch(
    factory: str,
    checkpoint: str | os.PathLike | None,
    input_shape: tuple[int, ...],
    output: str | os.PathLike,
    opset: int = 17,
    tolerance: float = 1e-4,
    samples: "np.ndarray | int | str | os.PathLike | None" = None,
) -> ExportReport:
    """Build a PyTorch model, load its weights, export it to ONNX and verify it with ONNX Runtime.

    The model is exported in eval mode (BatchNorm folded into the convolutions), with input
    ``input`` and output ``logits`` (``output_<k>`` for several outputs) and a dynamic batch
    axis, then normalised by :func:`hapi_onnx.graph.load.load_model`. It is written to ``output``
    only if ONNX Runtime reproduces PyTorch within ``tolerance`` on every sample.

    Args:
        factory (str): ``path/to/file.py:build_model`` or ``package.module:build_model``; called
            with no arguments, it must return a ``torch.nn.Module``.
        checkpoint (PathLike | None): A state dict saved with ``torch.save`` (loaded with
            ``weights_only=True``, never unpickling code). None keeps the factory's weights.
        input_shape (tuple[int, ...]): ``(N, C, H, W)`` of the example input; N is exported dynamic.
        output (PathLike): Where to write the ``.onnx`` file (atomically).
        opset (int): Default-domain opset, 13 to 20. Defaults to 17.
        tolerance (float): Largest allowed absolute difference of any output. Defaults to 1e-4.
        samples: Verification inputs: an ``N x C x H x W`` array, a dataset path (first 32
            images), a number of seeded random images, or None for 8 random images.

    Returns:
        ExportReport: What was written and how closely it matches.

    Raises:
        HapiError: on a bad factory spec, missing or unreadable checkpoint, a factory that does not
            return a ``torch.nn.Module``, a state dict that does not fit, a model that cannot be
            exported, or a verification failure. Nothing is written then.
    """
    torch = lazy_import("torch", "torch")
    shape = parse_input_shape(input_shape)
    if not MIN_TORCH_OPSET <= int(opset) <= MAX_TORCH_OPSET:
        raise HapiError(
            f"opset must be {MIN_TORCH_OPSET}..{MAX_TORCH_OPSET} for PyTorch export. Got {opset!r} instead."
        )
    _check_tolerance(tolerance)
    output = check_output_path(output)
    x, sample_source = sample_inputs(samples, shape[1:])

    model = resolve_factory(factory)()
    if not isinstance(model, torch.nn.Module):
        raise HapiError(f"factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    if checkpoint is not None:
        _load_state_dict(torch, model, Path(checkpoint))
    model.eval()

    with torch.no_grad():
        want = _torch_outputs(torch, model, x, factory)
    names = [OUTPUT_NAME] if len(want) == 1 else [f"output_{k}" for k in range(len(want))]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(
                model, (torch.zeros(shape),), buffer, dynamo=False, opset_version=int(opset),
                input_names=[INPUT_NAME], output_names=names, do_constant_folding=True,
                dynamic_axes={name: {0: "N"} for name in [INPUT_NAME, *names]},
            )
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HapiError(f"torch.onnx.export failed for {factory!r}: {first}") from None
    model_proto = load_model(onnx.load_from_string(buffer.getvalue()))

    got = ort_outputs(model_proto, x, "the exported model")
    diff = max_abs_diff(got, want)
    if not diff <= tolerance:
        raise HapiError(
            f"verification failed: ONNX Runtime differs from PyTorch by up to {diff:.3g} "
            f"(tolerance {tolerance:g}) on {len(x)} {sample_source} samples. Nothing was written; check "
            "for ops that behave differently in eval mode or raise --tolerance if this is expected."
        )
    save_model(model_proto, output)
    spec = input_spec(model_proto)
    return ExportReport(
        output=str(output), opset=opset_of(model_proto), input_name=spec.name, input_shape=tuple(spec.shape),
        output_names=tuple(o.name for o in model_proto.graph.output), reference="PyTorch",
        max_abs_diff=diff, tolerance=float(tolerance), samples=len(x), sample_source=sample_source,
    )


def _check_tolerance(tolerance: float) -> None:
    if not (isinstance(tolerance, int | float) and tolerance >= 0 and np.isfinite(tolerance)):
        raise HapiError(f"tolerance must be a finite number >= 0. Got {tolerance!r} instead.")


def _load_state_dict(torch, model, path: Path) -> None:
    if not path.is_file():
        raise HapiError(f"checkpoint {str(path)!r} does not exist or is not a file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HapiError(
            f"cannot load checkpoint {str(path)!r} as weights only ({first}). Save the state dict: "
            "torch.save(model.state_dict(), path)."
        ) from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict"):  # common training-loop wrappers
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HapiError(
            f"checkpoint {str(path)!r} is not a state dict (a mapping of names to tensors). "
            "Save it with torch.save(model.state_dict(), path)."
        )
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("shape mismatch (checkpoint vs model)", wrong)) if items]
        raise HapiError(
            f"checkpoint {str(path)!r} does not fit the factory's model: {'; '.join(parts)}. "
            "Check that --factory builds the architecture the weights were trained with."
        )
    model.load_state_dict(state, strict=True)


def _torch_outputs(torch, model, x: np.ndarray, factory: str) -> list[np.ndarray]:
    try:
        out = model(torch.from_numpy(x))
    except (RuntimeError, TypeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HapiError(
            f"the model from {factory!r} fails on inputs of shape {x.shape}: {first}. "
            "Check --input-shape."
        ) from None
    outs = list(out) if isinstance(out, tuple | list) else [out]
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise HapiError(
            f"the model from {factory!r} must return a tensor or a tuple of tensors. "
            f"Got {type(out).__name__} instead."
        )
    return [o.detach().cpu().numpy() for o in outs]
