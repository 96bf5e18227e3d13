"""The command blocks of the README and docs/ that are marked runnable, and how to run them.

A fenced block right after a line ``<!-- runnable -->`` is run (``sh``: bash with ``set -euo
pipefail``; ``python``: the test's interpreter); after ``<!-- runnable: file PATH -->`` it is
written to PATH instead (a page, a config, an app's source for a later block);
``<!-- runnable needs node -->`` marks a block that needs Node.js and npm (skipped without them,
unless ``HAPI_REQUIRE_JS=1``). A page's blocks
run in order in one folder, as a reader would type them from the checkout's root: the folder
links the checkout's ``examples/`` and ``runtime-js/``, and ``hapi-onnx``, ``python`` and ``pip``
are the test's virtual environment's.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
MARKER = re.compile(
    r"^<!-- runnable(?: needs (?P<needs>\w+))?(?:: file (?P<file>\S+))? -->\n```(?P<lang>\w+)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)
LANGUAGES = ("sh", "python")


@dataclass(frozen=True)
class Block:
    """One runnable block: its page, line, language, text, and the file it is written to (if any)."""

    page: Path
    line: int
    lang: str
    text: str
    file: str | None = None
    needs: str | None = None

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The page's runnable blocks, in order."""
    text = page.read_text(encoding="utf-8")
    return [Block(page, text.count("\n", 0, m.start()) + 2, m["lang"], m["body"], m["file"], m["needs"])
            for m in MARKER.finditer(text)]


def workspace(folder: Path) -> dict[str, str]:
    """Make ``folder`` look like the checkout's root to the blocks; returns their environment."""
    for part in ("examples", "runtime-js"):
        if not (folder / part).exists():
            (folder / part).symlink_to(REPO / part)
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MPLBACKEND": "Agg"}


def run(block: Block, folder: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run (or write) one block in ``folder``; the result's stdout/stderr are text."""
    if block.file is not None:
        target = folder / block.file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        return subprocess.CompletedProcess([], 0, "", "")
    if block.lang == "sh":
        cmd = ["bash", "-euo", "pipefail", "-c", block.text]
    elif block.lang == "python":
        cmd = [sys.executable, "-c", block.text]
    else:
        raise ValueError(f"{block}: a runnable block must be one of {LANGUAGES}, not {block.lang!r}")
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
