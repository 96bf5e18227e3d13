"""The bundle manifest: schema, validation and (de)serialisation of ``manifest.json``.

A bundle (``MODEL.hapi/`` or ``MODEL.hapi.zip``) holds ``manifest.json`` and one ONNX file per
stage under ``stages/``. Stage ``j`` reads the tensor carried out of stage ``j-1`` (the image for
stage 0), runs the backbone up to exit ``j`` and that exit's head, and returns the exit's top-1
class, confidence and probabilities in-graph, plus the tensor to carry to stage ``j+1``. A sample
leaves at the first stage whose confidence is ``>=`` that stage's threshold; the last stage (the
original classifier) has no threshold and decides every sample still running.

Example (format_version 2)::

    {
      "kind": "hapi-onnx bundle", "format_version": 2,
      "input": {"name": "input", "shape": [null, 1, 28, 28], "dtype": "float32"},
      "num_classes": 10, "labels": ["0", ..., "9"] | null,
      "preprocessing": {"version": 1, "resize": 256, "crop": [224, 224], ...} | null,
      "exit_rule": "confidence >= threshold",
      "stages": [
        {"name": "exit3", "file": "stages/00_exit3.onnx", "sha256": "...", "size": 81234, "input": "input",
         "carried": "/layer2/Relu_output_0",
         "outputs": {"class": "hapi_class", "confidence": "hapi_confidence", "probs": "hapi_probs"},
         "threshold": 0.93},
        {"name": "final", ..., "carried": null, "threshold": null}
      ],
      "design": {"predicted": {...}, "constraints": {...}, ...} | null,
      "provenance": {"source_fingerprint": "...", "hapi_onnx_version": "0.2.0", "created": "..."},
      "path": {"steps": [[0.999], [0.98], [0.93]], "budget_pp": 1.0, "reference": "labels", "level": 0.9}
    }

``path`` (optional; bundles without it load as before, and runtimes that do not know it ignore it,
so the format version stays 2) is the certified search's path (:mod:`hapi_onnx.search.guarantee`)
from the full model to the shipped design: ``steps`` holds one threshold per intermediate stage
for each design on it, safest first, after the full model itself (every sample to the final
stage), which always comes first and is not listed; the last step is the stages' thresholds.
``budget_pp`` is the accuracy-drop budget (points; null when the design had only an accuracy
floor) every step was certified for at ``level``, against ``reference`` (``labels``: losses
against the true classes; ``final``: disagreement with the full model). The runtime's drift
monitor (:mod:`hapi_onnx.runtime.monitor`) moves along it; when its last step is not the stages'
thresholds (they were edited after the search), it no longer leads to them and the monitor derives
a path instead.

A stage's ``size`` (bytes of its file) is optional (bundles written before it was recorded have
none); when present, a file of another size is refused before it is read.

Each stage's ``name`` and ``threshold`` are one :class:`~hapi_onnx.choice.ExitChoice` (the one
threshold rule and comparison of :mod:`hapi_onnx.choice`); thresholds live only in the stages.
The JSON is read with the bounds of :mod:`hapi_onnx.artifact`.

``preprocessing`` is a :class:`~hapi_onnx.runtime.preprocess.Preprocessing` spec, resolved for
the input (channel order and layout set), or null when the bundle does not know how its input
was made.

Imports only the standard library and numpy (through :mod:`hapi_onnx.choice` and
:mod:`hapi_onnx.runtime.preprocess`): the runtime reads this on the edge device, and the bundle
writer imports it from here.
"""

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from hapi_onnx.artifact import Kind, parse_json
from hapi_onnx.choice import ExitChoice, check_choices, check_threshold
from hapi_onnx.errors import BundleError, HapiError, as_error
from hapi_onnx.runtime.preprocess import Preprocessing

KIND = "hapi-onnx bundle"
FORMAT_VERSION = 2
MANIFEST = Kind(KIND, FORMAT_VERSION, tagged=True)
MANIFEST_NAME = "manifest.json"
EXIT_RULE = "confidence >= threshold"
SUPPORTED_DTYPES = ("float32",)
# A stage file is stages/<plain name>.onnx: no folders, no "..", nothing absolute.
STAGE_FILE_PATTERN = re.compile(r"^stages/[A-Za-z0-9_][A-Za-z0-9_.\-]*\.onnx$")

_REBUILD = "The bundle is malformed; rebuild it with `hapi-onnx bundle`."


