"""Device presets: which ONNX Runtime providers, session options and timing policy to profile with.

A preset is one small JSON file (format in ``profiles/README.md``). The shipped ones live in the
``hapi_onnx_profiles`` package; any other JSON file can be given by path. This module imports
only the standard library and onnxruntime, so the edge runtime can reuse
:meth:`DevicePreset.session_options` and :meth:`DevicePreset.create_session`.
"""

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from hapi_onnx.artifact import Kind
from hapi_onnx.errors import HapiError
from hapi_onnx.runtime.session import create_session, quiet_options

FORMAT_VERSION = 1
PRESET = Kind("device preset", FORMAT_VERSION, version_optional=True)  # hand-written: the version may be left out
PRESET_PACKAGE = "hapi_onnx_profiles"

GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
EXECUTION_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}

# Which pip package brings each execution provider (they replace the plain `onnxruntime`).
PROVIDER_PACKAGES = {
    "CUDAExecutionProvider": "onnxruntime-gpu (pip uninstall onnxruntime && pip install onnxruntime-gpu)",
    "TensorrtExecutionProvider": (
        "onnxruntime-gpu with TensorRT installed (pip uninstall onnxruntime && pip install onnxruntime-gpu)"
    ),
    "OpenVINOExecutionProvider": (
        "onnxruntime-openvino (pip uninstall onnxruntime && pip install onnxruntime-openvino)"
    ),
    "CoreMLExecutionProvider": "the standard onnxruntime wheel on macOS (pip install onnxruntime, on a Mac)",
    "DmlExecutionProvider": "onnxruntime-directml on Windows (pip install onnxruntime-directml)",
    "ROCMExecutionProvider": "onnxruntime-rocm (AMD's build for ROCm)",
    "MIGraphXExecutionProvider": "onnxruntime-migraphx (AMD's build for MIGraphX)",
    "QNNExecutionProvider": "onnxruntime-qnn (pip install onnxruntime-qnn)",
    "DnnlExecutionProvider": "an onnxruntime build with oneDNN (build from source with --use_dnnl)",
    "XnnpackExecutionProvider": "an onnxruntime build with XNNPACK (e.g. the Android package)",
}

_TOP_KEYS = {"format_version", "name", "description", "providers", "session", "batch_sizes", "timing"}


