"""What a latency measurement depends on: software versions, providers really used, threads, CPU.

Standard library and onnxruntime only (numpy and onnx versions are read if importable).
"""

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

import onnxruntime as ort

from hapi_onnx.exits.blas import usable_cpus
from hapi_onnx.profile.presets import DevicePreset


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux, sysctl on macOS), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            fields = dict(
                (key.strip(), value.strip())
                for key, _, value in (line.partition(":") for line in f)
                if value.strip()
            )
        for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
            if key in fields:
                return fields[key]
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def session_settings(options: ort.SessionOptions) -> dict[str, Any]:
    """The timing-relevant settings of a ``SessionOptions``, as plain values."""
    return {
        "intra_op_num_threads": options.intra_op_num_threads,
        "inter_op_num_threads": options.inter_op_num_threads,
        "execution_mode": str(options.execution_mode).rsplit(".", 1)[-1],
        "graph_optimization_level": str(options.graph_optimization_level).rsplit(".", 1)[-1],
        "enable_cpu_mem_arena": options.enable_cpu_mem_arena,
        "enable_mem_pattern": options.enable_mem_pattern,
    }


def environment(preset: DevicePreset, sessions: list[ort.InferenceSession]) -> dict[str, Any]:
    """Describe the machine and the sessions a latency table was measured with.

    Args:
        preset (DevicePreset): The device preset the sessions were created from.
        sessions (list[ort.InferenceSession]): The timed sessions (providers are read back from
            them, so a silent fallback would show).

    Returns:
        dict: JSON-ready description.
    """
    used: list[str] = []
    for session in sessions:
        for name in session.get_providers():
            if name not in used:
                used.append(name)
    options = sessions[0].get_provider_options() if sessions else {}
    affinity = usable_cpus()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "onnxruntime": ort.__version__,
        "onnxruntime_package": _ort_package(),
        "onnx": _version("onnx"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average": load,
        "available_providers": ort.get_available_providers(),
        "providers_used": used,
        "provider_options": {k: dict(v) for k, v in options.items()},
        "session_options": session_settings(preset.session_options()),
        "session_config_entries": dict(preset.session.get("config_entries", {})),
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _ort_package() -> str | None:
    """Which onnxruntime wheel is installed (onnxruntime, onnxruntime-gpu, ...)."""
    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                 "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx"):
        if _version(name) is not None:
            return name
    return None
