"""EarlyExitModel: run a staged early-exit bundle with ONNX Runtime, leaving at the first confident exit.

One ``InferenceSession`` per stage. Stage ``j`` computes exit ``j``'s class, confidence and
probabilities in-graph and the tensor carried to stage ``j+1``; a sample leaves at the first
stage whose confidence reaches its threshold (:func:`hapi_onnx.choice.leaves`, the rule the search
scores designs with), so a sample that leaves at stage ``j`` has paid ``j+1`` session calls, which
is the cost model the search predicts with.

Hot paths:

- batch 1 on the CPU provider: per thread and input shape, every stage's inputs and outputs are
  bound once (IOBinding) to preallocated numpy buffers, and stage ``j``'s carried-output buffer
  *is* stage ``j+1``'s input buffer, so nothing is copied between stages and each stage costs
  one ``run_with_iobinding`` (about 7 us of overhead here, against about 17 us for
  ``session.run`` with numpy feeds; see ``bench/bench_runtime.py``).
- batch N: ``session.run`` per stage on the samples still undecided only (compaction); results
  come back in input order. A bundle whose graph fixes the batch at 1 (manifest input shape
  ``[1, ...]``) runs a batch one sample at a time instead (no compaction).

Sessions are shared and ``run`` is thread-safe; bound buffers live in thread-local storage, so
concurrent ``predict`` calls from several threads are safe. Large batches run in chunks of
:data:`MAX_CHUNK` samples, so memory stays bounded whatever the input size.
"""

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from hapi_onnx.choice import ExitChoice, check_choices, leaves
from hapi_onnx.errors import BundleError, DataError, HapiError
from hapi_onnx.runtime.archive import BundleContents, read_bundle
from hapi_onnx.runtime.manifest import Manifest, StageSpec
from hapi_onnx.runtime.preprocess import preprocess_images
from hapi_onnx.runtime.session import BoundCall, create_session

if TYPE_CHECKING:
    from hapi_onnx.runtime.monitor import Monitor

_MAX_BOUND_SHAPES = 8  # per thread: input shapes with preallocated batch-1 buffers
MAX_CHUNK = 256
"""Samples run through the stages together at most; larger inputs are processed chunk by chunk."""
NEVER = 2.0
"""A threshold no confidence reaches (confidences are at most 1): the exit never fires."""


@dataclass(frozen=True)
class Prediction:
    """What the model decided for each sample, in input order.

    Attributes:
        classes (np.ndarray): int64[N] top-1 class.
        confidences (np.ndarray): float32[N] max probability at the exit taken.
        exit_index (np.ndarray): int64[N] stage each sample left at (0-based; the last stage is the
            original classifier). Name it with ``model.exit_names[i]``.
        probs (np.ndarray | None): float32[N, C] probabilities at the exit taken, if asked for.
    """

    classes: np.ndarray
    confidences: np.ndarray
    exit_index: np.ndarray
    probs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.classes)

    @classmethod
    def join(cls, parts: "Sequence[Prediction]") -> "Prediction":
        """One prediction of all samples of ``parts``, in order (probabilities where they all have them)."""
        probs = [p.probs for p in parts]
        return cls(
            classes=np.concatenate([p.classes for p in parts]),
            confidences=np.concatenate([p.confidences for p in parts]),
            exit_index=np.concatenate([p.exit_index for p in parts]),
            probs=None if any(p is None for p in probs) else np.concatenate(probs),
        )


class _Stage:
    """One stage's session and output names."""

    def __init__(self, spec: StageSpec, session: ort.InferenceSession, last: bool):
        self.spec = spec
        self.session = session
        self.last = last
        self.decision = [spec.class_output, spec.confidence_output]
        self.carried = [] if last else [spec.carried]
        # Output order for the batch path: class, confidence, carried (if any), probs (if asked).
        self.names = self.decision + self.carried
        self.names_probs = self.names + [spec.probs_output]


