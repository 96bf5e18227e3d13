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


def test_every_json_hapi_onnx_reads_is_one_artifact_kind():
    import importlib

    import pytest

    from hapi_onnx.artifact import KINDS
    from hapi_onnx.errors import HapiError

    for module in ("pipeline", "evaluate", "calibrate", "trace", "data", "exits.layout", "exits.input_record",
                   "graph", "profile.presets", "profile.table", "runtime.manifest", "design",
                   "search.backbones"):
        importlib.import_module(f"hapi_onnx.{module}")
    assert sorted(KINDS) == [
        "build config", "device preset", "exit layout", "hapi-onnx backbone search", "hapi-onnx bundle",
        "hapi-onnx design", "hapi-onnx evaluation", "hapi-onnx latency table", "hapi-onnx split index",
        "hapi-onnx step record",
        "hapi-onnx trace", "input record", "load notes", "output record", "preprocessing spec",
    ]
    for kind in KINDS.values():
        for bad in ("[]", '{"a": 1e999}', "[" * 100 + "]" * 100, "not json"):
            with pytest.raises(HapiError):
                kind.read(bad, "x", dict)
        if kind.format_version is not None:
            tag = {"kind": kind.name} if kind.tagged else {}
            with pytest.raises(HapiError, match="format_version"):
                kind.read({**tag, "format_version": kind.format_version + 1}, "x", dict)
            assert kind.read({**tag, "format_version": kind.format_version, "a": 1}, "x", dict) == {"a": 1}
    # JSON is decoded in artifact.py only (bounded); everything else asks a Kind or parse_json there.
    decoders = [f"{path.relative_to(REPO)}:{call.lineno}" for path in (REPO / "hapi_onnx").rglob("*.py")
                if path.name != "artifact.py" for name, call in _calls(path)
                if name in ("loads", "load") and isinstance(call.func, ast.Attribute)
                and getattr(call.func.value, "id", "") == "json"]
    assert decoders == []


def test_the_constraint_flags_are_made_from_the_constraints_fields():
    from dataclasses import fields

    import click
    from hapi_onnx_cli.build_cmd import command as build
    from hapi_onnx_cli.search_cmd import command as search

    from hapi_onnx.search.constraints import RENAMED, Constraints, flag, take_constraints

    for command in (search, build):
        params = {p.name: p for p in command.params}
        for field in fields(Constraints):
            option = params[field.name]
            assert option.opts == [flag(field.name)] and option.default is None
            assert option.help.startswith(field.metadata["help"])
            if field.metadata["choices"]:
                assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == field.metadata["choices"]
        assert {old: params[old].opts for old in RENAMED} == {
            "confidence": ["--confidence"], "thresholds": ["--thresholds"]}
    notes = []
    values = {"confidence": 0.95, "bound_level": 0.8, "thresholds": "per-exit", "percentile": None, "model": "m"}
    assert take_constraints(values, notes.append) == {"bound_level": 0.8, "space": "per-exit"}  # the new name wins
    assert values == {"model": "m"} and len(notes) == 2 and "'confidence' is deprecated" in notes[0]