@dataclass(frozen=True)
class TimingPolicy:
    """How long and how often to time each piece.

    Attributes:
        warmup_runs (int): Untimed runs before timing, at least this many.
        warmup_s (float): ... and at least this many seconds of them.
        min_runs (int): Timed runs always made, even past the time budget.
        max_runs (int): Timed runs never exceeded.
        target_rel_precision (float): Stop once the confidence interval of the median is this
            narrow, as a half-width relative to the median (0.01 = +-1%).
        interval_level (float): Confidence level of that interval (preset key ``interval_level``;
            the older key ``confidence`` is still read).
        time_budget_s (float): Seconds of timed runs per piece after which timing stops
            (once ``min_runs`` are made) even if the precision target is not met.
    """

    warmup_runs: int = 20
    warmup_s: float = 0.2
    min_runs: int = 50
    max_runs: int = 5000
    target_rel_precision: float = 0.01
    interval_level: float = 0.95
    time_budget_s: float = 1.5

    def __post_init__(self):
        checks = [
            ("warmup_runs", _is_int(self.warmup_runs) and self.warmup_runs >= 0, "an int >= 0"),
            ("warmup_s", self.warmup_s >= 0, "a number >= 0"),
            ("min_runs", _is_int(self.min_runs) and self.min_runs >= 10, "an int >= 10"),
            ("max_runs", _is_int(self.max_runs) and self.max_runs >= self.min_runs, "an int >= min_runs"),
            ("target_rel_precision", 0 < self.target_rel_precision < 1, "a number in (0, 1)"),
            ("interval_level", 0.5 <= self.interval_level < 1, "a number in [0.5, 1)"),
            ("time_budget_s", self.time_budget_s > 0, "a number > 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise HapiError(
                    f"The timing {name!r} of a device preset must be {expected}. "
                    f"Got {getattr(self, name)!r} instead."
                )


@dataclass(frozen=True)
class DevicePreset:
    """One device: ONNX Runtime providers and options, threads, batch sizes, timing policy.

    Attributes:
        name (str): Preset name (``cpu``, ``cpu-1t``, ``cuda``, ...).
        description (str): One line for humans.
        providers (tuple[tuple[str, dict]]): Execution providers in priority order, with options.
        session (dict): Session options: ``intra_op_num_threads`` (0 = ORT's default, all
            physical cores), ``inter_op_num_threads``, ``execution_mode`` (``sequential`` or
            ``parallel``), ``graph_optimization_level`` (``disable``/``basic``/``extended``/
            ``all``), ``enable_cpu_mem_arena``, ``enable_mem_pattern``, ``config_entries``
            (ORT session config key -> value, e.g. ``session.intra_op.allow_spinning``).
        batch_sizes (tuple[int]): Batch sizes worth profiling; the first is the default.
        timing (TimingPolicy): How to time each piece.
        source (str): Where the preset was read from (``builtin:<name>`` or a file path).
    """

    name: str
    description: str
    providers: tuple[tuple[str, dict[str, Any]], ...]
    session: dict[str, Any]
    batch_sizes: tuple[int, ...]
    timing: TimingPolicy
    source: str = field(default="", compare=False)

    @property
    def provider_names(self) -> list[str]:
        """Provider names in priority order, as ``InferenceSession(providers=...)`` takes them."""
        return [name for name, _ in self.providers]

    @property
    def provider_options(self) -> list[dict[str, str]]:
        """Provider options aligned with :attr:`provider_names` (values as strings, as ORT wants)."""
        return [{k: _option_string(v) for k, v in opts.items()} for _, opts in self.providers]

    def to_dict(self) -> dict[str, Any]:
        """The preset as it would be written to JSON (recorded in latency tables)."""
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "providers": [[name, dict(opts)] for name, opts in self.providers],
            "session": dict(self.session),
            "batch_sizes": list(self.batch_sizes),
            "timing": {k: getattr(self.timing, k) for k in TimingPolicy.__dataclass_fields__},
        }

    def session_options(self) -> ort.SessionOptions:
        """A fresh ``ort.SessionOptions`` configured from this preset."""
        opts = quiet_options()
        s = self.session
        opts.intra_op_num_threads = int(s.get("intra_op_num_threads", 0))
        opts.inter_op_num_threads = int(s.get("inter_op_num_threads", 0))
        opts.execution_mode = EXECUTION_MODES[s.get("execution_mode", "sequential")]
        opts.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[s.get("graph_optimization_level", "all")]
        opts.enable_cpu_mem_arena = bool(s.get("enable_cpu_mem_arena", True))
        opts.enable_mem_pattern = bool(s.get("enable_mem_pattern", True))
        for key, value in s.get("config_entries", {}).items():
            opts.add_session_config_entry(str(key), _option_string(value))
        return opts

    def check_providers(self) -> None:
        """Check that the installed onnxruntime has every provider this preset lists.

        Raises:
            HapiError: naming the missing provider and the package that brings it.
        """
        available = ort.get_available_providers()
        for name in self.provider_names:
            if name not in available:
                package = PROVIDER_PACKAGES.get(name, "an onnxruntime build that includes it")
                raise HapiError(
                    f"Device preset {self.name!r} needs {name}, which this onnxruntime "
                    f"{ort.__version__} does not provide (it has {', '.join(available)}). "
                    f"Install {package}, or pick another preset."
                )

    def create_session(self, model: bytes | str | os.PathLike) -> ort.InferenceSession:
        """An ``InferenceSession`` on this device, checked to really run on the first provider.

        Args:
            model (bytes | PathLike): Serialized ONNX model or a path to one.

        Raises:
            HapiError: when a provider is missing, ONNX Runtime cannot load the model, or it silently fell back from the
                preset's first provider (e.g. CUDA listed but no usable GPU/driver).
        """
        self.check_providers()
        session = create_session(model, self.session_options(), self.provider_names, self.provider_options)
        primary = self.provider_names[0]
        if primary not in session.get_providers():
            raise HapiError(
                f"Device preset {self.name!r} asked for {primary}, but ONNX Runtime fell back to "
                f"{', '.join(session.get_providers())}. Check the device, its driver and libraries "
                f"(e.g. CUDA/cuDNN/TensorRT versions matching onnxruntime {ort.__version__})."
            )
        return session


def available_presets() -> list[str]:
    """Names of the presets shipped with hapi-onnx, sorted."""
    return sorted(_builtin_files())


def _builtin_files() -> dict[str, Path]:
    # The package's __path__ rather than importlib.resources: an editable install can expose the
    # folder as a namespace portion next to a path-hook placeholder, which resources.files rejects.
    package = importlib.import_module(PRESET_PACKAGE)
    found: dict[str, Path] = {}
    for folder in map(Path, package.__path__):
        if folder.is_dir():
            for file in sorted(folder.glob("*.json")):
                found.setdefault(file.stem, file)
    return found