class _BoundPlan:
    """Batch-1 buffers and IOBindings for one input shape, owned by one thread."""

    def __init__(self, stages: list[_Stage], x: np.ndarray):
        self.input = np.empty_like(x)
        self.calls, self.classes, self.confs, self.probs = [], [], [], []
        self.runs = []  # one zero-argument call per stage: run it on its bound buffers
        current = self.input
        np.copyto(current, x)
        for stage in stages:
            names = stage.names_probs
            outs = stage.session.run(names, {stage.spec.input: current})
            call = BoundCall(stage.session, {stage.spec.input: current}, dict(zip(names, outs, strict=True)),
                             share_inputs=True)  # stage j+1 reads stage j's carried buffer in place
            buffers = [call.buffers[name] for name in names]
            self.calls.append(call)  # it keeps the buffers its binding points into alive
            self.runs.append(call.run)
            self.classes.append(buffers[0])
            self.confs.append(buffers[1])
            self.probs.append(buffers[-1])
            if not stage.last:
                current = buffers[2]


class _Pipeline:
    """The sessions of a loaded bundle plus per-thread batch-1 plans; shared by threshold variants."""

    def __init__(self, stages: list[_Stage], bind_batch1: bool):
        self.stages = stages
        self.bind_batch1 = bind_batch1
        self._local = threading.local()

    def plan_for(self, x: np.ndarray) -> _BoundPlan:
        plans = getattr(self._local, "plans", None)
        if plans is None:
            plans = self._local.plans = {}
        plan = plans.get(x.shape)
        if plan is None:
            if len(plans) >= _MAX_BOUND_SHAPES:
                plans.clear()
            plan = plans[x.shape] = _BoundPlan(self.stages, x)
        return plan


