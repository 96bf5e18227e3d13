"""Seeded mutations of a bundle manifest, a trace, a latency table and a design: only HapiError escapes.

Each case takes a good artifact of the tiny flow in :mod:`bad_inputs` and damages it one way,
chosen by its seed: a structural change to the decoded JSON (a value of another type, a missing
or extra key, a huge or deep value, a list grown or cut) or to the trace's arrays (wrong shape,
dtype or values), or a raw change to the file's bytes (flips, truncation, insertions, cut or
repeated spans). A sweep also deletes, and retypes, every field down to three levels. Loading it
(``EarlyExitModel.load``, ``Trace.load``, ``LatencyTable.load``, ``Design.load``) must raise
:class:`~hapi_onnx.HapiError` or give an artifact that works: a model that predicts, a trace the
search reads, a table whose costs add up, a design that prints.
"""

import json
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import make_good

from hapi_onnx.errors import HapiError
from hapi_onnx.profile.table import LatencyTable
from hapi_onnx.runtime import EarlyExitModel
from hapi_onnx.search import Constraints, Design, search
from hapi_onnx.search.report import front_lines, summary_lines
from hapi_onnx.trace import Trace

CASES = {"manifest": 110, "zip": 30, "trace": 110, "latency": 90, "design": 90}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_good(tmp_path_factory.mktemp("good"))


# -- mutations --------------------------------------------------------------------------------

def _deep(depth: int):
    value = []
    for _ in range(depth):
        value = [value]
    return value


JUNK = [
    None, True, False, 0, -1, 1, 7, 2**31, 10**30, -(10**30), 1e308, -1e308, 5e-324, 0.5, -0.5, 1.0000001,
    "", "x", "final", "exit0", "stages/../x.onnx", "\u0000", "\udcff"[:0] + "é", "a" * 10_000,
    [], {}, [1, 2, 3], ["a", None], {"a": 1}, {"name": "final", "threshold": None}, _deep(30), _deep(70),
    [0] * 10_000,
]
RAW_SNIPPETS = [
    b"[", b"]", b"{", b"}", b'"', b",", b":", b"-", b"9" * 5_000, b"NaN", b"Infinity", b"-Infinity", b"1e999",
    b"\x00", b"\xff\xfe", b"[" * 2_000, b'{"a":' * 2_000, b"null", b"true", b"\\u0000", b"\\ud800",
]


def _random_path(node, rng: random.Random) -> tuple:
    """A random place in decoded JSON: each level's keys equally likely, stopping at each level with
    probability 0.35 (so a top-level field is hit as often as a point deep in a long list)."""
    path = ()
    if rng.random() < 0.05:
        return path
    while isinstance(node, dict | list) and node:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path, node = (*path, key), node[key]
        if rng.random() < 0.35:
            break
    return path


def mutate_structure(data, rng: random.Random) -> tuple[object, str]:
    """One structural change at a random place of decoded JSON; returns the new document and what."""
    data = json.loads(json.dumps(data))
    path = _random_path(data, rng)
    junk = rng.choice(JUNK)
    if not path:
        return junk, f"root := {str(junk)[:40]}"
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key, value = path[-1], parent[path[-1]]
    op = rng.choice(["replace", "replace", "delete", "extra", "wrap", "retype", "grow"])
    if op == "replace":
        parent[key] = junk
    elif op == "delete":
        del parent[key]
    elif op == "extra":
        if isinstance(value, dict):
            value[f"extra{rng.randrange(9)}"] = junk
        elif isinstance(value, list):
            value.insert(rng.randrange(len(value) + 1), junk)
        else:
            parent[key] = [value, junk]
    elif op == "wrap":
        parent[key] = [value] if rng.random() < 0.5 else {"value": value}
    elif op == "retype":
        parent[key] = list(value.values()) if isinstance(value, dict) else (
            dict(enumerate(map(str, value))) if isinstance(value, list) else str(value))
    else:  # grow: repeat a list, or the parent's entry
        parent[key] = value * 3 if isinstance(value, list | str) else value
        if isinstance(parent, list):
            parent.append(value)
    return data, f"{op} {'/'.join(map(str, path))} ({str(junk)[:40]})"


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One raw change to a file's bytes."""
    out = bytearray(data)
    at = rng.randrange(len(out))
    op = rng.choice(["flip", "flip", "truncate", "insert", "insert", "cut", "repeat"])
    if op == "flip":
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    elif op == "truncate":
        del out[at:]
    elif op == "insert":
        out[at:at] = rng.choice(RAW_SNIPPETS)
    elif op == "cut":
        del out[at : at + rng.randint(1, 64)]
    else:
        out[at:at] = out[at : at + rng.randint(1, 64)]
    return bytes(out), f"{op} at {at}"