def _fail(where: str, message: str) -> BundleError:
    return BundleError(f"Bundle manifest {where}: {message} {_REBUILD}")


def _get(data: dict, key: str, types: tuple, what: str, where: str, optional: bool = False) -> Any:
    """``data[key]`` checked against ``types``; the key is required, ``None`` allowed when ``optional``."""
    if key not in data:
        raise _fail(where, f"field {key!r} is missing.")
    value = data[key]
    if value is None and optional:
        return None
    # bool is an int subclass: never accept it where a number is expected.
    if isinstance(value, bool) and bool not in types:
        raise _fail(where, f"field {key!r} must be {what}. Got {value!r} instead.")
    if not isinstance(value, types):
        raise _fail(where, f"field {key!r} must be {what}. Got {value!r} instead.")
    return value


def _name(data: dict, key: str, where: str, optional: bool = False) -> str | None:
    value = _get(data, key, (str,), "a non-empty string", where, optional)
    if value == "":
        raise _fail(where, f"field {key!r} must be a non-empty string. Got '' instead.")
    return value


@dataclass(frozen=True)
class InputSpec:
    """The image input of stage 0.

    Attributes:
        name (str): Input tensor name.
        shape (tuple): Dimensions; ``None`` where any size is accepted. The batch axis is ``None``,
            or 1 where the model's graph fixes it: such a bundle runs one sample per stage call.
        dtype (str): numpy dtype name; ``float32``.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Any) -> "InputSpec":
        where = "'input'"
        if not isinstance(data, dict):
            raise _fail(where, f"must be an object. Got {data!r} instead.")
        name = _name(data, "name", where)
        shape = _get(data, "shape", (list,), "a list of dimensions", where)
        if len(shape) != 4 or any(
            d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 1) for d in shape
        ):
            raise _fail(where, f"'shape' must be 4 dimensions, each a positive int or null. Got {shape!r}.")
        dtype = _get(data, "dtype", (str,), "a dtype name", where)
        if dtype not in SUPPORTED_DTYPES:
            raise _fail(where, f"'dtype' must be one of {SUPPORTED_DTYPES}. Got {dtype!r} instead.")
        return cls(name=name, shape=(None if shape[0] != 1 else 1, *shape[1:]), dtype=dtype)

    @property
    def batch_fixed(self) -> bool:
        """Whether the stages take one sample per call (the model's graph fixes its batch at 1)."""
        return self.shape[0] == 1


@dataclass(frozen=True)
class StageSpec:
    """One stage file and how the runtime wires it.

    Attributes:
        exit (ExitChoice): The exit this stage ends at and its threshold (None for the last stage).
        file (str): Path inside the bundle, ``stages/<name>.onnx``.
        sha256 (str): Hex sha256 of the file's bytes.
        input (str): The stage's one input: the image (stage 0) or the previous stage's carried tensor.
        carried (str | None): Output carried to the next stage; ``None`` for the last stage.
        class_output (str): int64[N] top-1 class output.
        confidence_output (str): float32[N] max-probability output.
        probs_output (str): float32[N, C] probabilities output.
        size (int | None): Bytes of the file, if recorded.
    """

    exit: ExitChoice
    file: str
    sha256: str
    input: str
    carried: str | None
    class_output: str
    confidence_output: str
    probs_output: str
    size: int | None = None

    @property
    def name(self) -> str:
        """The exit's name (``exit<k>``, or ``final``)."""
        return self.exit.name

    @property
    def threshold(self) -> float | None:
        """The exit's threshold (None for the last stage)."""
        return self.exit.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "sha256": self.sha256,
            **({} if self.size is None else {"size": self.size}),
            "input": self.input,
            "carried": self.carried,
            "outputs": {
                "class": self.class_output,
                "confidence": self.confidence_output,
                "probs": self.probs_output,
            },
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Any, index: int) -> "StageSpec":
        where = f"stage {index}"
        if not isinstance(data, dict):
            raise _fail(where, f"must be an object. Got {data!r} instead.")
        file = _name(data, "file", where)
        if not STAGE_FILE_PATTERN.match(file) or ".." in file:
            raise _fail(where, f"'file' must be a plain 'stages/<name>.onnx' path. Got {file!r} instead.")
        digest = _get(data, "sha256", (str,), "a hex sha256", where)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise _fail(where, f"'sha256' must be 64 lowercase hex digits. Got {digest!r} instead.")
        size = _get(data, "size", (int,), "a byte count", where, optional=True) if "size" in data else None
        if size is not None and size < 1:
            raise _fail(where, f"'size' must be a positive byte count. Got {size!r} instead.")
        outputs = _get(data, "outputs", (dict,), "an object with class/confidence/probs", where)
        threshold = _get(data, "threshold", (int, float), "a number or null", where, optional=True)
        try:
            choice = ExitChoice(_name(data, "name", where), threshold)
        except HapiError as err:
            raise _fail(where, str(err)) from None
        return cls(
            exit=choice,
            file=file,
            sha256=digest,
            input=_name(data, "input", where),
            carried=_name(data, "carried", where, optional=True),
            class_output=_name(outputs, "class", f"{where} outputs"),
            confidence_output=_name(outputs, "confidence", f"{where} outputs"),
            probs_output=_name(outputs, "probs", f"{where} outputs"),
            size=size,
        )