class EarlyExitModel:
    """A loaded early-exit bundle. Create it with :meth:`EarlyExitModel.load`.

    Example::

        model = EarlyExitModel.load("model.hapi")
        pred = model.predict(images)          # float32[N, C, H, W]
        pred.classes, pred.confidences, pred.exit_index
    """

    def __init__(self, manifest: Manifest, pipeline: _Pipeline, exits: Sequence[ExitChoice]):
        self._manifest = manifest
        self._pipeline = pipeline
        self._exits = check_choices(exits)
        self._thresholds32 = tuple(np.float32(c.threshold) for c in self._exits[:-1])
        spec = manifest.input
        # Input check fast path: an ndarray of this dtype, rank and fixed dimensions passes with a
        # few attribute reads; anything else goes through the full check and its messages.
        self._dtype = np.dtype(spec.dtype)
        self._rank = len(spec.shape)
        self._fixed = tuple(d for d in spec.shape[1:])
        self._fixed_only = all(d is not None for d in spec.shape[1:])

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        providers: Sequence[str] | None = None,
        session_options: ort.SessionOptions | None = None,
        provider_options: Sequence[dict[str, str]] | None = None,
        monitor: "Monitor | None" = None,
    ) -> "EarlyExitModel":
        """Verify a bundle (manifest and every file's sha256) and open one session per stage.

        Args:
            path (PathLike): ``MODEL.hapi`` directory or ``MODEL.hapi.zip``.
            providers (list[str]): ONNX Runtime execution providers. Defaults to the CPU provider.
            session_options (ort.SessionOptions): Options for every stage's session. Defaults to
                ONNX Runtime's defaults.
            provider_options (list[dict]): Options aligned with ``providers``. Defaults to none.
            monitor (Monitor | None): Watch the early exits for drift and move the thresholds
                along the bundle's certified path (:mod:`hapi_onnx.runtime.monitor`). Defaults to
                None: the bundle's thresholds, fixed.

        Returns:
            EarlyExitModel: Ready to predict, with the bundle's thresholds (a
            :class:`~hapi_onnx.runtime.monitor.MonitoredModel` when a monitor is given).

        Raises:
            BundleError: when the bundle is missing, malformed or tampered with, or its manifest
                does not match its stage files (names, element types, ranks, static dimensions).
            HapiError: when a provider is not available.
        """
        contents = read_bundle(path)
        return cls.from_contents(contents, providers, session_options, provider_options, origin=str(path),
                                 monitor=monitor)

    @classmethod
    def from_contents(
        cls,
        contents: BundleContents,
        providers: Sequence[str] | None = None,
        session_options: ort.SessionOptions | None = None,
        provider_options: Sequence[dict[str, str]] | None = None,
        origin: str = "in-memory bundle",
        monitor: "Monitor | None" = None,
    ) -> "EarlyExitModel":
        """Open a bundle already in memory (a verified manifest and its stage files' bytes).

        :meth:`load` reads and verifies the files, then calls this; the bundle writer's
        :func:`~hapi_onnx.bundle.bundle_contents` makes contents without writing any file.

        Args:
            contents (BundleContents): Manifest and stage bytes.
            providers, session_options, provider_options, monitor: As for :meth:`load`.
            origin (str): Where the bundle came from, for messages. Defaults to "in-memory bundle".

        Raises:
            HapiError: as :meth:`load`, for the sessions and the manifest/stage consistency.
        """
        if isinstance(providers, str):
            raise HapiError(
                f"providers must be a list of execution provider names, e.g. [{providers!r}]. "
                f"Got the string {providers!r} instead."
            )
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing or not providers:
            raise HapiError(
                f"Execution providers {missing or providers!r} are not available in this onnxruntime "
                f"build. Available: {available!r}."
            )
        manifest = contents.manifest
        last = len(manifest.stages) - 1
        sessions = []
        sessions = [
            create_session(blob, session_options, providers, provider_options,
                           what=f"stage {spec.file!r} of bundle {origin!r}", error=BundleError)
            for spec, blob in zip(manifest.stages, contents.stage_bytes, strict=True)
        ]
        _check_stage_io(origin, manifest, sessions)
        stages = [_Stage(spec, session, last=i == last)
                  for i, (spec, session) in enumerate(zip(manifest.stages, sessions, strict=True))]
        bind = stages[0].session.get_providers()[0] == "CPUExecutionProvider"
        model = cls(manifest, _Pipeline(stages, bind_batch1=bind), manifest.exits)
        if monitor is None:
            return model
        from hapi_onnx.runtime.monitor import Monitor  # built on this module

        if not isinstance(monitor, Monitor):
            raise HapiError(f"monitor must be a hapi_onnx.runtime.Monitor (or None). Got {monitor!r} instead.")
        return monitor.attach(model)

    # -- what the model is ------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The bundle's validated manifest."""
        return self._manifest

    @property
    def exit_names(self) -> tuple[str, ...]:
        """Exit name of each stage, ``final`` last."""
        return self._manifest.exit_names

    @property
    def exits(self) -> tuple[ExitChoice, ...]:
        """The exit and threshold in use at every stage, the final classifier last."""
        return self._exits

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Confidence thresholds of the intermediate stages in use."""
        return tuple(c.threshold for c in self._exits[:-1])

    @property
    def num_stages(self) -> int:
        """Number of stages (session calls on the longest path)."""
        return len(self._pipeline.stages)

    @property
    def labels(self) -> tuple[str, ...] | None:
        """Class names, if the bundle has them."""
        return self._manifest.labels

    def with_thresholds(self, thresholds: Sequence[float]) -> "EarlyExitModel":
        """The same bundle and sessions with other thresholds (a new model; this one is unchanged).

        Args:
            thresholds (list[float]): One per intermediate stage, each by the one threshold rule
                of :mod:`hapi_onnx.choice` (a finite number >= 0; above 1 never exits there, see
                also :meth:`force_full_path`).

        Raises:
            HapiError: when the count is wrong or a value breaks the rule.
        """
        if isinstance(thresholds, (str, bytes)) or not isinstance(thresholds, Iterable):
            raise HapiError(f"with_thresholds needs a list of numbers. Got {thresholds!r} instead.")
        thresholds = list(thresholds)
        names = [c.name for c in self._exits]
        if len(thresholds) != len(names) - 1:
            raise HapiError(
                f"with_thresholds needs {len(names) - 1} thresholds (one per intermediate stage, none for "
                f"{names[-1]!r}). Got {thresholds!r} instead."
            )
        exits = [*map(ExitChoice, names[:-1], thresholds), self._exits[-1]]
        return EarlyExitModel(self._manifest, self._pipeline, exits)

    def force_full_path(self) -> "EarlyExitModel":
        """A variant that never exits early: every sample runs every stage (for benchmarks)."""
        return self.with_thresholds([NEVER] * (self.num_stages - 1))

    # -- inference --------------------------------------------------------------------------

    def preprocess(self, images) -> np.ndarray:
        """Decoded images -> this model's input, with the bundle's preprocessing spec.

        The same function (:func:`~hapi_onnx.runtime.preprocess.preprocess_images`) made the
        calibration and test inputs when the bundle was built from an image folder. Decode
        images yourself (e.g. ``np.asarray(PIL.Image.open(path).convert("RGB"))``); only a
        resize needs Pillow, so images already at the spec's resize size need numpy alone.

        Args:
            images: One ``H x W`` or ``H x W x C`` uint8 image (RGB order), an ``N x H x W x C``
                array, or a list of images.

        Returns:
            np.ndarray: float32 input for :meth:`predict` (``[N, C, H, W]`` or ``[N, H, W, C]``).

        Raises:
            HapiError: when the bundle records no preprocessing, or an image cannot be used.
        """
        spec = self._manifest.preprocessing
        if spec is None:
            raise HapiError(
                "This bundle records no preprocessing, so it cannot preprocess images: feed predict the "
                "model's input directly, or rebuild the bundle with a spec (e.g. --preprocess imagenet)."
            )
        self._check_image_sizes(spec, images)  # before any work: a wrong size is refused up front
        return preprocess_images(spec, images)

    def _check_image_sizes(self, spec, images) -> None:
        """Refuse images whose preprocessed size is not the bundle's input size (when it is fixed)."""
        shape = self._manifest.input.shape
        want = tuple(shape[2:4] if spec.layout == "NCHW" else shape[1:3])
        if None in want or not isinstance(images, (np.ndarray, list, tuple)):
            return
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
        for image in [images] if single else images:
            dims = np.shape(image) if isinstance(image, np.ndarray) else None
            if dims is None or len(dims) not in (2, 3):
                continue  # preprocess_images names the problem
            resized = spec.resized_size(*dims[:2])
            got = spec.crop or resized
            if tuple(got) != want:
                raise HapiError(
                    f"An image of {dims[0]}x{dims[1]} pixels becomes {got[0]}x{got[1]} with the bundle's "
                    f"preprocessing, but the model takes {want[0]}x{want[1]} (H x W). Resize the images to "
                    f"{want[0]}x{want[1]} first."
                )

    def predict(self, x: np.ndarray, return_probs: bool = False) -> Prediction:
        """Classify a batch, each sample leaving at its first confident exit.

        Args:
            x (np.ndarray): float32[N, C, H, W] images, preprocessed as the manifest describes.
            return_probs (bool): Also return the probabilities at each sample's exit. Defaults to False.

        Returns:
            Prediction: classes, confidences, exit indices (and probabilities), in input order.

        Raises:
            DataError: when ``x`` is not a float32 array of the bundle's input shape, or holds NaN
                or infinite values.
        """
        if not (
            type(x) is np.ndarray and x.dtype == self._dtype and x.ndim == self._rank
            and self._fixed_only and x.shape[1:] == self._fixed
        ):
            x = self._check_input(x)
        n = x.shape[0]
        if n == 1 and self._pipeline.bind_batch1:
            return self._predict_one(x, return_probs)  # copies x into a bound buffer: any layout
        if n == 0:
            x = self._check_input(x)  # raises
        if n > 1 and self._manifest.input.batch_fixed:  # the graph takes one sample per call
            return Prediction.join([self.predict(x[i : i + 1], return_probs) for i in range(n)])
        parts = [self._predict_batch(x[i : i + MAX_CHUNK], return_probs) for i in range(0, n, MAX_CHUNK)]
        return parts[0] if len(parts) == 1 else Prediction.join(parts)

    def progressive(self, x: np.ndarray) -> Iterator[Prediction]:
        """Yield the refined prediction after each stage, all samples running to the final one.

        Progressive inference: a caller may act on an early answer and keep reading for a
        better one, or stop iterating to stop computing.

        Args:
            x (np.ndarray): float32[N, C, H, W] images.

        Yields:
            Prediction: after stage ``j``, every sample's class, confidence and probabilities at
            exit ``j`` (``exit_index`` is ``j`` for all).
        """
        x = _finite(self._check_input(x))
        if len(x) > 1 and self._manifest.input.batch_fixed:  # one sample per call, joined per stage
            runs = [self.progressive(x[i : i + 1]) for i in range(len(x))]  # advanced a stage at a time
            for stage_predictions in zip(*runs, strict=True):
                yield Prediction.join(list(stage_predictions))
            return
        current = x
        for j, stage in enumerate(self._pipeline.stages):
            outs = stage.session.run(stage.names_probs, {stage.spec.input: current})
            yield Prediction(
                classes=outs[0],
                confidences=outs[1],
                exit_index=np.full(len(x), j, dtype=np.int64),
                probs=outs[-1],
            )
            if not stage.last:
                current = outs[2]

    def _predict_one(self, x: np.ndarray, return_probs: bool) -> Prediction:
        plan = self._pipeline.plan_for(x)
        np.copyto(plan.input, x)
        _finite(plan.input)
        thresholds = self._thresholds32
        runs, confs = plan.runs, plan.confs
        last = len(runs) - 1
        j = 0
        while True:
            runs[j]()
            if j == last or leaves(confs[j][0], thresholds[j]):
                break
            j += 1
        return Prediction(
            classes=plan.classes[j].copy(),
            confidences=plan.confs[j].copy(),
            exit_index=np.array([j], dtype=np.int64),
            probs=plan.probs[j].copy() if return_probs else None,
        )

    def _predict_batch(self, x: np.ndarray, return_probs: bool) -> Prediction:
        x = _finite(np.ascontiguousarray(x))
        n = len(x)
        classes = np.empty(n, dtype=np.int64)
        confs = np.empty(n, dtype=np.float32)
        exits = np.empty(n, dtype=np.int64)
        probs = np.empty((n, self._manifest.num_classes), dtype=np.float32) if return_probs else None
        active = np.arange(n)
        current = x
        for j, stage in enumerate(self._pipeline.stages):
            outs = stage.session.run(stage.names_probs if return_probs else stage.names,
                                     {stage.spec.input: current})
            if stage.last:
                done = slice(None)
            else:
                done = leaves(outs[1], self._thresholds32[j])
            rows = active[done]
            classes[rows] = outs[0][done]
            confs[rows] = outs[1][done]
            exits[rows] = j
            if return_probs:
                probs[rows] = outs[-1][done]
            if stage.last:
                break
            keep = ~done
            if not keep.any():
                break
            if keep.all():
                current = outs[2]
            else:
                active = active[keep]
                current = outs[2][keep]
        return Prediction(classes=classes, confidences=confs, exit_index=exits, probs=probs)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        spec = self._manifest.input
        expected = "(" + ", ".join("N" if d is None else str(d) for d in spec.shape) + ")"
        if not isinstance(x, np.ndarray):
            raise DataError(
                f"predict expects a numpy array of shape {expected}. Got {type(x).__name__} instead."
            )
        if x.ndim != len(spec.shape):
            hint = " Add a batch axis with x[None]." if x.ndim == len(spec.shape) - 1 else ""
            raise DataError(
                f"predict expects a {len(spec.shape)}D input of shape {expected}. "
                f"Got shape {x.shape} instead.{hint}"
            )
        if x.dtype != np.dtype(spec.dtype):
            raise DataError(
                f"predict expects {spec.dtype} input. Got {x.dtype} instead. "
                f"Convert with x.astype(np.{spec.dtype})."
            )
        bad = [i for i, d in enumerate(spec.shape) if i > 0 and d is not None and x.shape[i] != d]
        if bad or x.shape[0] == 0:
            raise DataError(
                f"predict expects input of shape {expected} with N >= 1. Got shape {x.shape} instead."
            )
        return np.ascontiguousarray(x)


