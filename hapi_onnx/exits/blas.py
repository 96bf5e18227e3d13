"""One BLAS thread for small dense problems (the OpenBLAS part of what threadpoolctl does).

Fitting a head is thousands of small products and L-BFGS updates. OpenBLAS threads them, and
on a 2-core machine that is also running ONNX Runtime or anything else, its threads contend
so badly that the fit gets about ten times slower than on one thread. numpy and scipy each
load their own OpenBLAS; both are found among the loaded libraries and switched to one thread
for the duration, then restored. Where that is not possible (no ``/proc``, another BLAS) this
does nothing.
"""

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

# (get, set) entry points, by the prefix OpenBLAS builds use: plain, scipy-openblas 32/64-bit.
_SYMBOLS = (
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
)


def _loaded_openblas() -> list[tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]]:
    """(get, set) thread-count functions of every OpenBLAS library loaded in this process."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return []
    paths = sorted({line.split()[-1] for line in maps.read_text().splitlines()
                    if "openblas" in line.rsplit("/", 1)[-1].lower() and ".so" in line})
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _SYMBOLS:
            if hasattr(lib, get_name) and hasattr(lib, set_name):
                found.append((getattr(lib, get_name), getattr(lib, set_name)))
                break
    return found


@contextlib.contextmanager
def blas_threads(count: int = 1) -> Iterator[None]:
    """Run the block with ``count`` OpenBLAS threads in numpy and scipy, restoring them after."""
    handles = _loaded_openblas()
    saved = [get() for get, _ in handles]
    for _, set_threads in handles:
        set_threads(count)
    try:
        yield
    finally:
        for (_, set_threads), previous in zip(handles, saved, strict=True):
            set_threads(previous)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

