"""The Trace artifact: how every exit of the over-provisioned model behaved on a labelled set.

One calibration pass fills it; the search then scores any subset of exits and any thresholds
from it offline, because heads on a frozen backbone do not depend on each other.
"""

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hapi_onnx.artifact import Kind, malformed, parse_json
from hapi_onnx.errors import HapiError
from hapi_onnx.files import atomic_output

KIND = "hapi-onnx trace"
FORMAT_VERSION = 1
METADATA = Kind(KIND, FORMAT_VERSION, tagged=True)  # the .npz's 'meta' entry


@dataclass(frozen=True)
class Trace:
    """Per sample x exit: top-1 class and confidence, with the labels when the data had them.

    Exits are in candidate (graph) order; the final classifier is the last one. A trace taken on
    unlabelled data (``labels`` None) still tells where each exit agrees with the final classifier,
    which is what a search against the full model (``reference="final"``) needs.

    Attributes:
        exit_names (list[str]): Name of each exit, final classifier last.
        tensors (list[str]): Tensor each exit reads (the final classifier's output for the last).
        labels (np.ndarray | None): int64[N] true classes, or None for unlabelled data.
        pred (np.ndarray): int64[K, N] top-1 class per exit.
        conf (np.ndarray): float32[K, N] max softmax probability per exit.
        margin (np.ndarray | None): float32[K, N] top-1 minus top-2 probability, if recorded.
        num_classes (int): Number of classes of the model.
        model_fingerprint (str): sha256 of the model the trace was taken on.
    """

    exit_names: list[str]
    tensors: list[str]
    labels: np.ndarray | None
    pred: np.ndarray
    conf: np.ndarray
    num_classes: int
    model_fingerprint: str
    margin: np.ndarray | None = field(default=None)

    def __post_init__(self):
        for name in ("exit_names", "tensors"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                raise HapiError(f"Trace {name} must be a list of names. Got {value!r}.")
            object.__setattr__(self, name, list(value))
        arrays = ("pred", "conf") + tuple(n for n in ("labels", "margin") if getattr(self, n) is not None)
        for name in arrays:
            if not isinstance(getattr(self, name), np.ndarray):
                raise HapiError(f"Trace {name} must be a numpy array. Got {type(getattr(self, name)).__name__}.")
        if self.pred.ndim != 2:
            raise HapiError(f"Trace pred must be a 2-D array (exits x samples). Got shape {self.pred.shape}.")
        if self.labels is not None and self.labels.shape != self.pred.shape[1:]:
            raise HapiError(
                f"Trace labels must be a 1-D array of one class per sample ({self.pred.shape[1]}). "
                f"Got shape {self.labels.shape}."
            )
        if not isinstance(self.model_fingerprint, str):
            raise HapiError(f"Trace model_fingerprint must be a string. Got {self.model_fingerprint!r}.")
        k, n = len(self.exit_names), self.pred.shape[1]
        if len(self.tensors) != k:
            raise HapiError(f"Trace has {k} exit names but {len(self.tensors)} tensors.")
        for name in ("pred", "conf") + (("margin",) if self.margin is not None else ()):
            shape = getattr(self, name).shape
            if shape != (k, n):
                raise HapiError(f"Trace {name} must have shape ({k}, {n}) (exits x samples). Got {shape}.")
        if k < 1 or n < 1:
            raise HapiError(f"Trace must have at least one exit and one sample. Got {k} exits, {n} samples.")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise HapiError(f"Trace num_classes must be a positive int. Got {self.num_classes!r}.")
        for name in ("labels", "pred") if self.labels is not None else ("pred",):
            arr = getattr(self, name)
            if arr.dtype.kind not in "iu":
                raise HapiError(f"Trace {name} must be integer classes. Got dtype {arr.dtype}.")
            if arr.min() < 0 or arr.max() >= self.num_classes:
                raise HapiError(
                    f"Trace {name} must be integer classes in [0, {self.num_classes}). "
                    f"Got values in [{arr.min()}, {arr.max()}]."
                )
        for name in ("conf",) + (("margin",) if self.margin is not None else ()):
            arr = getattr(self, name)
            # float32 softmax may round a hair above 1; the search clips it
            if arr.dtype.kind != "f" or not np.all((arr >= 0) & (arr <= 1 + 1e-6)):
                raise HapiError(
                    f"Trace {name} must be max-softmax probabilities in [0, 1]. Re-run calibrate."
                )

    @property
    def num_exits(self) -> int:
        """K, the number of exits including the final classifier."""
        return len(self.exit_names)

    @property
    def num_samples(self) -> int:
        """N, the number of samples."""
        return self.pred.shape[1]

    @property
    def labelled(self) -> bool:
        """Whether the trace has the true classes."""
        return self.labels is not None

    @property
    def correct(self) -> np.ndarray:
        """bool[K, N]: whether each exit's top-1 class is right.

        Raises:
            HapiError: when the trace has no labels.
        """
        if self.labels is None:
            raise HapiError(
                "This trace was taken on unlabelled data, so it has no accuracy; search against the full "
                "model instead (--reference final), or calibrate on labelled data."
            )
        return self.pred == self.labels[None, :]

    @property
    def agreement(self) -> np.ndarray:
        """bool[K, N]: whether each exit's top-1 class is the final classifier's."""
        return self.pred == self.pred[-1][None, :]

    @property
    def accuracy(self) -> np.ndarray:
        """float[K]: top-1 accuracy of each exit alone."""
        return self.correct.mean(axis=1)

    def subset(self, indices: np.ndarray) -> "Trace":
        """The same exits on the samples at ``indices`` (in that order)."""
        indices = np.asarray(indices)
        return replace(
            self,
            labels=None if self.labels is None else self.labels[indices],
            pred=self.pred[:, indices],
            conf=self.conf[:, indices],
            margin=None if self.margin is None else self.margin[:, indices],
        )

    @property
    def fingerprint(self) -> str:
        """sha256 over the trace's contents, recorded in designs that were searched on it."""
        import hashlib

        meta = [self.exit_names, self.tensors, self.num_classes, self.model_fingerprint]
        digest = hashlib.sha256(json.dumps(meta).encode())
        for arr in [a for a in (self.labels, self.pred, self.conf, self.margin) if a is not None]:
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the trace as an ``.npz`` (no pickles), atomically."""
        meta = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "exit_names": list(self.exit_names),
            "tensors": list(self.tensors),
            "num_classes": int(self.num_classes),
            "model_fingerprint": self.model_fingerprint,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "pred": self.pred.astype(np.int64),
            "conf": self.conf.astype(np.float32),
        }
        if self.labels is not None:
            arrays["labels"] = self.labels.astype(np.int64)
        if self.margin is not None:
            arrays["margin"] = self.margin.astype(np.float32)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trace":
        """Read a trace written by :meth:`save`.

        Raises:
            HapiError: when the file is missing, not an npz, or not a trace of this version.
        """
        path = Path(path)
        if not path.is_file():
            raise HapiError(f"Trace file {str(path)!r} does not exist or is not a file.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception:  # zipfile, numpy and pickle guards all raise their own types here
            raise HapiError(f"{str(path)!r} is not a hapi-onnx trace: not an .npz file.") from None
        if "meta" not in arrays:
            raise HapiError(
                f"{str(path)!r} is an .npz but not a hapi-onnx trace (no 'meta'); make one with `hapi-onnx calibrate`."
            )
        source = repr(str(path))
        meta = arrays.pop("meta")
        text = str(meta) if meta.dtype.kind == "U" and meta.ndim == 0 else None
        meta = METADATA.check(parse_json(text, f"{source} metadata") if text is not None else None, source)
        with malformed(source, KIND):
            return cls(
                exit_names=meta["exit_names"],
                tensors=meta["tensors"],
                labels=arrays.get("labels"),
                pred=arrays["pred"],
                conf=arrays["conf"],
                margin=arrays.get("margin"),
                num_classes=meta["num_classes"],
                model_fingerprint=meta["model_fingerprint"],
            )