def mutate_json_file(source: Path, target: Path, rng: random.Random) -> str:
    """A structural (60%) or raw (40%) mutation of a JSON file, written to ``target``."""
    if rng.random() < 0.6:
        data, what = mutate_structure(json.loads(source.read_text()), rng)
        target.write_text(json.dumps(data))
    else:
        raw, what = mutate_bytes(source.read_bytes(), rng)
        target.write_bytes(raw)
    return what


ARRAY_JUNK = [
    lambda a: a.reshape(-1), lambda a: a[None], lambda a: np.asarray(a).ravel()[:1].reshape(()),
    lambda a: a[..., :-1], lambda a: a[..., :0], lambda a: a.astype(np.float64) + 0.5, lambda a: a.astype(np.int8),
    lambda a: a.astype(np.complex64), lambda a: a.astype(bool), lambda a: a.astype(str),
    lambda a: np.full(a.shape, np.nan, np.float32), lambda a: np.full(a.shape, np.inf), lambda a: -a - 1,
    lambda a: a * 1e30, lambda a: np.zeros(3, dtype=[("a", "i4")]), lambda a: np.array([None], dtype=object),
    lambda a: np.array(b"bytes"), lambda a: np.array(["x", "y"]), lambda a: np.repeat(a, 2, axis=-1),
]


def mutate_trace(source: Path, target: Path, rng: random.Random) -> str:
    """A change to the trace's metadata JSON (40%), to one of its arrays (40%) or to its bytes (20%)."""
    roll = rng.random()
    if roll >= 0.8:
        raw, what = mutate_bytes(source.read_bytes(), rng)
        target.write_bytes(raw)
        return what
    with np.load(source) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if roll < 0.4:
        meta, what = mutate_structure(json.loads(str(arrays["meta"])), rng)
        arrays["meta"] = np.array(json.dumps(meta))
    else:
        key = rng.choice([*arrays, "extra"])
        if key != "extra" and rng.random() < 0.15:
            del arrays[key]
            what = f"drop {key}"
        else:
            source_array = arrays.get(key, arrays["conf"])
            for change in rng.sample(range(len(ARRAY_JUNK)), len(ARRAY_JUNK)):
                try:  # not every change applies to every array (a 0-d meta has no last axis)
                    arrays[key] = ARRAY_JUNK[change](source_array)
                    break
                except (ValueError, IndexError, TypeError):
                    continue
            what = f"array {key} change {change}"
    with open(target, "wb") as f:
        np.savez(f, **arrays)  # pickles allowed here: an object array must be refused on load
    return what


# -- what a loaded artifact must be able to do --------------------------------------------------

def use_model(model: EarlyExitModel) -> None:
    x = np.random.default_rng(0).random((3, 1, 12, 12), dtype=np.float32)
    for batch in (x[:1], x):
        pred = model.predict(batch, return_probs=True)
        assert pred.classes.shape == (len(batch),)
        assert ((pred.classes >= 0) & (pred.classes < model.manifest.num_classes)).all()
        assert ((pred.exit_index >= 0) & (pred.exit_index < model.num_stages)).all()
    assert len(list(model.progressive(x))) == model.num_stages


def use_trace(trace: Trace, good: Path) -> None:
    assert len(trace.fingerprint) == 64 and trace.agreement.shape == trace.pred.shape
    if trace.labelled:
        assert trace.accuracy.shape == (trace.num_exits,)
    try:
        search(trace, LatencyTable.load(good / "latency.json"), Constraints(latency_sla_ms=1.5, bound_level=0))
    except HapiError:  # e.g. exits or fingerprints that no longer match the table: refused, fine
        pass


def use_table(table: LatencyTable, good: Path) -> None:
    for stat in ("mean", "p50", "p90", "p99"):
        assert len(table.segment_costs(stat)) == len(table.exit_names)
        assert len(table.head_costs(stat)) == len(table.exit_names) - 1
    assert len(table.fingerprint) == 64
    try:
        search(Trace.load(good / "trace.npz"), table, Constraints(latency_sla_ms=1.5, bound_level=0))
    except HapiError:
        pass


def use_design(design: Design) -> None:
    assert summary_lines(design) and front_lines(design)