def _finite(x: np.ndarray) -> np.ndarray:
    """``x`` itself, or DataError when it holds NaN or infinite values (they would decide nothing)."""
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(
            f"predict got {bad} NaN or infinite input value(s); an early exit cannot decide on them. "
            "Clean or drop those samples."
        )
    return x


# Manifest dtype name -> ONNX Runtime's element type string.
_ORT_TYPES = {"float32": "tensor(float)"}
_INT64 = "tensor(int64)"


def _check_stage_io(path, manifest: Manifest, sessions: list[ort.InferenceSession]) -> None:
    """Each stage session's real inputs and outputs are what the manifest says they are.

    ``manifest.json`` is not hashed (the stage files are), so this is what stops a hand-edited
    manifest at load instead of a crash, or silently wrong values, in ``predict``: names,
    element types, ranks and static dimensions of stage 0's input, each carried output against
    the next stage's input, and the class, confidence and probabilities outputs.

    Raises:
        BundleError: naming the first stage and field that do not match.
    """
    stages = list(zip(manifest.stages, sessions, strict=True))
    # Each stage on its own first (so a wrong name is reported as such), then the chain.
    for i, (spec, session) in enumerate(stages):
        _refuse(path, i, spec, _stage_mismatch(manifest, i, session))
    for i, ((spec, session), (_, following)) in enumerate(zip(stages[:-1], stages[1:], strict=True)):
        _refuse(path, i, spec, _carried_mismatch(spec, session, following, i + 1))