def _preprocessing(data: dict | None, input_spec: InputSpec) -> Preprocessing | None:
    """The manifest's spec, validated and checked against the input it makes."""
    if data is None:
        return None
    where = "'preprocessing'"
    try:
        spec = Preprocessing.from_dict(data)
        resolved = spec.for_input(input_spec.shape, "the bundle's input")
    except HapiError as err:
        raise _fail(where, str(err)) from None
    if spec != resolved:
        raise _fail(where, f"must set channel_order and layout for the input {list(input_spec.shape)}. "
                           f"Got {spec.channel_order!r} and {spec.layout!r} instead.")
    return spec


@dataclass(frozen=True)
class CertifiedPath:
    """The designs from the full model to the shipped one, certified for one drop budget.

    Attributes:
        steps (tuple[tuple[float, ...], ...]): One threshold per intermediate stage for each
            design, safest first; the full model (no early exit) comes before the first and is
            not listed; the last is the shipped design's thresholds (as written by the bundler).
        budget_pp (float | None): The accuracy-drop budget in points each step was certified for
            (None when the design had only an accuracy floor).
        reference (str): ``labels`` or ``final`` (what a loss was counted against).
        level (float): The certificate's probability.
    """

    steps: tuple[tuple[float, ...], ...]
    budget_pp: float | None
    reference: str
    level: float

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [list(s) for s in self.steps], "budget_pp": self.budget_pp,
                "reference": self.reference, "level": self.level}

    @classmethod
    def from_dict(cls, data: Any, thresholds: tuple[float, ...]) -> "CertifiedPath":
        """Validate a decoded ``path`` against the stages' ``thresholds`` (one per intermediate stage)."""
        where = "'path'"
        if not isinstance(data, dict):
            raise _fail(where, f"must be an object. Got {data!r} instead.")
        steps = _get(data, "steps", (list,), "a list of threshold lists", where)
        try:
            steps = tuple(tuple(check_threshold(t, "a path threshold") for t in step) for step in steps
                          if isinstance(step, list))
        except HapiError as err:
            raise _fail(where, str(err)) from None
        if not steps or len(steps) != len(data["steps"]) or any(len(step) != len(thresholds) for step in steps):
            raise _fail(where, f"'steps' must be a non-empty list of lists of {len(thresholds)} thresholds "
                               f"(one per intermediate stage). Got {data['steps']!r}.")
        budget = _get(data, "budget_pp", (int, float), "a number of points or null", where, optional=True)
        reference = _get(data, "reference", (str,), "'labels' or 'final'", where)
        level = _get(data, "level", (int, float), "a probability", where)
        if (budget is not None and not 0 <= budget <= 100) or reference not in ("labels", "final") or not 0 < level < 1:
            raise _fail(where, f"needs budget_pp in [0, 100] or null, reference 'labels' or 'final' and level in "
                               f"(0, 1). Got {budget!r}, {reference!r}, {level!r}.")
        return cls(steps=steps, budget_pp=None if budget is None else float(budget), reference=reference,
                   level=float(level))


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``.

    Attributes:
        input (InputSpec): The image input.
        num_classes (int): Number of classes.
        stages (tuple[StageSpec, ...]): Stages in execution order; the last one is the final classifier.
        labels (tuple[str, ...] | None): Class names, index = class id, if known.
        preprocessing (Preprocessing | None): How decoded pixels become the input (resolved:
            channel order and layout set), if known.
        design (dict | None): Summary of the design it ships (predicted metrics, constraints,
            fingerprints); its exits and thresholds are the stages'.
        provenance (dict): Source model fingerprint, hapi-onnx version, creation time.
        path (CertifiedPath | None): The certified path to the shipped design, if recorded.
    """

    input: InputSpec
    num_classes: int
    stages: tuple[StageSpec, ...]
    labels: tuple[str, ...] | None
    preprocessing: Preprocessing | None
    design: dict[str, Any] | None
    provenance: dict[str, Any]
    path: CertifiedPath | None = None

    @property
    def exits(self) -> tuple[ExitChoice, ...]:
        """The exit and threshold of every stage, the final classifier last."""
        return tuple(s.exit for s in self.stages)

    @property
    def exit_names(self) -> tuple[str, ...]:
        """Exit name of every stage, ``final`` last."""
        return tuple(s.name for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "input": self.input.to_dict(),
            "num_classes": self.num_classes,
            "labels": None if self.labels is None else list(self.labels),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
            "exit_rule": EXIT_RULE,
            "stages": [s.to_dict() for s in self.stages],
            "design": self.design,
            "provenance": self.provenance,
            **({} if self.path is None else {"path": self.path.to_dict()}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        """Validate a decoded manifest.

        Raises:
            BundleError: when it is not a hapi-onnx bundle manifest of this version, or any field
                is missing, of the wrong type, or inconsistent with the others.
        """
        with as_error(BundleError):
            MANIFEST.check(data, f"The bundle's {MANIFEST_NAME}")
        where = "top level"
        rule = _get(data, "exit_rule", (str,), f"{EXIT_RULE!r}", where)
        if rule != EXIT_RULE:
            raise _fail(where, f"'exit_rule' must be {EXIT_RULE!r}. Got {rule!r} instead.")
        num_classes = _get(data, "num_classes", (int,), "a positive int", where)
        if num_classes < 1:
            raise _fail(where, f"'num_classes' must be a positive int. Got {num_classes!r} instead.")
        labels = _get(data, "labels", (list,), "a list of strings or null", where, optional=True)
        if labels is not None and (len(labels) != num_classes or not all(isinstance(x, str) for x in labels)):
            raise _fail(where, f"'labels' must be {num_classes} strings (one per class). Got {labels!r}.")
        raw_stages = _get(data, "stages", (list,), "a non-empty list", where)
        if not raw_stages:
            raise _fail(where, "'stages' must list at least the final stage. Got [] instead.")
        stages = tuple(StageSpec.from_dict(s, i) for i, s in enumerate(raw_stages))
        input_spec = InputSpec.from_dict(data.get("input"))
        manifest = cls(
            input=input_spec,
            num_classes=num_classes,
            stages=stages,
            labels=None if labels is None else tuple(labels),
            preprocessing=_preprocessing(
                _get(data, "preprocessing", (dict,), "a preprocessing spec or null", where, optional=True), input_spec
            ),
            design=_get(data, "design", (dict,), "an object or null", where, optional=True),
            provenance=_get(data, "provenance", (dict,), "an object", where),
        )
        manifest._check_wiring()
        if data.get("path") is not None:
            thresholds = tuple(s.threshold for s in stages[:-1])
            manifest = replace(manifest, path=CertifiedPath.from_dict(data["path"], thresholds))
        return manifest

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        """Decode and validate ``manifest.json``'s text.

        Raises:
            BundleError: when it is not JSON or not a valid manifest.
        """
        with as_error(BundleError):
            data = parse_json(text, f"The bundle's {MANIFEST_NAME}")
        return cls.from_dict(data)

    def _check_wiring(self) -> None:
        """Stages chain input -> carried -> input, thresholds on all but the last, files unique."""
        files = [s.file for s in self.stages]
        if len(set(files)) != len(files):
            raise _fail("'stages'", f"each stage needs its own file. Got {files!r}.")
        expected_input = self.input.name
        last = len(self.stages) - 1
        for i, stage in enumerate(self.stages):
            where = f"stage {i} ({stage.name!r})"
            if stage.input != expected_input:
                raise _fail(where, f"'input' must be {expected_input!r} (what the previous stage carries). "
                                   f"Got {stage.input!r} instead.")
            if i < last:
                if stage.threshold is None or stage.carried is None:
                    raise _fail(where, "an intermediate stage needs a 'threshold' and a 'carried' output.")
                expected_input = stage.carried
            elif stage.threshold is not None or stage.carried is not None:
                raise _fail(where, "the last stage decides every remaining sample: its 'threshold' and "
                                   "'carried' must be null.")
        try:
            check_choices(self.exits)
        except HapiError as err:
            raise _fail("'stages'", str(err)) from None
