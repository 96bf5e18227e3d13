"""Each job is done in one place: the exit comparison, session creation (see docs/design.md)."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_COMPARE = r"conf\w*(\[[^\]]*\])*\)?\s*>=|>=\s*[\w.#]*thresh"  # a confidence or a threshold next to >=
PYTHON = sorted([*(REPO / "hapi_onnx").rglob("*.py"), *(REPO / "bench").rglob("*.py"), *(REPO / "cli").rglob("*.py")])


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(called name, call) for every call in a file, the name being the last attribute."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            calls.append((name, node))
    return calls


def test_only_the_exit_rule_compares_confidences_with_thresholds():
    rule = REPO / "hapi_onnx" / "choice.py"
    found = []
    for path in PYTHON:
        if path == rule:
            continue
        text = path.read_text()
        for name, call in _calls(path):
            if name in ("greater_equal", "searchsorted"):
                args = ast.get_source_segment(text, call) or ""
                if re.search(r"conf|thr|threshold|grid", args):
                    found.append(f"{path.relative_to(REPO)}:{call.lineno}")
        for line in text.splitlines():
            code = re.sub(r"#.*|\"[^\"]*\"|'[^']*'|``.*?``", "", line)  # comments, strings, docstring code
            if re.search(_COMPARE, code):
                found.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert found == [], f"compare through hapi_onnx.choice (leaves, first_exit, ...): {found}"
    js = REPO / "runtime-js" / "src"
    compares = [f"{p.name}: {line.strip()}" for p in sorted(js.glob("*.mjs")) for line in p.read_text().splitlines()
                if re.search(_COMPARE, re.sub(r"//.*|'[^']*'|`[^`]*`", "", line)) and not line.strip().startswith("*")]
    assert compares == ["manifest.mjs: return Math.fround(confidence) >= Math.fround(threshold);"]


def test_one_module_creates_onnx_runtime_sessions():
    factory = REPO / "hapi_onnx" / "runtime" / "session.py"
    found = [f"{path.relative_to(REPO)}:{call.lineno}" for path in PYTHON if path != factory
             for name, call in _calls(path) if name in ("InferenceSession", "SessionOptions")]
    assert found == [], f"create sessions with hapi_onnx.runtime.session.create_session: {found}"