def load_preset(name_or_path: str | os.PathLike) -> DevicePreset:
    """A shipped preset by name (``cpu-1t``), else a preset JSON file by path.

    Raises:
        HapiError: when the name is unknown (listing the shipped ones), or the file is not a
            valid preset.
    """
    text = os.fspath(name_or_path)
    builtin = _builtin_files()
    if text in builtin:
        return PRESET.load(builtin[text], lambda data: preset_from_dict(data, source=f"builtin:{text}"))
    path = Path(text)
    if path.is_file():
        return PRESET.load(path, lambda data: preset_from_dict(data, source=str(path)))
    raise HapiError(
        f"Unknown device {text!r}: expected a preset name ({', '.join(available_presets())}) "
        "or the path of a preset JSON file (see profiles/README.md)."
    )


def preset_from_dict(data: dict[str, Any], source: str = "") -> DevicePreset:
    """Validate a decoded preset JSON object and build the preset.

    Raises:
        HapiError: naming the first field that is missing or of the wrong type.
    """
    if not isinstance(data, dict):
        raise HapiError(f"Device preset {source!r} must be a JSON object. Got {type(data).__name__} instead.")
    where = f"Device preset {source or data.get('name', '?')!r}"
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise HapiError(f"{where} has unknown field(s) {sorted(unknown)}; expected only {sorted(_TOP_KEYS)}.")
    PRESET.check(data, where)
    for key, kind in [("name", str), ("providers", list), ("session", dict), ("timing", dict)]:
        if not isinstance(data.get(key), kind):
            raise HapiError(
                f"{where} needs a {key!r} field of type {kind.__name__}. Got {data.get(key)!r} instead."
            )
    providers = []
    for entry in data["providers"]:
        well_formed = isinstance(entry, list) and len(entry) == 2
        if not (well_formed and isinstance(entry[0], str) and isinstance(entry[1], dict)):
            raise HapiError(
                f"{where}: each provider must be [\"NameExecutionProvider\", {{options}}]. "
                f"Got {entry!r} instead."
            )
        providers.append((entry[0], dict(entry[1])))
    if not providers:
        raise HapiError(f"{where} lists no providers; add at least [\"CPUExecutionProvider\", {{}}].")
    session = dict(data["session"])
    _check_session(session, where)
    batch_sizes = data.get("batch_sizes", [1])
    if not (
        isinstance(batch_sizes, list)
        and batch_sizes
        and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes)
    ):
        raise HapiError(
            f"{where}: 'batch_sizes' must be a non-empty list of ints >= 1. Got {batch_sizes!r} instead."
        )
    fields = set(TimingPolicy.__dataclass_fields__)
    timing = dict(data["timing"])
    if "confidence" in timing and "interval_level" not in timing:  # the key's name before 0.2
        timing["interval_level"] = timing.pop("confidence")
    unknown = set(timing) - fields
    if unknown:
        raise HapiError(f"{where}: unknown timing field(s) {sorted(unknown)}; expected {sorted(fields)}.")
    try:
        timing = TimingPolicy(**timing)
    except TypeError as err:
        raise HapiError(f"{where}: bad timing policy ({err}).") from None
    return DevicePreset(
        name=data["name"],
        description=str(data.get("description", "")),
        providers=tuple(providers),
        session=session,
        batch_sizes=tuple(batch_sizes),
        timing=timing,
        source=source,
    )


def _check_session(session: dict[str, Any], where: str) -> None:
    allowed = {
        "intra_op_num_threads": lambda v: isinstance(v, int) and v >= 0,
        "inter_op_num_threads": lambda v: isinstance(v, int) and v >= 0,
        "execution_mode": lambda v: v in EXECUTION_MODES,
        "graph_optimization_level": lambda v: v in GRAPH_OPTIMIZATION_LEVELS,
        "enable_cpu_mem_arena": lambda v: isinstance(v, bool),
        "enable_mem_pattern": lambda v: isinstance(v, bool),
        "config_entries": lambda v: isinstance(v, dict),
    }
    expected = {
        "intra_op_num_threads": "an int >= 0 (0 = ORT default: all physical cores)",
        "inter_op_num_threads": "an int >= 0",
        "execution_mode": f"one of {sorted(EXECUTION_MODES)}",
        "graph_optimization_level": f"one of {sorted(GRAPH_OPTIMIZATION_LEVELS)}",
        "enable_cpu_mem_arena": "true or false",
        "enable_mem_pattern": "true or false",
        "config_entries": "an object of ORT session config entries",
    }
    for key, value in session.items():
        if key not in allowed:
            raise HapiError(f"{where}: unknown session option {key!r}; expected one of {sorted(allowed)}.")
        if not allowed[key](value):
            raise HapiError(
                f"{where}: session option {key!r} must be {expected[key]}. Got {value!r} instead."
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _option_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # what both the TensorRT and generic ORT parsers accept
    return str(value)