def check_loads(kind: str, target: Path, good: Path) -> None:
    """Load ``target`` as a ``kind`` artifact: HapiError (refused) or an artifact that works."""
    if kind in ("manifest", "zip"):
        load, use = EarlyExitModel.load, use_model
    elif kind == "trace":
        load, use = Trace.load, (lambda t: use_trace(t, good))
    elif kind == "latency":
        load, use = LatencyTable.load, (lambda t: use_table(t, good))
    else:
        load, use = Design.load, use_design
    try:
        loaded = load(target)
    except HapiError as err:
        assert str(err).strip()
        return
    use(loaded)  # anything raised here (HapiError included) is a loader that let a broken file through


def _cases():
    return [(kind, seed) for kind, count in CASES.items() for seed in range(count)]


@pytest.mark.parametrize(("kind", "seed"), _cases(), ids=[f"{k}-{s}" for k, s in _cases()])
def test_only_hapi_error_escapes_the_loaders(kind, seed, good, tmp_path):
    rng = random.Random(f"{kind}-{seed}")
    if kind == "manifest":
        target = shutil.copytree(good / "model.hapi", tmp_path / "m.hapi")
        what = mutate_json_file(good / "model.hapi" / "manifest.json", target / "manifest.json", rng)
    elif kind == "zip":
        target = tmp_path / "m.hapi.zip"
        if rng.random() < 0.5:  # a raw change to the zip file
            raw, what = mutate_bytes((good / "model.hapi.zip").read_bytes(), rng)
            target.write_bytes(raw)
        else:  # a well-formed zip whose manifest is mutated
            with zipfile.ZipFile(good / "model.hapi.zip") as archive:
                members = {name: archive.read(name) for name in archive.namelist()}
            (tmp_path / "manifest.json").write_bytes(members["manifest.json"])
            what = mutate_json_file(tmp_path / "manifest.json", tmp_path / "mutated.json", rng)
            members["manifest.json"] = (tmp_path / "mutated.json").read_bytes()
            with zipfile.ZipFile(target, "w") as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
    elif kind == "trace":
        target = tmp_path / "trace.npz"
        what = mutate_trace(good / "trace.npz", target, rng)
    else:
        source = f"{kind}.json" if kind == "latency" else rng.choice(["design.json", "design_certified.json"])
        target = tmp_path / source
        what = mutate_json_file(good / source, target, rng)
    try:
        check_loads(kind, target, good)
    except Exception as err:
        raise AssertionError(f"{kind} mutation {what!r} escaped: {type(err).__name__}: {err}") from err


def _fields(node, prefix=(), depth=3):
    """Every place down to ``depth`` levels (the first two entries of a list)."""
    if prefix:
        yield prefix
    if len(prefix) < depth and isinstance(node, dict | list):
        for key in list(node) if isinstance(node, dict) else range(min(len(node), 2)):
            yield from _fields(node[key], (*prefix, key), depth)


def _retyped(value):
    """A value of a neighbouring wrong type: the one a careless edit would leave."""
    if isinstance(value, bool):
        return "true"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return 7
    if isinstance(value, list):
        return {}
    if isinstance(value, dict):
        return []
    return 0


def _edited(data, path, op):
    data = json.loads(json.dumps(data))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = _retyped(parent[path[-1]])
    return data


@pytest.mark.parametrize("op", ["delete", "retype"])
@pytest.mark.parametrize("kind", ["manifest", "trace", "latency", "design", "design_certified"])
def test_every_field_deleted_or_retyped_is_refused_or_harmless(kind, op, good, tmp_path):
    if kind == "manifest":
        source = json.loads((good / "model.hapi" / "manifest.json").read_text())
    elif kind == "trace":
        with np.load(good / "trace.npz") as npz:
            arrays = {key: npz[key] for key in npz.files}
        source = json.loads(str(arrays["meta"]))
    else:
        source = json.loads((good / f"{kind}.json").read_text())
    escapes = []
    for n, path in enumerate(_fields(source)):
        text = json.dumps(_edited(source, path, op))
        if kind == "manifest":
            target = shutil.copytree(good / "model.hapi", tmp_path / f"{n}.hapi")
            (target / "manifest.json").write_text(text)
        elif kind == "trace":
            target = tmp_path / f"{n}.npz"
            with open(target, "wb") as f:
                np.savez(f, **{**arrays, "meta": np.array(text)})
        else:
            target = tmp_path / f"{n}.json"
            target.write_text(text)
        try:
            check_loads(kind.split("_")[0], target, good)
        except Exception as err:  # noqa: BLE001 - every escape is reported below
            escapes.append(f"{'/'.join(map(str, path))}: {type(err).__name__}: {err}")
    assert not escapes, escapes
