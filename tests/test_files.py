"""Atomic outputs: nothing half-written, an existing output kept until the new one is complete."""

import json
import stat
import sys

import pytest

from hapi_onnx.errors import HapiError
from hapi_onnx.files import OUTPUT_RECORD, atomic_output


def test_file_appears_only_when_complete_with_the_usual_mode(tmp_path):
    out = tmp_path / "a.bin"
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"data")
        assert not out.exists()
    assert out.read_bytes() == b"data"
    assert stat.S_IMODE(out.stat().st_mode) & 0o044  # readable by group/others under a normal umask
    assert list(tmp_path.iterdir()) == [out]


def test_error_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "a.bin"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert out.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [out]


def test_directory_is_replaced_whole(tmp_path):
    out = tmp_path / "d"
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "old.txt").write_text("old")
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_RECORD, "new.txt"]
    assert json.loads((out / OUTPUT_RECORD).read_text()) == {"kind": "thing", "files": ["new.txt"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_foreign_directory_is_never_replaced(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "important.txt").write_text("keep")
    (out / "manifest.json").write_text("{}")  # a file named like an output's is no proof
    with pytest.raises(HapiError, match="not one this step wrote"):
        with atomic_output(out, directory=True, kind="bundle"):
            raise AssertionError("must not be reached")
    assert sorted(p.name for p in out.iterdir()) == ["important.txt", "manifest.json"]


@pytest.mark.parametrize("change", ["added file", "added folder", "symlink", "other kind", "bad record"])
def test_an_output_a_user_changed_is_never_replaced(tmp_path, change):
    out = tmp_path / "d"
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "a.txt").write_text("ours")
    if change == "added file":
        (out / "NOTES.txt").write_text("mine")
    elif change == "added folder":
        (out / "mine").mkdir()
    elif change == "symlink":
        (out / "a.txt").unlink()
        (out / "a.txt").symlink_to(tmp_path)
    elif change == "other kind":
        (out / OUTPUT_RECORD).write_text(json.dumps({"kind": "other", "files": ["a.txt"]}))
    else:
        (out / OUTPUT_RECORD).write_text('{"kind": "thing", "files": "a.txt"}')
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(HapiError, match="did not write|not one this step wrote"):
        with atomic_output(out, directory=True, kind="thing"):
            raise AssertionError("must not be reached")
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_the_directory_swap_is_one_exchange_on_linux(tmp_path, monkeypatch):
    """``path`` holds the old or the new output at every instant: no rename leaves it missing."""
    from hapi_onnx import files

    out = tmp_path / "d"
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "a.txt").write_text("old")
    calls = []
    monkeypatch.setattr(files.os, "replace", lambda *a: calls.append(a))  # any plain rename would show here
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "a.txt").write_text("new")
    if sys.platform == "linux":
        assert calls == []
    assert (out / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_without_the_exchange_the_old_output_is_swapped_by_two_renames(tmp_path, monkeypatch):
    from hapi_onnx import files

    out = tmp_path / "d"
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "a.txt").write_text("old")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    with atomic_output(out, directory=True, kind="thing") as tmp:
        (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_missing_parent_folders_are_made_and_removed_again_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a" / "b" / "out.json"):
            raise RuntimeError("failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(tmp_path / "a" / "b" / "out.json") as tmp:
        tmp.write_text("{}")
    assert (tmp_path / "a" / "b" / "out.json").read_text() == "{}"


def test_kind_mismatch_and_unwritable_paths_are_user_errors(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(HapiError, match="is not a file"):
        with atomic_output(tmp_path / "dir"):
            pass
    with pytest.raises(HapiError, match="is not a folder"):
        with atomic_output(tmp_path / "file", directory=True):
            pass
    with pytest.raises(HapiError, match="cannot write file"):
        with atomic_output(tmp_path / "file" / "below.json"):
            pass


def test_artifacts_refuse_damaged_contents(tmp_path):
    import numpy as np

    from hapi_onnx.profile.table import TimingStats
    from hapi_onnx.trace import Trace

    good = dict(exit_names=["exit0", "final"], tensors=["t", "logits"], labels=np.array([0, 1]),
                pred=np.array([[0, 1], [1, 1]]), conf=np.full((2, 2), 0.9, np.float32), num_classes=2,
                model_fingerprint="f")
    trace = Trace(**good)
    trace.save(tmp_path / "t.npz")
    assert Trace.load(tmp_path / "t.npz").fingerprint == trace.fingerprint
    for change, message in [
        ({"pred": np.array([[0, 2], [1, 1]])}, "integer classes in"),
        ({"pred": np.array([["a", "b"], ["c", "d"]])}, "integer classes"),
        ({"conf": np.full((2, 2), 1.5, np.float32)}, "probabilities"),
        ({"num_classes": "two"}, "positive int"),
    ]:
        with pytest.raises(HapiError, match=message):
            Trace(**{**good, **change})
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(HapiError, match="not a hapi-onnx trace"):
        Trace.load(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(HapiError, match="not an .npz file"):
        Trace.load(tmp_path / "text.npz")
    stats = dict(n=5, warmup=1, mean_ms=1.0, p50_ms=1.0, p90_ms=1.0, p99_ms=1.0, std_ms=0.1, min_ms=0.9)
    TimingStats(**stats)
    for bad in ({"mean_ms": -1.0}, {"p50_ms": "1"}, {"n": 0}, {"std_ms": float("nan")}):
        with pytest.raises(HapiError, match="timing statistic|n >= 1"):
            TimingStats(**{**stats, **bad})


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_the_next_write_removes_what_a_killed_writer_left_and_keeps_a_live_ones(tmp_path):
    import os

    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / f".out.{dead}.abc.tmp").mkdir()
    (tmp_path / f".out.{dead}.abc.tmp" / "half.npz").write_bytes(b"half")
    (tmp_path / f".out.{dead}.def.tmp").write_bytes(b"half")
    (tmp_path / f".out.{alive}.ghi.tmp").mkdir()  # another process still writing: its business
    (tmp_path / f".other.{dead}.jkl.tmp").write_bytes(b"not ours")
    with atomic_output(tmp_path / "out", directory=True) as tmp:
        (tmp / "new").write_text("new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f".other.{dead}.jkl.tmp", f".out.{alive}.ghi.tmp", "out"]


def test_a_directory_swap_cut_short_by_a_kill_is_undone(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f".out.{dead}.old.tmp"  # killed between moving the old output away and the new in
    old.mkdir()
    (old / "MARK").write_text("previous")
    (old / OUTPUT_RECORD).write_text(json.dumps({"kind": "thing", "files": ["MARK"]}))
    (tmp_path / f".out.{dead}.xyz.tmp").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "out", directory=True, kind="thing"):
            raise RuntimeError("this write fails too")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "MARK").read_text() == "previous"


def test_outputs_may_not_overlap_each_other(tmp_path):
    from hapi_onnx.files import check_outputs_apart

    check_outputs_apart({"-o": tmp_path / "a.json", "--plot": tmp_path / "a.png"}, {"--in": tmp_path / "in"})
    with pytest.raises(HapiError, match="output --plot .* is the same path as the output -o"):
        check_outputs_apart({"--plot": tmp_path / "a.json", "-o": tmp_path / "x" / ".." / "a.json"}, {})
    with pytest.raises(HapiError, match="is a folder holding the output"):
        check_outputs_apart({"-o": tmp_path / "d", "--plot": tmp_path / "d" / "p.png"}, {})