def _refuse(path, i: int, spec: StageSpec, problem: str | None) -> None:
    if problem:
        raise BundleError(
            f"Bundle manifest does not match stage {i} ({spec.name!r}, {spec.file!r}) of "
            f"{str(path)!r}: {problem} Rebuild the bundle with `hapi-onnx bundle` (or restore "
            "its original manifest.json)."
        )


def _stage_mismatch(manifest: Manifest, i: int, session: ort.InferenceSession) -> str | None:
    """What in stage ``i``'s manifest entry its own session contradicts, or ``None``."""
    spec = manifest.stages[i]
    inputs = {a.name: a for a in session.get_inputs()}
    outputs = {a.name: a for a in session.get_outputs()}
    if list(inputs) != [spec.input]:
        return f"'input' is {spec.input!r}, but the stage file's inputs are {list(inputs)!r}."
    fields = {
        "outputs.class": spec.class_output,
        "outputs.confidence": spec.confidence_output,
        "outputs.probs": spec.probs_output,
    }
    if spec.carried is not None:
        fields["carried"] = spec.carried
    if len(set(fields.values())) != len(fields):
        return f"{', '.join(fields)} must name distinct outputs. Got {fields!r}."
    missing = [name for name in fields.values() if name not in outputs]
    if missing:
        return f"missing outputs {missing!r} (the stage file has {sorted(outputs)!r})."
    if i == 0:
        arg, want = inputs[spec.input], manifest.input
        dims = _dims(arg)
        wrong = len(dims) != len(want.shape) or any(
            isinstance(g, int) and g != w for g, w in zip(dims[1:], want.shape[1:], strict=True)
        )
        if arg.type != _ORT_TYPES[want.dtype] or wrong:
            return (
                f"'input' {spec.input!r} is {_show(arg.type, dims)} in the stage file, but the "
                f"manifest's 'input' says {want.dtype} {_show_dims(want.shape)}."
            )
    decision = [
        ("outputs.class", _INT64, ("N",)),
        ("outputs.confidence", _ORT_TYPES["float32"], ("N",)),
        ("outputs.probs", _ORT_TYPES["float32"], ("N", manifest.num_classes)),
    ]
    for field, elem, want in decision:
        arg = outputs[fields[field]]
        dims = _dims(arg)
        wrong = len(dims) != len(want) or any(
            isinstance(g, int) and isinstance(w, int) and g != w for g, w in zip(dims, want, strict=True)
        )
        if arg.type != elem or wrong:
            what = " (num_classes)" if field == "outputs.probs" else ""
            return (
                f"{field} {fields[field]!r} is {_show(arg.type, dims)} in the stage file; expected "
                f"{_show(elem, want)}{what}."
            )
    return None


def _carried_mismatch(
    spec: StageSpec, session: ort.InferenceSession, following: ort.InferenceSession, j: int
) -> str | None:
    """The tensor a stage carries is one stage ``j`` (the next) can read: type, rank, static sizes."""
    out = next(o for o in session.get_outputs() if o.name == spec.carried)
    nxt = following.get_inputs()[0]
    a, b = _dims(out), _dims(nxt)
    wrong = len(a) != len(b) or any(
        isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b, strict=True)
    )
    if out.type != nxt.type or wrong:
        return (
            f"'carried' {spec.carried!r} is {_show(out.type, a)}, but stage {j} reads "
            f"{nxt.name!r} as {_show(nxt.type, b)}."
        )
    return None


def _dims(arg) -> list:
    """An ORT NodeArg's dimensions: int where static, a name or ``None`` where not."""
    return list(arg.shape or [])


def _show(elem: str, dims) -> str:
    return f"{elem} {_show_dims(dims)}"


def _show_dims(dims) -> str:
    return "[" + ", ".join("N" if i == 0 and not isinstance(d, int) else "?" if d is None else str(d)
                           for i, d in enumerate(dims)) + "]"
