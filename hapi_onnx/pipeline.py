"""One-shot build: export -> attach -> calibrate -> profile -> search -> bundle -> evaluate.

Every step writes its output atomically into a work directory and records, in
``WORKDIR/.steps/<step>.json``, a key over everything it read (the step's parameters and the
sha256 of its input files) and the sha256 of what it wrote. A step is skipped when its record's
key matches and its output still has the recorded hash, so an interrupted build resumes where it
stopped, and a changed SLA re-runs only search onward.
"""

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hapi_onnx import __version__
from hapi_onnx.artifact import Kind
from hapi_onnx.checks import finite_number
from hapi_onnx.errors import HapiError
from hapi_onnx.files import (
    OUTPUT_RECORD,
    check_outputs_apart,
    file_labels,
    missing_parents,
    read_output_record,
    sha256_file,
)
from hapi_onnx.runtime.preprocess import Preprocessing
from hapi_onnx.search.constraints import Constraints, take_constraints

Log = Callable[[str], None]

SPLITS = ("train", "calib", "test")
STEPS = ("data", "export", "attach", "calibrate", "profile", "search", "bundle", "evaluate")


@dataclass(frozen=True)
class BuildConfig:
    """What to build, from flags or a JSON config file (the flags' names or the fields below, ``-``
    or ``_``: ``latency-sla`` or ``latency_sla_ms``); checked whole at construction, so a bad
    option fails before any step runs.

    Attributes:
        model (str | tuple[str, ...]): The trained CNN: an ``.onnx`` file, or a PyTorch state dict with
            ``factory``. Several ``.onnx`` files (a list in a config file): candidate backbones for the
            same task and data, each attached, calibrated and profiled on its own, then searched as one
            design space (:mod:`hapi_onnx.search.backbones`: no drop budget then).
        constraints (Constraints): What the design must meet (in a config file: its fields
            ``latency_sla_ms``, ``percentile``, ``min_accuracy``, ``max_accuracy_drop``,
            ``bound_level``, ``space`` at the top level).
        factory (str | None): ``file.py:name`` or ``module:name`` building the PyTorch model.
        input_shape (tuple[int, ...] | None): ``N,C,H,W`` for a PyTorch export.
        data (str): ``mnist`` (the demo digits, split 3000/1000/1000 with seed 0: the split the
            demo model was trained on, so its test images stay unseen) or a folder holding the
            splits ``train``, ``calib`` and ``test``, each an ``.npz`` (``train.npz``) or a folder
            of class subfolders of images (``train/cat/1.jpg``).
        device (str): Device preset name or file to profile and evaluate on.
        exits (tuple[str, ...] | None): Candidate tensors to consider; default: every candidate.
        max_candidates (int | None): Thin the candidate list to this many.
        pooling (str): Head pooling, ``auto``, ``gap`` or ``gap+2x2``.
        profile_budget_s (float | None): Seconds of timed runs per piece (default: the preset's).
        eval_batch_size (int): Batch size of the evaluation's throughput measurement.
        preprocess (str | dict | None): How images become the model's input: a preset name
            (``none``, ``imagenet``, ``inception``), a spec dict, or the path of a JSON file;
            applied to image folders, recorded with arrays. Defaults to None (``none`` for folders).
        time_stages (bool): Search times the fused stages of its choice and closest rivals on the
            calibration inputs and predicts from them (:mod:`hapi_onnx.search.stages`); False: from
            the profiled pieces alone. Defaults to True.
    """

    model: str | tuple[str, ...]
    constraints: Constraints
    factory: str | None = None
    input_shape: tuple[int, ...] | None = None
    data: str = "mnist"
    device: str = "cpu-1t"
    exits: tuple[str, ...] | None = None
    max_candidates: int | None = None
    pooling: str = "auto"
    profile_budget_s: float | None = None
    eval_batch_size: int = 64
    preprocess: str | dict | None = None
    time_stages: bool = True

    def __post_init__(self):
        from hapi_onnx.exits.pooling import POOLINGS
        from hapi_onnx.profile.presets import load_preset

        if isinstance(self.model, (list, tuple)):  # several candidate models (one: as a plain build)
            models = tuple(self.model)
            if not models or not all(isinstance(m, str) and m for m in models) or len(set(models)) != len(models):
                raise HapiError(f"build option 'model' must name distinct model files. Got {self.model!r} instead.")
            object.__setattr__(self, "model", models[0] if len(models) == 1 else models)
        if len(self.models) > 1:
            from hapi_onnx.search.backbones import check_joint_constraints

            if self.factory is not None or self.input_shape is not None:
                raise HapiError("with several models, give each as an .onnx file (export a PyTorch model first with "
                                "`hapi-onnx export`); --factory and --input-shape apply to one model.")
            check_joint_constraints(self.constraints, len(self.models))
        single = () if isinstance(self.model, tuple) else ("model",)  # several: checked above
        for name in single + ("data", "device") + (("factory",) if self.factory is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise HapiError(f"build option {name!r} must be a non-empty string. Got {value!r} instead.")
        if not isinstance(self.constraints, Constraints):
            raise HapiError(f"build option 'constraints' must be a Constraints. Got {self.constraints!r} instead.")
        if self.input_shape is not None:
            from hapi_onnx.graph.load import parse_input_shape

            object.__setattr__(self, "input_shape", parse_input_shape(self.input_shape))
        if self.exits is not None:
            if isinstance(self.exits, str) or not all(isinstance(e, str) and e for e in self.exits):
                raise HapiError(f"build option 'exits' must be a list of tensor names. Got {self.exits!r} instead.")
            object.__setattr__(self, "exits", tuple(self.exits))
        for name, low in (("max_candidates", 1), ("eval_batch_size", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise HapiError(f"build option {name!r} must be an int >= {low}. Got {value!r} instead.")
        budget = self.profile_budget_s
        if budget is not None and not (finite_number(budget) and budget > 0):
            raise HapiError(f"build option 'profile_budget_s' must be seconds > 0. Got {budget!r} instead.")
        if self.pooling not in POOLINGS:
            raise HapiError(
                f"build option 'pooling' must be one of {', '.join(POOLINGS)}. Got {self.pooling!r} instead."
            )
        if self.preprocess is not None and not isinstance(self.preprocess, (str, dict)):
            raise HapiError(f"build option 'preprocess' must be a preset name, a spec object or a JSON file. "
                            f"Got {self.preprocess!r} instead.")
        if not isinstance(self.time_stages, bool):
            raise HapiError(f"build option 'time_stages' must be true or false. Got {self.time_stages!r} instead.")
        _config_preprocessing(self.preprocess)  # a bad spec fails now, not after the first steps
        load_preset(self.device).check_providers()  # an unknown device fails now, not after attach

    @property
    def models(self) -> tuple[str, ...]:
        """The candidate model files (one for a plain build)."""
        return self.model if isinstance(self.model, tuple) else (self.model,)

    @classmethod
    def from_options(cls, options: dict[str, Any], note: Log | None = None) -> "BuildConfig":
        """Build from flat options (a config file's keys or the CLI's flags), constraints included.

        Keys renamed since 0.1 (``confidence`` -> ``bound_level``, ``thresholds`` -> ``space``) are
        still read, with one line to ``note``.

        Raises:
            HapiError: for an unknown key or any invalid value.
        """
        values = {key.replace("-", "_"): value for key, value in options.items() if value is not None}
        for flag, field_name in FLAG_KEYS.items():  # the flags' own names (--latency-sla) name the fields too
            if flag in values:
                if field_name in values:
                    raise HapiError(f"build options {flag!r} and {field_name!r} are the same option; give one.")
                values[field_name] = values.pop(flag)
        constraints = take_constraints(values, note)
        known = ({f.name for f in fields(cls)} - {"constraints"}) | {f.name for f in fields(Constraints)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HapiError(f"unknown build option(s) {unknown}. Known: {sorted(known)}.")
        if "model" not in values:
            raise HapiError("a build needs the model to build from: give MODEL, or 'model' in the config file.")
        return cls(constraints=Constraints(**constraints), **values)

    @classmethod
    def from_file(cls, path: str | os.PathLike, note: Log | None = None, **overrides: Any) -> "BuildConfig":
        """Read a JSON config; relative paths in it are relative to the file. ``overrides`` win."""
        path = Path(path)
        values = BUILD_CONFIG.load(path, lambda raw: {key.replace("-", "_"): value for key, value in raw.items()})
        if isinstance(values.get("model"), list):
            values["model"] = [str(path.parent / m) if isinstance(m, str) and not Path(m).is_absolute() else m
                               for m in values["model"]]
        for key in ("model", "data", "device", "factory", "preprocess"):
            value = values.get(key)
            if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
                candidate = path.parent / value
                if candidate.exists() or key != "factory":
                    values[key] = str(candidate)
        flags = {k.replace("-", "_"): v for k, v in overrides.items() if v is not None}
        flags = {FLAG_KEYS.get(k, k): v for k, v in flags.items()}
        for flag, field_name in FLAG_KEYS.items():  # a flag overrides the file's key, in either spelling
            if field_name in flags:
                values.pop(flag, None)
        values.update(flags)
        try:
            return cls.from_options(values, note)
        except HapiError as err:
            if any(f"'{key}'" in str(err) for key in flags):  # the messages quote the key: a flag's value is wrong
                raise
            raise HapiError(f"build config {str(path)!r}: {err}") from None


BUILD_CONFIG = Kind("build config")  # written by users: no kind, no version
STEP_RECORD = Kind("hapi-onnx step record", 1, tagged=True)  # work/.steps/<step>.json: what a step was run on
FLAG_KEYS = {"latency_sla": "latency_sla_ms", "profile_budget": "profile_budget_s"}
"""Flag names (``--latency-sla``) whose field carries a unit (``latency_sla_ms``): both are accepted."""


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith((".onnx", ".pt", ".pth", ".json", ".py")) or Path(value).exists()


@dataclass(frozen=True)
class BuildResult:
    """Where a build left its artifacts, and what it measured.

    Attributes:
        workdir (Path): The work directory.
        paths (dict[str, Path]): Output of every step, by step name.
        reused (list[str]): Steps skipped because their inputs were unchanged.
        seconds (dict[str, float]): Wall time of every step that ran.
    """

    workdir: Path
    paths: dict[str, Path]
    reused: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class _Steps:
    """Runs named steps with input-keyed caching in ``workdir/.steps``."""

    def __init__(self, workdir: Path, log: Log):
        self.workdir = workdir
        self.log = log
        self.records = workdir / ".steps"
        self.reused: list[str] = []
        self.seconds: dict[str, float] = {}

    def run(self, name: str, output: Path, inputs: list[Path], params: dict[str, Any], make: Callable[[], None]):
        """Run ``make`` (which writes ``output`` atomically) unless a matching record says it is done."""
        key = _key(name, inputs, params)
        record = self.records / f"{name}.json"
        if output.exists() and record.is_file():
            try:
                done = STEP_RECORD.load(record, dict)
            except HapiError:  # not one this version wrote: run the step again
                done = {}
            if done.get("key") == key and done.get("output_sha256") == _hash_path(output):
                self.log(f"[{name}] up to date, reusing {output.relative_to(self.workdir)}")
                self.reused.append(name)
                return
        self.log(f"[{name}] running")
        start = time.perf_counter()
        make()
        self.seconds[name] = time.perf_counter() - start
        STEP_RECORD.save({"key": key, "output_sha256": _hash_path(output)}, record)
        self.log(f"[{name}] done in {self.seconds[name]:.1f} s -> {output.relative_to(self.workdir)}")


def _hash_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode())
        digest.update(sha256_file(item).encode())
    return digest.hexdigest()


def _key(name: str, inputs: list[Path], params: dict[str, Any]) -> str:
    payload = {
        "step": name,
        "hapi_onnx": __version__,
        "params": params,
        "inputs": [_hash_path(p) for p in inputs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def build(config: BuildConfig, workdir: str | os.PathLike, log: Log | None = None) -> BuildResult:
    """Run the whole flow in ``workdir``, reusing every step whose inputs are unchanged.

    Args:
        config (BuildConfig): What to build.
        workdir (PathLike): Work directory (created if needed).
        log (Callable[[str], None] | None): Receives progress lines. Defaults to none.

    Returns:
        BuildResult: Paths of every artifact (``data``, ``model``, ``ee``, ``trace``, ``latency``,
        ``design``, ``bundle``, ``report``; with several models, the chosen model's, and ``front``,
        the joint search) and which steps were reused.

    Raises:
        HapiError: for any bad input along the way (the failing step's output is not written).
    """
    work = Path(workdir)
    if work.exists() and not work.is_dir():
        raise HapiError(f"work directory {str(work)!r} exists and is not a folder.")
    splits = _check_inputs(config, work)  # before anything is created
    _check_workdir(work)
    record = work / OUTPUT_RECORD
    made = [p for p in (work, work / ".steps", record) if not p.exists()]
    parents = missing_parents(work)

    def undo() -> None:  # what this build made, when no step is done
        if not any((work / ".steps").glob("*.json")):
            for path in reversed(made):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            for parent in parents:
                with contextlib.suppress(OSError):
                    parent.rmdir()

    try:
        (work / ".steps").mkdir(parents=True, exist_ok=True)
        if record in made:
            record.write_text(json.dumps({"kind": "build", "files": [*OUTPUTS, ".steps"]}) + "\n")
    except OSError as err:
        undo()
        raise HapiError(f"cannot create work directory {str(work)!r}: {err.strerror or err}.") from None
    with _exclusive(work):
        try:
            return _build(config, work, log or (lambda line: None), splits)
        except BaseException:
            undo()  # no step done: leave nothing
            raise


def _check_workdir(work: Path) -> None:
    """Refuse a non-empty work directory that no build wrote: a build writes its outputs into it
    (``model.onnx``, ``data/``, ...) and must never overwrite a user's files of the same names.
    Ours: it holds the build's :data:`~hapi_onnx.files.OUTPUT_RECORD`, or (builds before it) ``.steps/``."""
    if not work.is_dir() or not any(work.iterdir()):
        return
    record = work / OUTPUT_RECORD
    ours = (read_output_record(record) or {}).get("kind") == "build"
    if not ours and not ((work / ".steps").is_dir() and not (work / ".steps").is_symlink()):
        raise HapiError(
            f"work directory {str(work)!r} already exists and is not one a build wrote; a build writes "
            f"{', '.join(OUTPUTS)} into it. Choose a new or empty --workdir."
        )


def _check_inputs(config: BuildConfig, work: Path) -> dict[str, dict[str, Any] | None]:
    """Refuse, before the build creates anything, a work directory among the inputs, a missing or
    invalid model, models of different class counts, and user data that is missing, invalid,
    overlapping or does not fit a model.

    Returns:
        dict: By model file, the user's train/calib/test data, opened (and fitted to an ONNX model's
        input); None for the demo digits.
    """
    from hapi_onnx.data import open_dataset
    from hapi_onnx.profile.presets import available_presets

    inputs = {"model" if len(config.models) == 1 else f"model {m}": m for m in config.models}
    inputs["factory"] = (_factory_files(config.factory) or [None])[0]
    inputs["data"] = None if config.data == "mnist" else config.data
    inputs["device"] = None if config.device in available_presets() else config.device
    check_outputs_apart({"--workdir": work}, inputs)
    for model in config.models:
        if not Path(model).exists():
            raise HapiError(f"model {model!r} does not exist.")
    splits = None
    if config.data != "mnist":
        spec = _config_preprocessing(config.preprocess)
        splits = {name: open_dataset(_split_path(Path(config.data), name), spec) for name in SPLITS}
        _check_splits(splits)
    fitted = {model: _fit_model(config, model, splits) for model in config.models}
    if len(config.models) > 1:
        _check_same_classes(config.models)
    return fitted


def _fit_model(config: BuildConfig, model: str, splits: dict[str, Any] | None) -> dict[str, Any] | None:
    """The splits fitted to ``model``'s input (an ONNX model must load and fit the data)."""
    from hapi_onnx.export import source_is_onnx
    from hapi_onnx.graph import input_spec, load_model

    if not source_is_onnx(model, config.factory, config.input_shape):
        return splits
    full_shape = input_spec(load_model(model)).shape
    model_shape = full_shape[1:]
    images = MNIST_IMAGE if splits is None else splits["train"].image_shape  # None: images, not arrays
    if images is not None and any(isinstance(m, int) and m != d for m, d in zip(model_shape, images, strict=True)):
        source = "the demo MNIST digits are" if splits is None else f"the images in {config.data!r} are"
        which = "the model" if len(config.models) == 1 else f"the model {model!r}"
        raise HapiError(
            f"{source} C x H x W = {' x '.join(map(str, images))} but {which} expects "
            f"{' x '.join(map(str, model_shape))}. Give --data a folder of train/calib/test .npz that fits it."
        )
    if splits is None:
        return None
    return {name: data.fit_to(full_shape) for name, data in splits.items()}  # image folders: the model's spec


def _check_same_classes(models: tuple[str, ...]) -> None:
    """Refuse candidate models whose classifiers have different class counts (one task, one label set)."""
    from hapi_onnx.exits.attach import final_output
    from hapi_onnx.graph import load_model

    counts = {model: final_output(load_model(model))[2] for model in models}
    first = models[0]
    for model in models[1:]:
        if counts[model] != counts[first]:
            raise HapiError(
                f"model {model!r} has {counts[model]} classes but {first!r} has {counts[first]}: the models "
                "of one build must classify the same classes (same task, same labels)."
            )


def model_folder(model: str) -> str:
    """A model's folder under ``WORKDIR/models``: its name and a hash of its resolved path, so adding
    or removing other models never moves it."""
    digest = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:10]
    return f"{Path(model).stem}-{digest}"


def _build(config: BuildConfig, work: Path, log: Log, fitted: dict[str, dict[str, Any] | None]) -> BuildResult:
    from hapi_onnx.bundle import bundle_from_design
    from hapi_onnx.data import write_mnist_splits
    from hapi_onnx.evaluate import evaluate_bundle
    from hapi_onnx.profile.presets import load_preset
    from hapi_onnx.profile.table import LatencyTable
    from hapi_onnx.search import search
    from hapi_onnx.search.stages import StageTimer
    from hapi_onnx.trace import Trace

    _remove_stale_temporaries(work)
    steps = _Steps(work, log)
    paths: dict[str, Path] = {}

    # data: the demo splits, or the user's folder of train/calib/test (.npz or image folders)
    if config.data == "mnist":
        data_dir = work / "data"
        paths["data"] = data_dir
        steps.run(
            "data", data_dir, [], {"source": "mnist", "seed": 0},
            lambda: write_mnist_splits(data_dir, seed=0),
        )
    else:
        data_dir = Path(config.data)
        paths["data"] = data_dir
    split_files = {name: _split_path(data_dir, name) for name in SPLITS}
    preset = load_preset(config.device)

    if len(config.models) > 1:
        return _build_joint(config, work, steps, paths, split_files, fitted)

    paths.update(_model_steps(config, config.model, work, "", steps, split_files, fitted[config.model]))

    paths["design"] = work / "design.json"
    steps.run(
        "search", paths["design"], [paths["trace"], paths["latency"]] + ([paths["ee"], split_files["calib"]]
                                                                        if config.time_stages else []),
        {**config.constraints.to_dict(), "time_stages": config.time_stages},
        lambda: search(
            Trace.load(paths["trace"]), LatencyTable.load(paths["latency"]), config.constraints,
            stages=StageTimer.from_files(paths["ee"], split_files["calib"], config.device)
            if config.time_stages else None,
        ).save(paths["design"]),
    )

    paths["bundle"] = work / "model.hapi"
    steps.run(
        "bundle", paths["bundle"], [paths["ee"], paths["design"]], {},
        lambda: bundle_from_design(paths["ee"], paths["design"], paths["bundle"]),
    )

    paths["report"] = work / "report.json"
    steps.run(
        "evaluate", paths["report"], [paths["bundle"], paths["model"], split_files["test"]],
        {"device": asdict(preset), "batch_size": config.eval_batch_size},
        lambda: evaluate_bundle(  # the spec the bundle recorded
            paths["bundle"], split_files["test"], device=config.device,
            full_model=paths["model"], batch_size=config.eval_batch_size,
            progress=_counter(log, "evaluate: samples"),
        ).save(paths["report"]),
    )
    return BuildResult(work, paths, steps.reused, steps.seconds)


def _model_steps(
    config: BuildConfig, model: str, folder: Path, tag: str, steps: "_Steps", split_files: dict[str, Path],
    splits: dict[str, Any] | None,
) -> dict[str, Path]:
    """Export, attach, calibrate and profile one model into ``folder`` (step records named ``<step><tag>``).

    Returns:
        dict[str, Path]: ``model``, ``ee``, ``trace`` and ``latency``.
    """
    from hapi_onnx.calibrate import calibrate
    from hapi_onnx.data import open_dataset
    from hapi_onnx.exits.attach import attach_exits
    from hapi_onnx.export import export_model
    from hapi_onnx.profile.presets import load_preset
    from hapi_onnx.profile.profile import profile_model
    from hapi_onnx.search import check_reachable
    from hapi_onnx.trace import Trace

    log = steps.log
    spec = _config_preprocessing(config.preprocess)
    if splits is None:  # the demo digits, just written (or reused)
        splits = {name: open_dataset(path, spec) for name, path in split_files.items()}
        _check_splits(splits)
    paths = {"model": folder / "model.onnx", "ee": folder / "ee.onnx", "trace": folder / "trace.npz",
             "latency": folder / "latency.json"}
    source = Path(model)
    steps.run(
        f"export{tag}", paths["model"], [source] + _factory_files(config.factory),
        {"factory": config.factory, "input_shape": list(config.input_shape) if config.input_shape else None},
        lambda: export_model(
            source, paths["model"], factory=config.factory,
            input_shape=config.input_shape,
        ),
    )

    if f"export{tag}" not in steps.reused:
        import onnx

        from hapi_onnx.graph import load_notes

        # export saved a loaded model: its notes are in its metadata, no need to load it again
        for note in load_notes(onnx.load(paths["model"], load_external_data=False)):
            log(f"[export{tag}] note: {note}")

    def attach() -> None:
        result = attach_exits(
            paths["model"], splits["train"], exits=list(config.exits) if config.exits else None, pooling=config.pooling,
            max_candidates=config.max_candidates, progress=_counter(log, "attach: features"),
            head_progress=_counter(log, "attach: heads", every=1),
        )
        result.save(paths["ee"])

    steps.run(
        f"attach{tag}", paths["ee"], [paths["model"], split_files["train"]],
        {"exits": list(config.exits) if config.exits else None, "pooling": config.pooling,
         "max_candidates": config.max_candidates, "preprocess": None if spec is None else spec.to_dict()}, attach,
    )

    steps.run(  # the spec attach recorded in ee.onnx
        f"calibrate{tag}", paths["trace"], [paths["ee"], split_files["calib"]], {},
        lambda: calibrate(paths["ee"], split_files["calib"], progress=_counter(log, "calibrate")).save(
            paths["trace"]),
    )
    if len(config.models) == 1:  # an unreachable floor stops before profile (of several, another may reach it)
        check_reachable(Trace.load(paths["trace"]), config.constraints)

    preset = load_preset(config.device)
    steps.run(
        f"profile{tag}", paths["latency"], [paths["ee"]],
        {"device": asdict(preset), "budget": config.profile_budget_s},
        lambda: profile_model(
            paths["ee"], config.device, progress=lambda line: log(f"profile: {line}"),
            time_budget_s=config.profile_budget_s,
        ).save(paths["latency"]),
    )
    return paths


def _build_joint(
    config: BuildConfig, work: Path, steps: "_Steps", paths: dict[str, Path], split_files: dict[str, Path],
    fitted: dict[str, dict[str, Any] | None],
) -> BuildResult:
    """Several models: each model's steps in ``WORKDIR/models/<name>-<hash>/``, then one search over all
    of them (``front.json``, and the chosen design as ``design.json``), the chosen model's bundle, and an
    evaluation next to every full model."""
    from hapi_onnx.bundle import bundle_from_design
    from hapi_onnx.evaluate import evaluate_bundle
    from hapi_onnx.profile.presets import load_preset
    from hapi_onnx.profile.table import LatencyTable
    from hapi_onnx.search.backbones import Backbone, BackboneSearch, search_backbones
    from hapi_onnx.trace import Trace

    labels = file_labels(config.models)
    models = {}
    for label, model in zip(labels, config.models, strict=True):
        folder = model_folder(model)
        steps.log(f"[{label}] steps in models/{folder}")
        models[label] = _model_steps(config, model, work / "models" / folder, f"@{folder}", steps, split_files,
                                     fitted[model])

    paths["front"] = work / "front.json"
    paths["design"] = work / "design.json"

    def joint_search() -> None:
        backbones = [Backbone(label, Trace.load(p["trace"]), LatencyTable.load(p["latency"]))
                     for label, p in models.items()]
        result = search_backbones(backbones, config.constraints)
        result.design.save(paths["design"])  # what `hapi-onnx bundle` reads; the bundle step reads front.json
        result.save(paths["front"])

    inputs = [p[key] for p in models.values() for key in ("trace", "latency")]
    steps.run("search", paths["front"], inputs, {**config.constraints.to_dict(), "models": labels}, joint_search)
    result = BackboneSearch.load(paths["front"])
    paths.update(models[result.chosen])  # the chosen model's artifacts are the build's

    paths["bundle"] = work / "model.hapi"
    steps.run(
        "bundle", paths["bundle"], [paths["ee"], paths["front"]], {},
        lambda: bundle_from_design(paths["ee"], result.design, paths["bundle"]),
    )

    paths["report"] = work / "report.json"
    full_models = {label: p["model"] for label, p in models.items()}
    steps.run(
        "evaluate", paths["report"], [paths["bundle"], *full_models.values(), split_files["test"]],
        {"device": asdict(load_preset(config.device)), "batch_size": config.eval_batch_size, "models": labels},
        lambda: evaluate_bundle(
            paths["bundle"], split_files["test"], device=config.device,
            full_model=full_models, batch_size=config.eval_batch_size,
            progress=_counter(steps.log, "evaluate: samples"),
        ).save(paths["report"]),
    )
    return BuildResult(work, paths, steps.reused, steps.seconds)


OUTPUTS = ("data", "model.onnx", "ee.onnx", "trace.npz", "latency.json", "design.json", "front.json", "model.hapi",
           "report.json", "models")
MNIST_IMAGE = (1, 28, 28)


@contextlib.contextmanager
def _exclusive(work: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``work`` so that two builds never write the same directory."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(work / ".steps" / "lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise HapiError(
                f"another build is running in {str(work)!r}; wait for it or use another --workdir."
            ) from None
        yield


def _split_path(data_dir: Path, name: str) -> Path:
    """``data_dir/name/`` (a folder of class subfolders) or ``data_dir/name.npz``."""
    folder, archive = data_dir / name, data_dir / f"{name}.npz"
    if folder.is_dir():
        if archive.is_file():
            raise HapiError(f"data folder {str(data_dir)!r} has both {name}/ and {name}.npz; keep one.")
        return folder
    if archive.is_file():
        return archive
    raise HapiError(
        f"data folder {str(data_dir)!r} has no {name}.npz (expected train/calib/test .npz, or train/, calib/, test/ "
        "folders of class subfolders of images), or give --data mnist for the demo digits."
    )


def _config_preprocessing(value: Any) -> Preprocessing | None:
    """The build's spec from a preset name, a JSON text or file path, or a dict (None: none given)."""
    from hapi_onnx.data import read_preprocessing

    if value is None or isinstance(value, dict):
        return Preprocessing.from_value(value)
    return read_preprocessing(value)


def _check_splits(splits: dict[str, Any]) -> None:
    """Refuse splits with other class names than train's, or that share samples (both streamed).

    Fitting, search and the report would otherwise see the same data, or read labels that name
    different classes.
    """
    from hapi_onnx.data import check_same_classes, shared_samples

    for name in ("calib", "test"):
        check_same_classes(splits["train"].classes, splits[name], "the training split", f"{name} split")
    for a, b in (("train", "calib"), ("train", "test"), ("calib", "test")):
        shared = shared_samples(splits[a], splits[b])
        if shared:
            raise HapiError(
                f"{shared} of the {len(splits[b])} images in {_split_name(splits[b], b)} also appear in "
                f"{_split_name(splits[a], a)}: "
                "heads are fitted on train, thresholds searched on calib and results reported on test, "
                "so the splits must not overlap."
            )


def _remove_stale_temporaries(work: Path) -> None:
    """Delete what a killed build left of its atomic writes (``.<output>.<random>.tmp``); never an output.

    Called with the work directory's lock held, so no other build is writing them.
    """
    names = [*OUTPUTS, *(f"{step}.json" for step in STEPS)]
    leftovers = [p for name in names for p in (*work.glob(f".{name}.*.tmp"), *work.glob(f".steps/.{name}.*.tmp"),
                                                *work.glob(f"models/*/.{name}.*.tmp"))]
    leftovers += work.glob(".steps/.*@*.json.*.tmp")  # a model's step records in a build of several
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _factory_files(factory: str | None) -> list[Path]:
    """The factory's source file, when it is given as ``file.py:name``, so editing it re-exports."""
    if factory and ":" in factory and factory.split(":", 1)[0].endswith(".py"):
        path = Path(factory.split(":", 1)[0])
        return [path] if path.is_file() else []
    return []


def _split_name(data: Any, split: str) -> str:
    """``test.npz`` or ``test/``, as the split appears in the data folder."""
    path = getattr(data, "path", None) or getattr(data, "root", None)
    return f"{split}/" if path is not None and Path(path).is_dir() else f"{split}.npz"


def _counter(log: Log, what: str, every: int | None = None) -> Callable[[int, int], None]:
    """A (done, total) progress callback logging whole lines with an ETA: about every 25%, or every ``every``.

    ``(0, total)`` marks the start of the work (the ETA counts from there) and logs nothing.
    """
    marks: set[int] = set()
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        nonlocal start
        if done == 0:
            start = time.perf_counter()
            return
        mark = done // every if every else 4 * done // max(total, 1)
        if mark not in marks:
            marks.add(mark)
            elapsed = time.perf_counter() - start
            eta = f", ETA {elapsed * (total - done) / done:.0f} s" if done < total else ""
            log(f"{what} {done}/{total} ({elapsed:.0f} s{eta})")

    return progress


def build_report(result: BuildResult) -> list[str]:
    """The end-of-build summary: exits, the chosen design, measured numbers, how to load the bundle."""
    from hapi_onnx.calibrate import exit_accuracies, exit_mac_fractions
    from hapi_onnx.design import Design
    from hapi_onnx.evaluate import EvaluationReport
    from hapi_onnx.exits.input_record import InputRecord
    from hapi_onnx.graph import load_model
    from hapi_onnx.search.report import guarantee_text, search_text
    from hapi_onnx.trace import Trace

    paths = result.paths
    trace = Trace.load(paths["trace"])
    design = Design.load(paths["design"])
    report = EvaluationReport.load(paths["report"])
    ee = load_model(paths["ee"])
    rows = exit_accuracies(trace, exit_mac_fractions(ee))
    kept = set(design.exit_names)
    width = max(len(r.tensor) for r in rows)
    out = []
    if "front" in paths:  # several models: the joint front and each model's outcome first
        from hapi_onnx.search.backbones import BackboneSearch
        from hapi_onnx.search.report import backbone_lines, joint_front_lines

        joint = BackboneSearch.load(paths["front"])
        out += [*backbone_lines(joint), "", *joint_front_lines(joint), "", f"Chosen model: {joint.chosen}"]
    out.append(f"Exits on the calibration split ({trace.num_samples} images); * = kept in the design:")
    out.append(f"    {'exit':<8} {'tensor':<{width}}  {'MACs':>6}  {'accuracy':>8}  {'mean conf':>9}")
    for r in rows:
        macs = "" if r.mac_fraction is None else f"{100 * r.mac_fraction:5.1f}%"
        mark = "*" if r.name in kept else " "
        out.append(
            f"  {mark} {r.name:<8} {r.tensor:<{width}}  {macs:>6}  {r.accuracy:8.4f}  {r.mean_confidence:9.3f}"
        )
    pred = design.predicted
    chosen = ", ".join(e.name if e.threshold is None else f"{e.name} (t={e.threshold:.3f})" for e in design.exits)
    limits = ", ".join(f"{k}={v}" for k, v in design.constraints.to_dict().items() if v is not None and k != "space")
    out += [
        "",
        f"Design ({design.constraints.space} thresholds, {design.objective}, {limits}; device {design.device}):",
        f"  exits      {chosen}",
        f"  predicted  accuracy {pred['accuracy']:.4f}, mean {pred['mean_ms']:.3f} ms, "
        f"p90 {pred['p90_ms']:.3f} ms  [on the calibration split]",
        f"  search     {search_text(design)}",
        *([f"  guarantee  {guarantee}"] if (guarantee := guarantee_text(design)) else []),
        "",
        f"Measured on the held-out test split ({report.num_samples} images):",
        *report.lines()[1:],
        "",
        f"Bundle: {paths['bundle']}",
        "Load it in an app (needs only numpy and onnxruntime):",
        "  from hapi_onnx.runtime import EarlyExitModel",
        f"  model = EarlyExitModel.load({str(paths['bundle'])!r})",
        *(["  x = model.preprocess(images)   # decoded H x W x C uint8 images -> the model's input"]
          if InputRecord.from_model(ee).preprocessing is not None else []),  # the spec the bundle carries
        "  pred = model.predict(x)   # x: float32[N, C, H, W]",
        "  pred.classes, pred.confidences, pred.exit_index",
    ]
    if result.reused:
        out.append(f"(reused from earlier runs: {', '.join(result.reused)})")
    return out


def plot_build(result: BuildResult, path: str | os.PathLike) -> None:
    """Draw a build's Pareto front to ``path`` (with several models, the joint front by model)."""
    from hapi_onnx.search.report import plot_front, plot_joint_front

    if "front" in result.paths:
        from hapi_onnx.search.backbones import BackboneSearch

        plot_joint_front(BackboneSearch.load(result.paths["front"]), path)
    else:
        from hapi_onnx.design import Design

        plot_front(Design.load(result.paths["design"]), path)
