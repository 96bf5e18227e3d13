"""Run a candidate ONNX model with ONNX Runtime and compare it with reference outputs."""

import os

import numpy as np
import onnx

from hapi_onnx.data import load_dataset
from hapi_onnx.errors import HapiError
from hapi_onnx.runtime.session import create_session, first_line, quiet_options

DEFAULT_SAMPLES = 8


def ort_outputs(model: onnx.ModelProto, x: np.ndarray, label: str, batched: bool = True) -> list[np.ndarray]:
    """All outputs of ``model`` on ``x`` with the CPU provider (one thread, for repeatable numbers).

    Args:
        model (onnx.ModelProto): The model.
        x (np.ndarray): float32 ``N x C x H x W`` inputs.
        label (str): How to name the model in messages.
        batched (bool): Run all of ``x`` at once (True) or one sample at a time (for a fixed batch
            of 1). Defaults to True.

    Raises:
        HapiError: when ONNX Runtime cannot load or run the model.
    """
    session = create_session(model, quiet_options(threads=1), what=label)
    name = session.get_inputs()[0].name
    try:
        if batched:
            return session.run(None, {name: x})
        runs = [session.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
    except Exception as err:  # ORT raises its own Fail/InvalidArgument/RuntimeException types
        raise HapiError(f"ONNX Runtime cannot run {label}: {first_line(err)}") from None
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def max_abs_diff(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Largest absolute difference between matching outputs (shapes must agree).

    Raises:
        HapiError: when the number or shapes of outputs differ.
    """
    if len(got) != len(want):
        raise HapiError(f"the ONNX model has {len(got)} outputs but its source has {len(want)}.")
    worst = 0.0
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise HapiError(f"output {k} has shape {a.shape} in ONNX but {b.shape} in the source model.")
        if a.size:
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
    return worst


def sample_inputs(
    samples: "np.ndarray | int | str | os.PathLike | None", image_shape: tuple[int, int, int]
) -> tuple[np.ndarray, str]:
    """The verification inputs and a description of where they came from.

    Args:
        samples: An ``N x C x H x W`` array, a number of seeded random images, a dataset path
            (its first 32 images), or None for 8 random images.
        image_shape (tuple[int, int, int]): ``(C, H, W)`` the model takes.

    Raises:
        HapiError: when the samples do not match ``image_shape`` or are not usable.
    """
    if samples is None or isinstance(samples, int | np.integer):
        n = DEFAULT_SAMPLES if samples is None else int(samples)
        if n < 1:
            raise HapiError(f"the number of verification samples must be >= 1. Got {n} instead.")
        rng = np.random.default_rng(0)
        return rng.random((n, *image_shape), dtype=np.float32), "random uniform [0, 1)"
    if isinstance(samples, str | os.PathLike):
        x, source = load_dataset(samples).x[:32], f"{os.fspath(samples)!r}"
    else:
        x, source = np.asarray(samples), "given"
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape) or len(x) == 0:
        raise HapiError(
            f"verification samples must be N x {' x '.join(map(str, image_shape))} (the model input). "
            f"Got shape {x.shape} instead."
        )
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise HapiError(f"verification samples must be finite floats. Got dtype {x.dtype} instead.")
    return np.ascontiguousarray(x, dtype=np.float32), source
