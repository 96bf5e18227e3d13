"""What the benchmarks share: the process's peak memory."""

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` from /proc (reset at exec, unlike ``ru_maxrss``, which a child started with
    fork+exec inherits from its parent on Linux); ``ru_maxrss`` where /proc is missing.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
